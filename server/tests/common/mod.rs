//! Black-box harness: starts the real `tokenboard` binary on a free port with its own data
//! directory, talks HTTP to it, and can SIGKILL or stop it.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN: &str = "tb_blackbox_admin_token_0123456789abcdef";

pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
    pub child: Option<Child>,
    pub env: Vec<(String, String)>,
    pub config: Option<PathBuf>,
    agent: ureq::Agent,
    run: u32,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tokenboard")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// Starts a server on `dir` with extra environment variables and an optional YAML config.
    pub fn start(dir: &Path, env: &[(&str, &str)], config_yaml: Option<&str>) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let config = config_yaml.map(|y| {
            let p = dir.join("config.yaml");
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&p, y).unwrap();
            p
        });
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into();
        let mut s = Server {
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            config,
            agent,
            run: 0,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        self.run += 1;
        let out = std::fs::File::create(self.dir.join(format!("stdout.{}.txt", self.run))).unwrap();
        let err = std::fs::File::create(self.dir.join(format!("stderr.{}.txt", self.run))).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .env("TOKENBOARD_DATA_DIR", self.dir.join("data"))
            .env("CONSOLE_PORT", self.port.to_string())
            .env("TOKENBOARD_BIND", "127.0.0.1")
            .env("TOKENBOARD_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if let Some(c) = &self.config {
            cmd.arg("-config").arg(c);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start tokenboard"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.agent.get(&self.url("/healthz")).call()
                && r.status() == 200
            {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tokenboard exited with {st} at start: {}", self.logs());
            }
            assert!(Instant::now() < deadline, "tokenboard did not answer /healthz: {}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything the server printed, in every run so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for run in 1..=self.run {
            for f in ["stdout", "stderr"] {
                if let Ok(t) = std::fs::read_to_string(self.dir.join(format!("{f}.{run}.txt"))) {
                    all.push_str(&t);
                }
            }
        }
        all
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            c.wait().unwrap();
        }
    }

    /// SIGKILL without waiting (from another thread); `kill9` or `start_again` reaps it.
    pub fn sigkill(&self) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let st = c.wait().unwrap();
            assert!(st.success(), "tokenboard exited with {st}: {}", self.logs());
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// One request; a transport error is retried once on a fresh connection (a server closes a
    /// kept-alive connection after refusing a request whose body it did not read, and the
    /// client's pool may not have noticed yet). Status 0 means no answer.
    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<(&[u8], &str)>, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let first = self.request_once(method, path, token, body, headers);
        if first.0 != 0 {
            return first;
        }
        let mut h = headers.to_vec();
        h.push(("Connection", "close"));
        self.request_once(method, path, token, body, &h)
    }

    fn request_once(&self, method: &str, path: &str, token: Option<&str>, body: Option<(&[u8], &str)>, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let url = self.url(path);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = match body {
            Some((b, ct)) => self.agent.run(req.header("Content-Type", ct).body(b.to_vec()).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        };
        match resp {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let mut buf = Vec::new();
                r.body_mut().as_reader().read_to_end(&mut buf).unwrap();
                (status, buf)
            }
            // The server may close a connection whose body it refused (413).
            Err(e) => (0, e.to_string().into_bytes()),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (s, b) = self.request("GET", path, Some(ADMIN), None, &[]);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// GET that must succeed; returns `data`.
    pub fn data(&self, path: &str) -> Value {
        let (s, v) = self.get(path);
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(v["code"], 0, "{path}: {v}");
        v["data"].clone()
    }

    /// GET of a JSON document that has no envelope.
    pub fn data_raw_json(&self, path: &str) -> Value {
        serde_json::from_slice(&self.raw(path)).unwrap()
    }

    pub fn raw(&self, path: &str) -> Vec<u8> {
        let (s, b) = self.request("GET", path, Some(ADMIN), None, &[]);
        assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
        b
    }

    pub fn ingest(&self, body: &[u8], content_type: &str) -> (u16, Value) {
        let (s, b) = self.request("POST", "/api/ingest/events", Some(ADMIN), Some((body, content_type)), &[]);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    pub fn post_json(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let (s, b) = self.request("POST", path, Some(token), Some((body.to_string().as_bytes(), "application/json")), &[]);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A deterministic generator for test events (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A Tokenboard event as the tests send it, with the fields the reference folds over.
#[derive(Clone, Debug)]
pub struct TestEvent {
    pub id: String,
    pub ts_ms: i64,
    pub model: String,
    pub key: String,
    pub status: u16,
    pub tokens: [u64; 6],
    pub latency: u32,
}

impl TestEvent {
    pub fn total(&self) -> u64 {
        self.tokens.iter().sum()
    }

    pub fn success(&self) -> bool {
        self.status < 400
    }

    pub fn json(&self) -> Value {
        serde_json::json!({
            "event_id": self.id,
            "ts": if self.ts_ms % 2 == 0 { Value::from(self.ts_ms) } else { Value::from(rfc3339(self.ts_ms)) },
            "method": "POST",
            "endpoint": "/v1/chat/completions",
            "model": self.model,
            "provider": "prov",
            "key": self.key,
            "status": self.status,
            "tokens": {
                "input_uncached": self.tokens[0], "cache_read": self.tokens[1], "cache_write": self.tokens[2],
                "output": self.tokens[3], "reasoning": self.tokens[4], "unclassified": self.tokens[5],
            },
            "latency_ms": self.latency,
        })
    }
}

/// RFC 3339 with a +05:30 offset, to exercise offset parsing.
pub fn rfc3339(ms: i64) -> String {
    use chrono::TimeZone;
    let off = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    off.timestamp_millis_opt(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

pub fn test_events(seed: u64, n: usize, start_ms: i64, span_ms: i64) -> Vec<TestEvent> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let status = match rng.below(20) {
                0 => 429,
                1 => 500,
                2 => 401,
                _ => 200,
            };
            TestEvent {
                id: format!("ev-{seed}-{i}"),
                ts_ms: start_ms + rng.below(span_ms as u64) as i64,
                model: format!("model-{}", rng.below(7)),
                key: format!("key-{}", rng.below(13)),
                status,
                tokens: [rng.below(5000), rng.below(3000), rng.below(100), rng.below(2000), rng.below(500), rng.below(3) * rng.below(50)],
                latency: rng.below(20_000) as u32,
            }
        })
        .collect()
}

pub fn ndjson(events: &[TestEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(e.json().to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b).unwrap();
    enc.finish().unwrap()
}
