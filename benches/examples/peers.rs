//! Tokenboard's engine side by side with what the peers run: every call a row in SQLite (WAL,
//! one transaction per 10 000 rows, indexes on time, model and key), aggregated with GROUP BY at
//! query time. Same generated events, same dashboard questions; the answers are checked to agree.
//!
//! cargo run --release -p tokenboard-benches --example peers -- 1000000
//!
//! DuckDB (`pip install duckdb`) and Postgres (`pip install "psycopg[binary]"` and Debian's
//! `postgresql` package) run from Python scripts next to this crate on a CSV of the same events;
//! a peer whose Python package is missing is left out of the table.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tokenboard_benches::{START_MS, Workload};
use tokenboard_engine::{Durability, Engine, EngineOptions, Granularity, Group, LogFilter, Retention, StatusFilter, TimeRange, TopBy};

/// Counts what is really allocated, for the memory row.
#[global_allocator]
static ALLOCATOR: tokenboard_benches::CountingAlloc = tokenboard_benches::CountingAlloc;

const DAY: i64 = 86_400_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Timed runs of a question go on past `TB_PEERS_REPS` until they add up to this much (at most
/// `MAX_RUNS`): a median of three runs of a few microseconds measured this VM's interruptions
/// (the same per-model question took 3 µs and 0.1–1 ms in consecutive runs), not the question.
/// The Python peers (`peers_common.py`) follow the same rule.
const MIN_TIMED: Duration = Duration::from_millis(200);
const MAX_RUNS: usize = 1000;

/// Runs `f` once untimed (a warm-up, as every peer gets), then at least `n` times and until the
/// runs add up to `MIN_TIMED` (at most `MAX_RUNS`); returns the median time and the last answer.
fn time<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    f();
    let mut times = Vec::with_capacity(n);
    let (mut total, mut last) = (Duration::ZERO, None);
    while times.len() < n.max(1) || (total < MIN_TIMED && times.len() < MAX_RUNS) {
        let t = Instant::now();
        last = Some(f());
        let took = t.elapsed();
        times.push(took);
        total += took;
    }
    (median(times), last.expect("at least one run"))
}

/// Flushes dirty pages (gigabytes after the loads) and lets the writeback finish, so it does not
/// compete with the timed queries on this 2-core machine; every engine gets the same.
fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(1));
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `--cold ENGINE_DIR SQLITE_FILE FROM TO`: opens each store, answers the count of events in
/// [FROM, TO) and prints the two times (s) and the two counts.
fn cold(args: &[String]) {
    let (from, to): (i64, i64) = (args[3].parse().expect("from"), args[4].parse().expect("to"));
    let t = Instant::now();
    let mut o = EngineOptions::new(&args[1]);
    o.retention = Retention::none();
    o.retention_interval_ms = None;
    o.segment_age_max_ms = 365 * DAY;
    let (engine, report) = Engine::open(o).expect("open engine");
    let e = engine.summary(TimeRange::new(from, to)).agg.calls;
    let te = t.elapsed();
    assert!(report.restored, "the state saved at close was not used");
    let t = Instant::now();
    let db = Connection::open(&args[2]).expect("open sqlite");
    let s: i64 = db.query_row("SELECT count(*) FROM calls WHERE ts >= ? AND ts < ?", params![from, to], |r| r.get(0)).expect("count");
    let ts = t.elapsed();
    println!("{} {} {e} {s}", te.as_secs_f64(), ts.as_secs_f64());
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--cold") {
        return cold(&argv[1..]);
    }
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let reps: usize = std::env::var("TB_PEERS_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let tmp = tempfile::tempdir().expect("temp dir");
    let engine_dir = tmp.path().join("tokenboard");
    let sqlite_path = tmp.path().join("calls.db");

    let engine_opts = || {
        let mut o = EngineOptions::new(&engine_dir);
        o.durability = Durability::Interval { every_ms: 200 };
        o.retention = Retention::none();
        o.retention_interval_ms = None;
        o.segment_age_max_ms = 365 * DAY;
        o
    };
    let allocated_before = tokenboard_benches::allocated_bytes();
    let (engine, _) = Engine::open(engine_opts()).expect("open engine");
    let db = Connection::open(&sqlite_path).expect("open sqlite");
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE calls (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, model TEXT NOT NULL, key TEXT NOT NULL,
            credential TEXT NOT NULL, provider TEXT NOT NULL, status INTEGER NOT NULL, success INTEGER NOT NULL,
            input INTEGER NOT NULL, cache_read INTEGER NOT NULL, output INTEGER NOT NULL, reasoning INTEGER NOT NULL,
            latency_ms INTEGER NOT NULL, ttft_ms INTEGER, stream INTEGER NOT NULL);
         CREATE INDEX calls_ts ON calls(ts); CREATE INDEX calls_model ON calls(model); CREATE INDEX calls_key ON calls(key);",
    )
    .expect("schema");

    // Ingest: the same batches into each, timed separately. The CSV (untimed) is DuckDB's input.
    let csv_path = tmp.path().join("calls.csv");
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path).expect("csv"));
    writeln!(csv, "seq,ts,model,key,credential,provider,status,success,input,cache_read,output,reasoning,latency_ms,ttft_ms,stream").expect("csv");
    let mut w = Workload::new(42, n);
    let (mut t_engine, mut t_sqlite) = (Duration::ZERO, Duration::ZERO);
    let mut engine_cpu_ns = 0;
    let mut seq = 0i64;
    let mut left = n;
    let mut db = db;
    while left > 0 {
        let k = left.min(10_000) as usize;
        let batch = w.batch(k);
        let (t, cpu) = (Instant::now(), tokenboard_benches::thread_cpu_ns());
        for c in batch.chunks(1000) {
            engine.append(c).expect("append");
        }
        t_engine += t.elapsed();
        engine_cpu_ns += tokenboard_benches::thread_cpu_ns() - cpu;
        let t = Instant::now();
        let tx = db.transaction().expect("tx");
        {
            let mut ins = tx.prepare_cached("INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)").expect("prepare");
            for e in &batch {
                seq += 1;
                ins.execute(params![
                    seq,
                    e.ts_ms,
                    e.dim(tokenboard_engine::Dim::Model),
                    e.dim(tokenboard_engine::Dim::Key),
                    e.dim(tokenboard_engine::Dim::Credential),
                    e.dim(tokenboard_engine::Dim::Provider),
                    e.status,
                    e.success,
                    e.tokens.input_uncached,
                    e.tokens.cache_read,
                    e.tokens.output,
                    e.tokens.reasoning,
                    e.latency_ms,
                    e.ttft_ms,
                    e.stream
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
        t_sqlite += t.elapsed();
        let first_seq = seq - batch.len() as i64;
        for (i, e) in batch.iter().enumerate() {
            use tokenboard_engine::Dim;
            writeln!(
                csv,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                first_seq + i as i64 + 1,
                e.ts_ms,
                e.dim(Dim::Model),
                e.dim(Dim::Key),
                e.dim(Dim::Credential),
                e.dim(Dim::Provider),
                e.status,
                u8::from(e.success),
                e.tokens.input_uncached,
                e.tokens.cache_read,
                e.tokens.output,
                e.tokens.reasoning,
                e.latency_ms,
                e.ttft_ms.map(|t| t.to_string()).unwrap_or_default(),
                u8::from(e.stream)
            )
            .expect("csv");
        }
        left -= k as u64;
    }
    engine.sync().expect("sync");
    csv.flush().expect("csv");
    drop(csv);
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;").expect("checkpoint");
    settle();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();

    let mut rows: Vec<(String, Duration, Duration)> = Vec::new();
    let all = TimeRange::new(START_MS - DAY, START_MS + 31 * DAY);
    let last7 = TimeRange::new(START_MS + 23 * DAY, START_MS + 30 * DAY);
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().expect("zone");

    // 1. Totals for the last 7 days.
    let (te, e) = time(reps, || {
        let s = engine.summary(last7);
        (s.agg.calls, s.agg.total_tokens())
    });
    let (ts, s) = time(reps, || {
        db.query_row(
            "SELECT count(*), sum(input + cache_read + output + reasoning) FROM calls WHERE ts >= ? AND ts < ?",
            params![last7.from_ms, last7.to_ms],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .expect("totals")
    });
    assert_eq!(e, s, "totals agree");
    let totals_e = e;
    rows.push(("totals, last 7 days".into(), te, ts));

    // 2. Per-model stats, all data.
    let (te, e) = time(reps, || {
        let b = engine.breakdown(Group::Model, all);
        let mut m: Vec<(String, u64, u64, u64)> = engine.with_interner(|i| {
            b.iter().map(|(k, a)| (i.resolve(tokenboard_engine::Sym(*k)).to_string(), a.calls, a.total_tokens(), a.errors)).collect()
        });
        m.sort();
        m
    });
    let (ts, s) = time(reps, || {
        let mut st = db.prepare_cached("SELECT model, count(*), sum(input + cache_read + output + reasoning), sum(1 - success) FROM calls GROUP BY model ORDER BY model").expect("prepare");
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as u64)))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows")
    });
    assert_eq!(e, s, "per-model stats agree");
    let models_e = e;
    rows.push(("per-model stats, all data".into(), te, ts));

    // 3. Top 10 keys by tokens, all data.
    let (te, e) = time(reps, || {
        let (top, _) = engine.top(Group::Key, all, 10, TopBy::Tokens);
        engine.with_interner(|i| top.iter().map(|(k, a)| (i.resolve(tokenboard_engine::Sym(*k)).to_string(), a.total_tokens())).collect::<Vec<_>>())
    });
    let (ts, s) = time(reps, || {
        let mut st = db.prepare_cached("SELECT key, sum(input + cache_read + output + reasoning) AS t FROM calls GROUP BY key ORDER BY t DESC LIMIT 10").expect("prepare");
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))).expect("query").collect::<Result<Vec<_>, _>>().expect("rows")
    });
    assert_eq!(e.iter().map(|x| x.1).collect::<Vec<_>>(), s.iter().map(|x| x.1).collect::<Vec<_>>(), "top keys agree");
    let top_e: Vec<u64> = e.iter().map(|x| x.1).collect();
    rows.push(("top 10 keys by tokens".into(), te, ts));

    // 4. 30-day hourly trend in Asia/Shanghai (UTC+8, no daylight saving: a fixed offset in SQL).
    let trend_range = TimeRange::new(START_MS - 8 * 3_600_000, START_MS + 30 * DAY - 8 * 3_600_000);
    let (te, e) = time(reps, || {
        engine.trend(trend_range, Granularity::Hour, tz).expect("trend").iter().map(|b| b.agg.calls).collect::<Vec<_>>()
    });
    let (ts, s) = time(reps, || {
        let mut st = db
            .prepare_cached("SELECT (ts + 28800000) / 3600000 AS h, count(*) FROM calls WHERE ts >= ? AND ts < ? GROUP BY h ORDER BY h")
            .expect("prepare");
        let got: HashMap<i64, u64> = st
            .query_map(params![trend_range.from_ms, trend_range.to_ms], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let first = (trend_range.from_ms + 28_800_000) / 3_600_000;
        (0..720).map(|h| got.get(&(first + h)).copied().unwrap_or(0)).collect::<Vec<_>>()
    });
    assert_eq!(e, s, "hourly trends agree");
    let trend_e = e;
    rows.push(("30-day hourly trend, Asia/Shanghai".into(), te, ts));

    // 5. The newest 100 failed calls of one model.
    let model = Workload::new(42, n).model_name(3).to_string();
    let sym = engine.lookup(&model).expect("model seen");
    let filter = LogFilter { model: Some(sym), status: Some(StatusFilter::Errors), ..LogFilter::default() };
    let (te, e) = time(reps, || engine.logs(&filter, None, 100).events.iter().map(|e| e.seq as i64).collect::<Vec<_>>());
    let (ts, s) = time(reps, || {
        let mut st = db.prepare_cached("SELECT seq FROM calls WHERE model = ? AND success = 0 ORDER BY seq DESC LIMIT 100").expect("prepare");
        st.query_map(params![model], |r| r.get::<_, i64>(0)).expect("query").collect::<Result<Vec<_>, _>>().expect("rows")
    });
    assert_eq!(e, s, "error pages agree");
    let errors_e = e;
    rows.push(("newest 100 errors of one model".into(), te, ts));

    let engine_heap = engine.status().heap_bytes;
    // What the allocator holds since the engine was opened: the engine's, and a few kB of this
    // program's (SQLite allocates through its own malloc, not counted).
    let engine_allocated = tokenboard_benches::allocated_bytes().saturating_sub(allocated_before);
    let engine_bytes = engine.status().bytes_on_disk;
    engine.close().expect("close");
    drop(engine);
    drop(db);
    let sqlite_bytes = ["calls.db", "calls.db-wal", "calls.db-shm"].iter().filter_map(|f| std::fs::metadata(tmp.path().join(f)).ok()).map(|m| m.len()).sum::<u64>();

    // 6. Cold start: a new process opens the store and answers the first totals query, as after
    //    a restart (page cache warm; timed inside that process).
    let sqlite_high = unsafe { rusqlite::ffi::sqlite3_memory_highwater(0) };
    settle();
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--cold".as_ref(), engine_dir.as_os_str(), sqlite_path.as_os_str(), all.from_ms.to_string().as_ref(), all.to_ms.to_string().as_ref()])
        .output()
        .expect("run the cold start");
    assert!(out.status.success(), "cold start failed: {}", String::from_utf8_lossy(&out.stderr));
    let cold: Vec<f64> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(|v| v.parse().expect("number")).collect();
    assert_eq!((cold[2] as u64, cold[3] as u64), (n, n), "cold counts agree");
    rows.push(("cold start: open + first totals (new process)".into(), Duration::from_secs_f64(cold[0]), Duration::from_secs_f64(cold[1])));

    // The peers driven from Python read the same CSV; their answers must be the same.
    let answers = Answers { totals: totals_e, models: models_e, top: top_e, trend: trend_e, errors: errors_e, n };
    let args = PeerArgs { csv: &csv_path, dir: tmp.path(), reps, last7, trend: trend_range, model: &model };
    let peers: Vec<Peer> = [("DuckDB", "duckdb", "peers_duckdb.py", "calls.duckdb"), ("Postgres", "psycopg", "peers_postgres.py", "postgres")]
        .into_iter()
        .filter_map(|(name, module, script, out)| {
            let v = python_peer(module, script, &args, out)?;
            let times = answers.check(name, &v, trend_range);
            let disk = v["disk_bytes"].as_u64().or_else(|| std::fs::metadata(tmp.path().join(out)).ok().map(|m| m.len()));
            Some(Peer { name, version: v["version"].as_str().unwrap_or("?").to_string(), load: Duration::from_secs_f64(v["load_s"].as_f64().expect("load")), times, disk })
        })
        .collect();

    let names: Vec<String> = peers.iter().map(|p| format!("{} {}", p.name, p.version)).collect();
    println!("\nTokenboard vs SQLite {}{}{}, {n} events, median of {reps} runs, answers checked equal\n", rusqlite::version(), if names.is_empty() { "" } else { ", " }, names.join(", "));
    if peers.len() < 2 {
        println!("(a peer is left out when python3 lacks its package: pip install duckdb 'psycopg[binary]'; Postgres also needs apt-get install postgresql)\n");
    }
    let mut head = "| question | Tokenboard | SQLite | ratio |".to_string();
    let mut rule = "|---|---|---|---|".to_string();
    for p in &peers {
        head += &format!(" {} | ratio |", p.name);
        rule += "---|---|";
    }
    println!("{head}\n{rule}");
    let ratio = |peer: f64, ours: f64| {
        let r = peer / ours.max(1e-9);
        if r >= 10.0 { format!("{r:.0}×") } else { format!("{r:.2}×") }
    };
    let mut line = format!("| ingest | {:.2} M events/s | {:.3} M events/s | {} |", rate(t_engine) / 1e6, rate(t_sqlite) / 1e6, ratio(t_sqlite.as_secs_f64(), t_engine.as_secs_f64()));
    for p in &peers {
        line += &format!(" {:.3} M events/s | {} |", rate(p.load) / 1e6, ratio(p.load.as_secs_f64(), t_engine.as_secs_f64()));
    }
    println!("{line}");
    for (i, (name, te, ts)) in rows.iter().enumerate() {
        let mut line = format!("| {name} | {} | {} | {} |", fmt(*te), fmt(*ts), ratio(ts.as_secs_f64(), te.as_secs_f64()));
        for p in &peers {
            line += &format!(" {} | {} |", fmt(p.times[i]), ratio(p.times[i].as_secs_f64(), te.as_secs_f64()));
        }
        println!("{line}");
    }
    let mut line = format!("| disk per event | {:.1} B | {:.1} B | |", engine_bytes as f64 / n as f64, sqlite_bytes as f64 / n as f64);
    for p in &peers {
        line += &format!(" {} | |", p.disk.map(|b| format!("{:.1} B", b as f64 / n as f64)).unwrap_or_default());
    }
    println!("{line}");
    println!(
        "| memory | {:.1} MB heap allocated ({:.1} MB by the engine's estimate) | {:.1} MB SQLite high water | |{} ",
        engine_allocated as f64 / 1e6,
        engine_heap as f64 / 1e6,
        sqlite_high as f64 / 1e6,
        " | |".repeat(peers.len())
    );
    println!(
        "\nTokenboard's ingest: {:.0} ns per event, of which the appending thread ran {:.0} ns (the rest it waited: for the kernel, or for the fold thread)",
        t_engine.as_nanos() as f64 / n as f64,
        engine_cpu_ns as f64 / n as f64
    );
}

/// The engine's answers, which every peer must give too.
struct Answers {
    totals: (u64, u64),
    models: Vec<(String, u64, u64, u64)>,
    top: Vec<u64>,
    trend: Vec<u64>,
    errors: Vec<i64>,
    n: u64,
}

impl Answers {
    /// Asserts a peer's answers (JSON from its script) equal these; returns its times in the
    /// order of the table's rows.
    fn check(&self, name: &str, d: &serde_json::Value, trend_range: TimeRange) -> Vec<Duration> {
        let q = |query: &str| &d["queries"][query];
        let secs = |query: &str| Duration::from_secs_f64(q(query)["median_s"].as_f64().expect("time"));
        let u = |v: &serde_json::Value| v.as_u64().expect("number");
        let t = &q("totals")["rows"][0];
        assert_eq!((u(&t[0]), u(&t[1])), self.totals, "{name} totals agree");
        let m: Vec<(String, u64, u64, u64)> =
            q("models")["rows"].as_array().expect("rows").iter().map(|r| (r[0].as_str().expect("model").to_string(), u(&r[1]), u(&r[2]), u(&r[3]))).collect();
        assert_eq!(m, self.models, "{name} per-model stats agree");
        let k: Vec<u64> = q("top_keys")["rows"].as_array().expect("rows").iter().map(|r| u(&r[1])).collect();
        assert_eq!(k, self.top, "{name} top keys agree");
        let hours: HashMap<i64, u64> = q("trend")["rows"].as_array().expect("rows").iter().map(|r| (r[0].as_i64().expect("hour"), u(&r[1]))).collect();
        let first = (trend_range.from_ms + 28_800_000) / 3_600_000;
        assert_eq!((0..720).map(|h| hours.get(&(first + h)).copied().unwrap_or(0)).collect::<Vec<_>>(), self.trend, "{name} trend agrees");
        let errs: Vec<i64> = q("errors")["rows"].as_array().expect("rows").iter().map(|r| r[0].as_i64().expect("seq")).collect();
        assert_eq!(errs, self.errors, "{name} error page agrees");
        assert_eq!(u(&d["cold_count"]), self.n, "{name} cold count agrees");
        vec![secs("totals"), secs("models"), secs("top_keys"), secs("trend"), secs("errors"), Duration::from_secs_f64(d["cold_s"].as_f64().expect("cold"))]
    }
}

struct PeerArgs<'a> {
    csv: &'a std::path::Path,
    dir: &'a std::path::Path,
    reps: usize,
    last7: TimeRange,
    trend: TimeRange,
    model: &'a str,
}

struct Peer {
    name: &'static str,
    version: String,
    load: Duration,
    times: Vec<Duration>,
    disk: Option<u64>,
}

/// Runs `benches/SCRIPT` on the CSV (its output file or directory `out` under the temp dir);
/// `None` when python3 or its `module` is missing.
fn python_peer(module: &str, script: &str, a: &PeerArgs, out: &str) -> Option<serde_json::Value> {
    let ok = std::process::Command::new("python3").args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success());
    if !ok {
        return None;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let (l, t) = (a.last7, a.trend);
    let res = std::process::Command::new("python3")
        .arg(&script)
        .arg(a.csv)
        .arg(a.dir.join(out))
        .args([a.reps.to_string(), l.from_ms.to_string(), l.to_ms.to_string(), t.from_ms.to_string(), t.to_ms.to_string(), a.model.to_string()])
        .output()
        .expect("run python3");
    assert!(res.status.success(), "{} failed: {}", script.display(), String::from_utf8_lossy(&res.stderr));
    Some(serde_json::from_slice(&res.stdout).expect("JSON from the peer script"))
}
