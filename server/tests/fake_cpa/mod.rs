//! A fake CLIProxyAPI usage queue that follows PROTOCOL.md §3–§4 to the byte: RESP `AUTH`,
//! `LPOP`/`RPOP usage [N]`, `SUBSCRIBE usage` with the `{"support_refresh":true}` first push,
//! subscribed-mode `PING`/`UNSUBSCRIBE`/`QUIT`, the brute-force ban, and HTTP
//! `GET /v0/management/usage-queue` on the same port.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

struct Sub {
    id: u64,
    stream: TcpStream,
    channel: String,
}

#[derive(Default)]
pub struct State {
    pub key: String,
    pub queue: VecDeque<String>,
    subs: Vec<Sub>,
    next_sub: u64,
    failures: HashMap<IpAddr, u32>,
    /// When each refused AUTH (or pre-AUTH command) happened.
    pub failed_auths: Vec<Instant>,
    /// Published right after the next subscription's first push (for the sample session).
    pub on_subscribe: Vec<String>,
    pub subscriptions: u64,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn push(channel: &str, payload: &str) -> Vec<u8> {
    let mut out = b"*3\r\n".to_vec();
    bulk(&mut out, b"message");
    bulk(&mut out, channel.as_bytes());
    bulk(&mut out, payload.as_bytes());
    out
}

impl Fake {
    pub fn start(key: &str) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { key: key.to_string(), ..State::default() }));
        let fake = Fake { addr, state };
        let f = fake.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let f = f.clone();
                std::thread::spawn(move || f.serve(conn));
            }
        });
        fake
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Publishes like CPA: to every subscriber if there is one, else into the queue.
    pub fn publish(&self, payload: &str) {
        let mut st = self.state.lock().unwrap();
        if st.subs.iter().any(|s| s.channel.eq_ignore_ascii_case("usage")) {
            let bytes = |c: &str| push(c, payload);
            st.subs.retain_mut(|s| s.stream.write_all(&bytes(&s.channel)).is_ok());
        } else {
            st.queue.push_back(payload.to_string());
        }
    }

    /// Drops every subscriber as CPA does when one falls behind: the stream just ends.
    pub fn drop_subscribers(&self) {
        let mut st = self.state.lock().unwrap();
        for s in st.subs.drain(..) {
            let _ = s.stream.shutdown(Shutdown::Both);
        }
    }

    pub fn subscribers(&self) -> usize {
        self.state.lock().unwrap().subs.len()
    }

    fn serve(&self, conn: TcpStream) {
        let peer = conn.peer_addr().unwrap().ip();
        let mut first = [0u8; 1];
        if conn.peek(&mut first).unwrap_or(0) == 0 {
            return;
        }
        if b"*$+-:".contains(&first[0]) {
            self.serve_resp(conn, peer);
        } else {
            self.serve_http(conn, peer);
        }
    }

    /// Records a failed login; returns the ban message once the 5th failure is reached.
    fn fail(&self, peer: IpAddr) {
        let mut st = self.state.lock().unwrap();
        *st.failures.entry(peer).or_default() += 1;
        st.failed_auths.push(Instant::now());
    }

    fn banned(&self, peer: IpAddr) -> bool {
        self.state.lock().unwrap().failures.get(&peer).copied().unwrap_or(0) >= 5
    }

    fn serve_resp(&self, conn: TcpStream, peer: IpAddr) {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut w = conn;
        let mut authed = false;
        loop {
            let cmd = match read_command(&mut r) {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(()) => {
                    let _ = w.write_all(b"-ERR protocol error\r\n");
                    return;
                }
            };
            if cmd.is_empty() {
                let _ = w.write_all(b"-ERR empty command\r\n");
                continue;
            }
            let name = String::from_utf8_lossy(&cmd[0]).to_lowercase();
            let args: Vec<String> = cmd[1..].iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            if !authed {
                if self.banned(peer) {
                    let _ = w.write_all(b"-ERR IP banned due to too many failed attempts. Try again in 30m0s\r\n");
                    continue;
                }
                let reply: &[u8] = if name != "auth" {
                    self.fail(peer);
                    b"-NOAUTH Authentication required.\r\n"
                } else if args.is_empty() || args.len() > 2 {
                    self.fail(peer);
                    b"-ERR wrong number of arguments for 'auth' command\r\n"
                } else if args.last().unwrap().is_empty() {
                    self.fail(peer);
                    b"-ERR missing management key\r\n"
                } else if *args.last().unwrap() != self.state.lock().unwrap().key {
                    self.fail(peer);
                    b"-ERR invalid management key\r\n"
                } else {
                    authed = true;
                    self.state.lock().unwrap().failures.remove(&peer);
                    b"+OK\r\n"
                };
                if w.write_all(reply).is_err() {
                    return;
                }
                continue;
            }
            let out: Vec<u8> = match name.as_str() {
                "lpop" | "rpop" => {
                    if args.is_empty() || args.len() > 2 {
                        format!("-ERR wrong number of arguments for '{name}' command\r\n").into_bytes()
                    } else if !args[0].trim().eq_ignore_ascii_case("usage") {
                        format!("-ERR unsupported channel '{}'\r\n", args[0].trim()).into_bytes()
                    } else if args.len() == 1 {
                        match self.state.lock().unwrap().queue.pop_front() {
                            Some(p) => {
                                let mut o = Vec::new();
                                bulk(&mut o, p.as_bytes());
                                o
                            }
                            None => b"$-1\r\n".to_vec(),
                        }
                    } else {
                        match args[1].parse::<i64>() {
                            Ok(n) if n > 0 => {
                                let mut st = self.state.lock().unwrap();
                                let k = (n as usize).min(st.queue.len());
                                let items: Vec<String> = st.queue.drain(..k).collect();
                                let mut o = format!("*{}\r\n", items.len()).into_bytes();
                                for p in items {
                                    bulk(&mut o, p.as_bytes());
                                }
                                o
                            }
                            _ => b"-ERR value is not an integer or out of range\r\n".to_vec(),
                        }
                    }
                }
                "subscribe" => {
                    if args.len() != 1 {
                        b"-ERR wrong number of arguments for 'subscribe' command\r\n".to_vec()
                    } else {
                        let channel = args[0].trim().to_string();
                        let lower = channel.to_lowercase();
                        if lower != "usage" && lower != "errors" {
                            format!("-ERR unsupported channel '{channel}'\r\n").into_bytes()
                        } else {
                            self.subscribed(&mut r, w, channel);
                            return;
                        }
                    }
                }
                other => format!("-ERR unknown command '{other}'\r\n").into_bytes(),
            };
            if w.write_all(&out).is_err() {
                return;
            }
        }
    }

    fn subscribed(&self, r: &mut BufReader<TcpStream>, mut w: TcpStream, channel: String) {
        let mut ack = b"*3\r\n".to_vec();
        bulk(&mut ack, b"subscribe");
        bulk(&mut ack, channel.as_bytes());
        ack.extend_from_slice(b":1\r\n");
        let id;
        {
            let mut st = self.state.lock().unwrap();
            if channel.eq_ignore_ascii_case("usage") {
                ack.extend_from_slice(&push(&channel, "{\"support_refresh\":true}"));
            }
            if w.write_all(&ack).is_err() {
                return;
            }
            id = st.next_sub;
            st.next_sub += 1;
            st.subscriptions += 1;
            st.subs.push(Sub { id, stream: w.try_clone().unwrap(), channel: channel.clone() });
        }
        let pending: Vec<String> = std::mem::take(&mut self.state.lock().unwrap().on_subscribe);
        for p in pending {
            self.publish(&p);
        }
        let unregister = |f: &Fake| f.state.lock().unwrap().subs.retain(|s| s.id != id);
        loop {
            let cmd = match read_command(r) {
                Ok(Some(c)) if !c.is_empty() => c,
                Ok(Some(_)) => continue,
                Ok(None) => return unregister(self),
                Err(()) => {
                    let _ = self.write_locked(&mut w, b"-ERR protocol error\r\n");
                    return unregister(self);
                }
            };
            let name = String::from_utf8_lossy(&cmd[0]).to_lowercase();
            match name.as_str() {
                "ping" => {
                    let mut o = b"*2\r\n".to_vec();
                    bulk(&mut o, b"pong");
                    match cmd.get(1) {
                        Some(m) => bulk(&mut o, m),
                        None => o.extend_from_slice(b"$-1\r\n"),
                    }
                    self.write_locked(&mut w, &o);
                }
                "unsubscribe" => {
                    unregister(self);
                    let mut o = b"*3\r\n".to_vec();
                    bulk(&mut o, b"unsubscribe");
                    bulk(&mut o, channel.as_bytes());
                    o.extend_from_slice(b":0\r\n");
                    let _ = w.write_all(&o);
                    let _ = w.shutdown(Shutdown::Both);
                    return;
                }
                "quit" => {
                    unregister(self);
                    let _ = w.write_all(b"+OK\r\n");
                    let _ = w.shutdown(Shutdown::Both);
                    return;
                }
                other => {
                    self.write_locked(&mut w, format!("-ERR unknown command '{other}'\r\n").as_bytes());
                }
            }
        }
    }

    /// Writes a reply while no push is being written on the same socket.
    fn write_locked(&self, w: &mut TcpStream, b: &[u8]) -> bool {
        let _st = self.state.lock().unwrap();
        w.write_all(b).is_ok()
    }

    fn serve_http(&self, conn: TcpStream, peer: IpAddr) {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut w = conn;
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut auth = None;
        let mut xkey = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "authorization" => auth = Some(v.trim().to_string()),
                    "x-management-key" => xkey = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let reply = |w: &mut TcpStream, status: &str, body: &str| {
            let _ = write!(w, "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        };
        let Some(query) = target.strip_prefix("/v0/management/usage-queue") else {
            return reply(&mut w, "404 Not Found", "");
        };
        let key = match auth.filter(|a| !a.is_empty()) {
            Some(a) => match a.split_once(' ') {
                Some((scheme, v)) if scheme.eq_ignore_ascii_case("bearer") => v.trim().to_string(),
                _ => a,
            },
            None => xkey.unwrap_or_default(),
        };
        if self.banned(peer) {
            return reply(&mut w, "403 Forbidden", r#"{"error":"IP banned due to too many failed attempts. Try again in 30m0s"}"#);
        }
        if key.is_empty() {
            self.fail(peer);
            return reply(&mut w, "401 Unauthorized", r#"{"error":"missing management key"}"#);
        }
        if key != self.state.lock().unwrap().key {
            self.fail(peer);
            return reply(&mut w, "401 Unauthorized", r#"{"error":"invalid management key"}"#);
        }
        let count = query.trim_start_matches('?').split('&').find_map(|kv| kv.strip_prefix("count=")).unwrap_or("1");
        let Some(n) = count.trim().parse::<i64>().ok().filter(|n| *n >= 1) else {
            return reply(&mut w, "400 Bad Request", r#"{"error":"count must be a positive integer"}"#);
        };
        let items: Vec<String> = {
            let mut st = self.state.lock().unwrap();
            let k = (n as usize).min(st.queue.len());
            st.queue.drain(..k).collect()
        };
        reply(&mut w, "200 OK", &format!("[{}]", items.join(",")));
    }
}

/// Reads one RESP2 command (an array of bulk strings, simple strings or integers).
/// `Ok(None)` at a clean end of stream; `Err` for a malformed frame.
fn read_command(r: &mut BufReader<TcpStream>) -> Result<Option<Vec<Vec<u8>>>, ()> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) | Err(_) => return Ok(None),
        Ok(_) => {}
    }
    let line = line.strip_suffix("\r\n").ok_or(())?;
    let n: usize = line.strip_prefix('*').ok_or(())?.parse().map_err(|_| ())?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let mut l = String::new();
        r.read_line(&mut l).map_err(|_| ())?;
        let l = l.strip_suffix("\r\n").ok_or(())?;
        match l.as_bytes().first() {
            Some(b'$') => {
                let len: usize = l[1..].parse().map_err(|_| ())?;
                let mut buf = vec![0u8; len + 2];
                r.read_exact(&mut buf).map_err(|_| ())?;
                buf.truncate(len);
                args.push(buf);
            }
            Some(b'+') | Some(b':') => args.push(l.as_bytes()[1..].to_vec()),
            _ => return Err(()),
        }
    }
    Ok(Some(args))
}
