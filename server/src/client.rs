//! A small HTTP/1.1 client for the tools that send events to a server (`import --to`,
//! `replay --to`, `loadgen`). Keep-alive connections; retries 503 with the server's Retry-After.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    url: String,
    auth: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub accepted: u64,
    pub duplicates: u64,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Result<Client, String> {
        let base = base.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(format!("--to {base}: only http:// URLs are supported (put TLS in a proxy in front)"));
        }
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        let http = HyperClient::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(conn);
        Ok(Client { http, url: format!("{base}/api/ingest/events"), auth: format!("Bearer {}", token.trim()) })
    }

    /// Posts one NDJSON body; retries overload (503) and connection errors a few times.
    pub async fn post_ndjson(&self, body: Bytes) -> Result<Sent, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = Request::post(&self.url)
                .header("authorization", &self.auth)
                .header("content-type", "application/x-ndjson")
                .body(Full::new(body.clone()))
                .map_err(|e| e.to_string())?;
            let (status, retry_after, bytes) = match self.http.request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                    (status, retry, bytes)
                }
                Err(e) if attempt < 5 => {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    let _ = e;
                    continue;
                }
                Err(e) => return Err(format!("cannot reach {}: {e}", self.url)),
            };
            if status == 503 && attempt < 20 {
                tokio::time::sleep(Duration::from_millis(retry_after.unwrap_or(1) * 1000 / 4)).await;
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if status != 200 {
                let msg = v["msg"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                return Err(format!("server answered {status}: {msg}"));
            }
            return Ok(Sent { accepted: v["data"]["accepted"].as_u64().unwrap_or(0), duplicates: v["data"]["duplicates"].as_u64().unwrap_or(0) });
        }
    }
}

/// A one-line progress display on stderr, only when it is a terminal.
pub struct Progress {
    tty: bool,
    label: &'static str,
    total: Option<u64>,
    last: std::time::Instant,
    start: std::time::Instant,
}

impl Progress {
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        use std::io::IsTerminal;
        let now = std::time::Instant::now();
        Progress { tty: std::io::stderr().is_terminal(), label, total, last: now, start: now }
    }

    pub fn set(&mut self, done: u64) {
        if !self.tty || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = std::time::Instant::now();
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        match self.total {
            Some(t) if t > 0 => {
                let pct = (done as f64 / t as f64 * 100.0).min(100.0);
                let filled = (pct / 5.0) as usize;
                eprint!("\r{} [{}{}] {pct:5.1}% {done}/{t} ({rate:.0}/s)   ", self.label, "#".repeat(filled), " ".repeat(20 - filled.min(20)));
            }
            _ => eprint!("\r{} {done} ({rate:.0}/s)   ", self.label),
        }
    }

    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
