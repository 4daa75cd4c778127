//! The server's log: one line per event on stderr, `<RFC 3339 UTC> <LEVEL> <message>`.
//! Nothing secret is ever passed here: keys and tokens appear masked, if at all.

fn line(level: &str, msg: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    eprintln!("{now} {level} {msg}");
}

pub fn info(msg: &str) {
    line("INFO", msg);
}

pub fn warn(msg: &str) {
    line("WARN", msg);
}

pub fn error(msg: &str) {
    line("ERROR", msg);
}
