//! The CLIProxyAPI collector (`sources.cliproxyapi`): pulls usage events from one or more proxies
//! and appends them, following PROTOCOL.md §3.6.
//!
//! `subscribe` mode: connection A sends `AUTH`, `SUBSCRIBE usage` and then only reads pushes
//! (and a `PING` every 30 s); right after each subscription connection B drains what was queued
//! before with `LPOP usage N` until `*0`. `poll` mode pops at an interval over RESP or HTTP.
//! Socket readers only hand payloads to a bounded channel; one appender task per source parses,
//! maps (`ingest::Mapper`, which derives the §6.7 event id so nothing counts twice) and appends in
//! batches. Reconnects back off exponentially up to 30 s; a rejected key backs off from one
//! minute up to 30 minutes, so five failures (the proxy's ban) never happen in a short window.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokenboard_engine::Dim;

use crate::http::{Shared, now_ms};
use crate::ingest::Mapper;
use crate::resp::{self, Reply};
use crate::log;

/// One proxy to collect from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Label of the source; stored as the events' `instance` and used in metrics.
    pub name: String,
    /// `host:port` of the proxy's API port (RESP and HTTP share it).
    pub address: String,
    /// The management key (`remote-management.secret-key`); prefer `management_key_env`.
    #[serde(default)]
    pub management_key: Option<String>,
    /// Name of an environment variable holding the management key.
    #[serde(default)]
    pub management_key_env: Option<String>,
    /// `subscribe` (default) or `poll`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// For `poll`: `resp` (default) or `http`.
    #[serde(default = "default_transport")]
    pub poll_transport: String,
    /// For `poll`: milliseconds between pops when the queue was empty.
    #[serde(default = "default_interval")]
    pub poll_interval_ms: u64,
    /// Events per `LPOP` / HTTP pop.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Connect with TLS (when the proxy has `tls.enable`); no ALPN is offered, as RESP needs.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA certificates to trust; default: the Mozilla roots built in.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Name to verify the certificate against; default: the host part of `address`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
}

fn default_mode() -> String {
    "subscribe".into()
}
fn default_transport() -> String {
    "resp".into()
}
fn default_interval() -> u64 {
    1000
}
fn default_batch() -> usize {
    500
}

impl SourceConfig {
    /// Checks the entry; `at` names it in messages (`sources.cliproxyapi[0]`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 64 {
            return Err(format!("{at}.name: must be 1 to 64 characters"));
        }
        let Some((host, port)) = self.address.rsplit_once(':') else {
            return Err(format!("{at}.address: must be host:port, e.g. 127.0.0.1:8317"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{at}.address: must be host:port, e.g. 127.0.0.1:8317"));
        }
        if !["subscribe", "poll"].contains(&self.mode.as_str()) {
            return Err(format!("{at}.mode: must be subscribe or poll"));
        }
        if !["resp", "http"].contains(&self.poll_transport.as_str()) {
            return Err(format!("{at}.poll_transport: must be resp or http"));
        }
        if !(100..=30_000).contains(&self.poll_interval_ms) {
            return Err(format!("{at}.poll_interval_ms: must be between 100 and 30000 (well inside the proxy's retention window)"));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(format!("{at}.batch: must be between 1 and 10000"));
        }
        if self.tls && self.mode == "poll" && self.poll_transport == "http" {
            return Err(format!("{at}.poll_transport: with tls use resp (or mode subscribe)"));
        }
        if let Some(ca) = &self.tls_ca_file {
            if !self.tls {
                return Err(format!("{at}.tls_ca_file: set tls: true as well"));
            }
            tls_config(Some(ca)).map_err(|e| format!("{at}.tls_ca_file: {e}"))?;
        }
        if let Some(name) = &self.tls_server_name
            && rustls::pki_types::ServerName::try_from(name.clone()).is_err()
        {
            return Err(format!("{at}.tls_server_name: not a valid DNS name or IP address"));
        }
        match (&self.management_key, &self.management_key_env) {
            (Some(k), None) if !k.is_empty() => Ok(()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(k) if !k.is_empty() => Ok(()),
                _ => Err(format!("{at}.management_key_env: the variable {var} is not set")),
            },
            _ => Err(format!("{at}: give exactly one of management_key or management_key_env")),
        }
    }

    fn key(&self) -> String {
        match &self.management_key_env {
            Some(var) => std::env::var(var).unwrap_or_default(),
            None => self.management_key.clone().unwrap_or_default(),
        }
    }
}

/// What a source is doing, for `/metrics`, the API and the console.
#[derive(Default)]
pub struct SourceHealth {
    pub name: String,
    pub address: String,
    pub mode: String,
    pub connected: AtomicBool,
    pub subscribed: AtomicBool,
    pub last_event_ms: AtomicI64,
    /// Event time of the newest event appended, for the lag.
    pub last_event_ts_ms: AtomicI64,
    pub events: AtomicU64,
    pub duplicates: AtomicU64,
    pub invalid: AtomicU64,
    pub reconnects: AtomicU64,
    pub auth_failures: AtomicU64,
    pub state: Mutex<String>,
    /// Events per second over the last few seconds.
    pub rate: AtomicU64,
}

impl SourceHealth {
    fn set_state(&self, s: impl Into<String>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s.into();
    }

    pub fn json(&self) -> serde_json::Value {
        let last = self.last_event_ms.load(Ordering::Relaxed);
        let last_ts = self.last_event_ts_ms.load(Ordering::Relaxed);
        serde_json::json!({
            "name": self.name,
            "address": self.address,
            "mode": self.mode,
            "state": *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            "connected": self.connected.load(Ordering::Relaxed),
            "subscribed": self.subscribed.load(Ordering::Relaxed),
            "last_event": (last > 0).then(|| crate::console::format_ts(last, chrono_tz::UTC)),
            "lag_ms": (last > 0 && last_ts > 0).then(|| (last - last_ts).max(0)),
            "events": self.events.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "invalid": self.invalid.load(Ordering::Relaxed),
            "events_per_second": self.rate.load(Ordering::Relaxed),
            "reconnects": self.reconnects.load(Ordering::Relaxed),
            "auth_failures": self.auth_failures.load(Ordering::Relaxed),
        })
    }
}

/// Payloads waiting between the socket readers and the appender: far more than the 256 messages
/// after which the proxy drops a subscriber.
const CHANNEL_PAYLOADS: usize = 100_000;
const APPEND_BATCH: usize = 5_000;
const PING_EVERY: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const AUTH_BACKOFF_MIN: Duration = Duration::from_secs(60);
const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);

/// Starts every configured source on the current runtime.
pub fn start(st: &Shared) -> Vec<Arc<SourceHealth>> {
    let mut all = Vec::new();
    for src in &st.config.sources.cliproxyapi {
        let health = Arc::new(SourceHealth {
            name: src.name.clone(),
            address: src.address.clone(),
            mode: if src.mode == "poll" { format!("poll/{}", src.poll_transport) } else { "subscribe".into() },
            ..SourceHealth::default()
        });
        health.set_state("starting");
        let (tx, rx) = mpsc::channel::<Vec<u8>>(CHANNEL_PAYLOADS);
        tokio::spawn(appender(st.clone(), src.clone(), health.clone(), rx));
        let (src, h) = (src.clone(), health.clone());
        match (src.mode.as_str(), src.poll_transport.as_str()) {
            ("poll", "http") => tokio::spawn(poll_http(src, h, tx)),
            ("poll", _) => tokio::spawn(poll_resp(src, h, tx)),
            _ => tokio::spawn(subscribe(src, h, tx)),
        };
        log::info(&format!("collecting from CLIProxyAPI {} at {} ({})", health.name, health.address, health.mode));
        all.push(health);
    }
    all
}

/// Parses, maps and appends payloads in batches.
async fn appender(st: Shared, src: SourceConfig, health: Arc<SourceHealth>, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut window = (Instant::now(), 0u64);
    let mut buf: Vec<Vec<u8>> = Vec::with_capacity(APPEND_BATCH);
    while rx.recv_many(&mut buf, APPEND_BATCH).await > 0 {
        let payloads = std::mem::take(&mut buf);
        let st2 = st.clone();
        let name = src.name.clone();
        let health2 = health.clone();
        let result = st
            .ingest_pool
            .run(move || {
                let mapper = Mapper { fp: &st2.fp, now_ms: now_ms() };
                let mut events = Vec::with_capacity(payloads.len());
                for p in &payloads {
                    match mapper.one(p) {
                        Ok(Some(mut ev)) => {
                            if ev.dim(Dim::Instance).is_empty() {
                                ev.set_dim(Dim::Instance, name.clone());
                            }
                            events.push(ev);
                        }
                        Ok(None) => {}
                        Err((field, msg)) => {
                            if health2.invalid.fetch_add(1, Ordering::Relaxed) < 5 {
                                log::warn(&format!("CLIProxyAPI {name}: skipped an event: {field}: {msg}"));
                            }
                        }
                    }
                }
                let newest = events.iter().map(|e| e.ts_ms).max();
                (events.len(), newest, if events.is_empty() { Ok(None) } else { st2.engine.append(&events).map(Some) })
            })
            .await;
        match result {
            Some((_, newest, Ok(out))) => {
                if let Some(out) = out {
                    health.events.fetch_add(out.accepted as u64, Ordering::Relaxed);
                    health.duplicates.fetch_add(out.duplicates as u64, Ordering::Relaxed);
                    window.1 += (out.accepted + out.duplicates) as u64;
                    health.last_event_ms.store(now_ms(), Ordering::Relaxed);
                    if let Some(ts) = newest {
                        health.last_event_ts_ms.store(ts, Ordering::Relaxed);
                    }
                }
            }
            Some((n, _, Err(e))) => {
                // The events were popped from the proxy and cannot be fetched again.
                log::error(&format!("CLIProxyAPI {}: could not store {n} events: {e}", src.name));
            }
            None => log::error(&format!("CLIProxyAPI {}: the append task failed", src.name)),
        }
        let elapsed = window.0.elapsed();
        if elapsed >= Duration::from_secs(2) {
            health.rate.store((window.1 as f64 / elapsed.as_secs_f64()) as u64, Ordering::Relaxed);
            window = (Instant::now(), 0);
        }
    }
}

enum Failure {
    /// The key was refused: back off long.
    Auth(String),
    Other(String),
}

type ReadHalf = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
type WriteHalf = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

struct Conn {
    reader: BufReader<ReadHalf>,
    writer: WriteHalf,
}

/// A TLS client configuration with no ALPN (a proxy that negotiated `h2` or `http/1.1` would hand
/// the connection to its HTTP server), trusting `ca_file` or the built-in Mozilla roots.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
            for c in certs {
                roots.add(c).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Conn {
    /// Connects and authenticates; `AUTH` is the first thing sent.
    async fn open(src: &SourceConfig, health: &SourceHealth) -> Result<Conn, Failure> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&src.address))
            .await
            .map_err(|_| Failure::Other(format!("connecting to {} timed out", src.address)))?
            .map_err(|e| Failure::Other(format!("cannot connect to {}: {e}", src.address)))?;
        stream.set_nodelay(true).ok();
        let (r, w): (ReadHalf, WriteHalf) = if src.tls {
            let config = tls_config(src.tls_ca_file.as_deref()).map_err(Failure::Other)?;
            let host = src.tls_server_name.clone().unwrap_or_else(|| {
                let h = src.address.rsplit_once(':').map_or(src.address.as_str(), |(h, _)| h);
                h.trim_start_matches('[').trim_end_matches(']').to_string()
            });
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| Failure::Other(format!("TLS server name: {e}")))?;
            let tls = tokio::time::timeout(Duration::from_secs(10), tokio_rustls::TlsConnector::from(config).connect(name, stream))
                .await
                .map_err(|_| Failure::Other("TLS handshake timed out".into()))?
                .map_err(|e| Failure::Other(format!("TLS handshake with {}: {e}", src.address)))?;
            let (r, w) = tokio::io::split(tls);
            (Box::new(r), Box::new(w))
        } else {
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        };
        let mut conn = Conn { reader: BufReader::with_capacity(256 * 1024, r), writer: w };
        let key = src.key();
        match conn.call(&[b"AUTH", key.as_bytes()]).await.map_err(|e| Failure::Other(format!("AUTH: {e}")))? {
            Reply::Simple(s) if s == "OK" => Ok(conn),
            Reply::Error(e) => {
                health.auth_failures.fetch_add(1, Ordering::Relaxed);
                Err(Failure::Auth(e))
            }
            other => Err(Failure::Other(format!("AUTH: unexpected reply {other:?}"))),
        }
    }

    async fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        self.writer.write_all(&resp::encode(args)).await
    }

    async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.send(args).await?;
        tokio::time::timeout(Duration::from_secs(30), resp::read_reply(&mut self.reader))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply within 30 s"))?
    }

    /// `LPOP usage N` until the queue is empty; returns how many were popped.
    async fn drain(&mut self, batch: usize, tx: &mpsc::Sender<Vec<u8>>) -> Result<u64, Failure> {
        let count = batch.to_string();
        let mut n = 0;
        loop {
            match self.call(&[b"LPOP", b"usage", count.as_bytes()]).await.map_err(|e| Failure::Other(format!("LPOP: {e}")))? {
                Reply::Array(Some(items)) => {
                    let got = items.len();
                    for item in items {
                        if let Reply::Bulk(Some(payload)) = item {
                            n += 1;
                            if tx.send(payload).await.is_err() {
                                return Ok(n);
                            }
                        }
                    }
                    if got < batch {
                        return Ok(n);
                    }
                }
                Reply::Array(None) | Reply::Bulk(None) => return Ok(n),
                Reply::Error(e) => return Err(Failure::Other(format!("LPOP: {e}"))),
                other => return Err(Failure::Other(format!("LPOP: unexpected reply {other:?}"))),
            }
        }
    }
}

/// Capped exponential backoff; a long healthy run resets it.
struct Backoff {
    next: Duration,
    auth_next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN, auth_next: AUTH_BACKOFF_MIN }
    }

    async fn wait(&mut self, f: &Failure, health: &SourceHealth, name: &str) {
        let (delay, what) = match f {
            Failure::Auth(e) => {
                let d = self.auth_next;
                self.auth_next = (self.auth_next * 2).min(AUTH_BACKOFF_MAX);
                (d, format!("management key refused ({e}); next attempt in {}s", d.as_secs()))
            }
            Failure::Other(e) => {
                let d = self.next;
                self.next = (self.next * 2).min(BACKOFF_MAX);
                (d, format!("{e}; reconnecting in {:.1}s", d.as_secs_f64()))
            }
        };
        health.set_state(what.clone());
        log::warn(&format!("CLIProxyAPI {name}: {what}"));
        tokio::time::sleep(delay).await;
    }

    fn healthy(&mut self) {
        self.next = BACKOFF_MIN;
        self.auth_next = AUTH_BACKOFF_MIN;
    }
}

/// Whether a payload is a control message (`{"support_refresh":true}`, `{"refresh":true}`).
pub fn is_control(payload: &[u8]) -> bool {
    payload.len() < 64 && (payload.windows(9).any(|w| w == b"\"refresh\"") || payload.windows(17).any(|w| w == b"\"support_refresh\"")) && !payload.windows(11).any(|w| w == b"\"timestamp\"")
}

async fn subscribe(src: SourceConfig, health: Arc<SourceHealth>, tx: mpsc::Sender<Vec<u8>>) {
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        let r = subscribe_once(&src, &health, &tx, &mut backoff).await;
        health.connected.store(false, Ordering::Relaxed);
        health.subscribed.store(false, Ordering::Relaxed);
        if tx.is_closed() {
            return;
        }
        health.reconnects.fetch_add(1, Ordering::Relaxed);
        if started.elapsed() > Duration::from_secs(60) {
            backoff.healthy();
        }
        let f = r.err().unwrap_or_else(|| Failure::Other("the proxy closed the subscription".into()));
        backoff.wait(&f, &health, &src.name).await;
    }
}

async fn subscribe_once(src: &SourceConfig, health: &Arc<SourceHealth>, tx: &mpsc::Sender<Vec<u8>>, backoff: &mut Backoff) -> Result<(), Failure> {
    health.set_state("connecting");
    let mut a = Conn::open(src, health).await?;
    health.connected.store(true, Ordering::Relaxed);
    match a.call(&[b"SUBSCRIBE", b"usage"]).await.map_err(|e| Failure::Other(format!("SUBSCRIBE: {e}")))? {
        Reply::Array(Some(items)) if items.first() == Some(&Reply::Bulk(Some(b"subscribe".to_vec()))) => {}
        Reply::Error(e) => return Err(Failure::Other(format!("SUBSCRIBE: {e}"))),
        other => return Err(Failure::Other(format!("SUBSCRIBE: unexpected reply {other:?}"))),
    }
    health.subscribed.store(true, Ordering::Relaxed);
    health.set_state("subscribed");
    backoff.healthy();
    // Drain what was queued while no subscriber was attached, on a second connection.
    {
        let (src, health, tx) = (src.clone(), health.clone(), tx.clone());
        tokio::spawn(async move {
            match Conn::open(&src, &health).await {
                Ok(mut b) => match b.drain(src.batch, &tx).await {
                    Ok(n) if n > 0 => log::info(&format!("CLIProxyAPI {}: drained {n} queued events", src.name)),
                    Ok(_) => {}
                    Err(Failure::Auth(e) | Failure::Other(e)) => log::warn(&format!("CLIProxyAPI {}: drain failed: {e}", src.name)),
                },
                Err(Failure::Auth(e) | Failure::Other(e)) => log::warn(&format!("CLIProxyAPI {}: drain connection failed: {e}", src.name)),
            }
        });
    }
    let Conn { mut reader, mut writer } = a;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            reply = resp::read_reply(&mut reader) => {
                let reply = reply.map_err(|e| Failure::Other(format!("subscription ended: {e}")))?;
                match reply {
                    Reply::Array(Some(mut items)) if items.len() == 3 && items[0] == Reply::Bulk(Some(b"message".to_vec())) => {
                        if let Some(Reply::Bulk(Some(payload))) = items.pop() {
                            if is_control(&payload) {
                                continue;
                            }
                            if tx.send(payload).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    // The PING reply and anything else are not events.
                    _ => {}
                }
            }
            _ = ping.tick() => {
                writer.write_all(&resp::encode(&[b"PING"])).await.map_err(|e| Failure::Other(format!("PING: {e}")))?;
            }
        }
    }
}

async fn poll_resp(src: SourceConfig, health: Arc<SourceHealth>, tx: mpsc::Sender<Vec<u8>>) {
    let mut backoff = Backoff::new();
    loop {
        health.set_state("connecting");
        let r: Result<(), Failure> = async {
            let mut c = Conn::open(&src, &health).await?;
            health.connected.store(true, Ordering::Relaxed);
            health.set_state("polling");
            backoff.healthy();
            loop {
                let n = c.drain(src.batch, &tx).await?;
                if tx.is_closed() {
                    return Ok(());
                }
                if n == 0 {
                    tokio::time::sleep(Duration::from_millis(src.poll_interval_ms)).await;
                }
            }
        }
        .await;
        health.connected.store(false, Ordering::Relaxed);
        if tx.is_closed() {
            return;
        }
        health.reconnects.fetch_add(1, Ordering::Relaxed);
        let f = r.err().unwrap_or_else(|| Failure::Other("connection closed".into()));
        backoff.wait(&f, &health, &src.name).await;
    }
}

async fn poll_http(src: SourceConfig, health: Arc<SourceHealth>, tx: mpsc::Sender<Vec<u8>>) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{}/v0/management/usage-queue?count={}", src.address, src.batch);
    let mut backoff = Backoff::new();
    health.set_state("polling");
    loop {
        let req = hyper::Request::get(&url).header("authorization", format!("Bearer {}", src.key())).body(Empty::new()).expect("request");
        let result: Result<usize, Failure> = async {
            let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
                .await
                .map_err(|_| Failure::Other("no answer within 30 s".into()))?
                .map_err(|e| Failure::Other(format!("cannot reach {url}: {e}")))?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.map_err(|e| Failure::Other(e.to_string()))?.to_bytes();
            match status {
                200 => {}
                401 | 403 => {
                    health.auth_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(Failure::Auth(String::from_utf8_lossy(&body).chars().take(200).collect()));
                }
                s => return Err(Failure::Other(format!("HTTP {s} from the usage queue"))),
            }
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(&body).map_err(|e| Failure::Other(format!("the usage queue answered something other than a JSON array: {e}")))?;
            let n = items.len();
            for item in items {
                let _ = tx.send(item.get().as_bytes().to_vec()).await;
            }
            Ok(n)
        }
        .await;
        match result {
            Ok(n) => {
                health.connected.store(true, Ordering::Relaxed);
                health.set_state("polling");
                backoff.healthy();
                if tx.is_closed() {
                    return;
                }
                if n < src.batch {
                    tokio::time::sleep(Duration::from_millis(src.poll_interval_ms)).await;
                }
            }
            Err(f) => {
                health.connected.store(false, Ordering::Relaxed);
                health.reconnects.fetch_add(1, Ordering::Relaxed);
                backoff.wait(&f, &health, &src.name).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_recognised() {
        assert!(is_control(br#"{"support_refresh":true}"#));
        assert!(is_control(br#"{"refresh":true}"#));
        assert!(!is_control(br#"{"timestamp":"2026-01-01T00:00:00Z","refresh":true}"#));
        assert!(!is_control(br#"{"model":"x"}"#));
    }
}
