//! The offline tools: verify, replay, export, import, loadgen.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenboard_engine::{Dim, Engine, EngineOptions, Granularity, Retention, StoredEvent};

use crate::client::{Client, Progress};
use crate::config::Config;
use crate::console::{self, Params};
use crate::export::{Format, write_export};
use crate::http::{AppState, Shared, now_ms};
use crate::ingest::{BodyError, Mapper};
use crate::keys::KeyStore;
use crate::secrets::Fingerprinter;
use crate::serve::events_dir;

/// A data directory given as itself or as its `events` folder.
fn resolve_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    if dir.join("events").is_dir() {
        (dir.to_path_buf(), dir.join("events"))
    } else if dir.file_name().is_some_and(|n| n == "events") {
        (dir.parent().unwrap_or(dir).to_path_buf(), dir.to_path_buf())
    } else {
        (dir.to_path_buf(), dir.to_path_buf())
    }
}

pub fn verify(dir: &Path) -> Result<(), String> {
    let (_, events) = resolve_dirs(dir);
    if !events.is_dir() {
        return Err(format!("{}: no such directory", events.display()));
    }
    let mut progress = Progress::new("verify", None);
    let report = tokenboard_engine::verify(&events, &mut |i, _, _| progress.set(i as u64)).map_err(|e| e.to_string())?;
    progress.finish();
    for s in &report.segments {
        let status = if s.bad_header.is_some() || s.issues.iter().any(|i| !matches!(i, tokenboard_engine::ScanIssue::TornTail { .. })) {
            "DAMAGED"
        } else {
            "ok"
        };
        println!("{status:8} {} base_seq={} events={} bytes={}", s.path.display(), s.base_seq, s.events, s.bytes);
        if let Some(h) = &s.bad_header {
            println!("         bad header: {h}");
        }
        for i in &s.issues {
            match i {
                tokenboard_engine::ScanIssue::Corruption { offset, reason, skipped_bytes } => {
                    println!("         corruption at offset {offset}: {reason} ({skipped_bytes} bytes skipped)")
                }
                tokenboard_engine::ScanIssue::TornTail { offset, cut_bytes } => {
                    println!("         torn tail at offset {offset} ({cut_bytes} bytes; recovery cuts it, nothing acknowledged under `always` is there)")
                }
                tokenboard_engine::ScanIssue::UnknownStrings { references } => {
                    println!("         {references} references to strings lost to corruption")
                }
            }
        }
    }
    for (from, to) in &report.gaps {
        println!("GAP      sequence numbers {from}..={to} are missing");
    }
    println!("{} segments, {} events: {}", report.segments.len(), report.events(), if report.damaged() { "DAMAGED" } else { "ok" });
    if report.damaged() { Err("corruption found".into()) } else { Ok(()) }
}

/// Opens a data directory for an offline tool: the engine without background work, the keys and
/// the fingerprint key, as a server state.
fn offline_state(dir: &Path, tz: Option<&str>) -> Result<Shared, String> {
    let (data_dir, events) = resolve_dirs(dir);
    if !events.is_dir() {
        return Err(format!("{}: not a Tokenboard data directory", dir.display()));
    }
    let mut config = Config::default();
    config.storage.data_dir = data_dir.clone();
    if let Some(tz) = tz {
        config.server.timezone = tz.to_string();
        config.validate().map_err(|e| e.to_string().replace("server.timezone", "--tz"))?;
    }
    let mut o = EngineOptions::new(&events);
    o.retention = Retention::none();
    o.retention_interval_ms = None;
    let (engine, _) = Engine::open(o).map_err(|e| match e {
        tokenboard_engine::Error::Locked { .. } => format!("{}: the server is running on this directory; stop it or use the HTTP API", dir.display()),
        e => e.to_string(),
    })?;
    let fp = Arc::new(Fingerprinter::load_or_create(&data_dir).map_err(|e| e.to_string())?);
    let (keys, _) = KeyStore::open(&data_dir, fp.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(AppState {
        live: crate::live::Hub::start(&engine),
        ingest_slots: Arc::new(tokio::sync::Semaphore::new(1)),
        ingest_pool: crate::pool::Pool::new("tokenboard-ingest", 1, 1),
        slice_slots: Arc::new(tokio::sync::Semaphore::new(1)),
        config,
        engine,
        keys,
        fp,
        metrics: Default::default(),
        sources: Default::default(),
        started: Instant::now(),
    }))
}

/// The read filters the console API takes, as flags.
#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Start of the range (RFC 3339 or epoch ms), inclusive.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range (RFC 3339 or epoch ms), exclusive.
    #[arg(long)]
    pub to: Option<String>,
    /// IANA time zone for timestamps and day buckets.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    #[arg(long)]
    pub model: Option<String>,
    /// A client key id as the log shows it.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub credential: Option<String>,
    /// A status code (429), a class (5xx) or `error`.
    #[arg(long)]
    pub status: Option<String>,
}

impl FilterArgs {
    fn params(&self) -> Params {
        let mut p = Params::new();
        let pairs = [
            ("from", &self.from),
            ("to", &self.to),
            ("model", &self.model),
            ("key", &self.key),
            ("endpoint", &self.endpoint),
            ("provider", &self.provider),
            ("credential", &self.credential),
            ("status", &self.status),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                p.insert(k.to_string(), v.clone());
            }
        }
        p.insert("tz".into(), self.tz.clone());
        p
    }
}

fn api_error(e: crate::http::ApiError) -> String {
    // Parameter names in messages are the flag names.
    format!("--{}", e.msg)
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The data directory.
    pub dir: PathBuf,
    /// json, ndjson or csv.
    #[arg(long, default_value = "ndjson")]
    pub format: String,
    /// Write here instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn export(a: ExportArgs) -> Result<(), String> {
    let format = Format::parse(&a.format).ok_or("--format must be json, ndjson or csv")?;
    let st = offline_state(&a.dir, Some(&a.filter.tz))?;
    let rq = console::parse_read(&st, &a.filter.params()).map_err(api_error)?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let head = (format == Format::Json).then(|| json!({ "stats": console::stats_document(&st, &rq, 10), "keys": console::keys_document(&st) }));
    let mut progress = Progress::new("export", None);
    let mut failed = None;
    let mut filter = rq.filter.clone();
    if rq.nothing {
        filter = tokenboard_engine::LogFilter { from_ms: Some(1), to_ms: Some(0), ..Default::default() };
    }
    let mut written = 0u64;
    let rows = write_export(&st.engine, &st.keys, &filter, rq.tz, format, head, &mut |chunk| {
        written += chunk.len() as u64;
        progress.set(written);
        match out.write_all(&chunk) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e.to_string());
                false
            }
        }
    });
    progress.finish();
    if let Some(e) = failed {
        return Err(format!("write failed: {e}"));
    }
    out.flush().map_err(|e| format!("write failed: {e}"))?;
    drop(out);
    st.engine.close().map_err(|e| e.to_string())?;
    eprintln!("exported {rows} events");
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The data directory.
    pub dir: PathBuf,
    /// Re-send the events to this server (http://host:port) instead of printing a report.
    #[arg(long = "to", value_name = "URL")]
    pub to_url: Option<String>,
    /// A token with the ingest scope, for --to (or TOKENBOARD_TOKEN).
    #[arg(long, env = "TOKENBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Start of the range (RFC 3339 or epoch ms).
    #[arg(long)]
    pub since: Option<String>,
    /// End of the range, exclusive.
    #[arg(long)]
    pub until: Option<String>,
    /// IANA time zone of the report's buckets.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Report buckets: hour, day, week or month.
    #[arg(long, default_value = "day")]
    pub granularity: String,
    /// Events per request with --to.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
}

pub fn replay(a: ReplayArgs) -> Result<(), String> {
    let st = offline_state(&a.dir, Some(&a.tz))?;
    let mut p = Params::new();
    if let Some(s) = &a.since {
        p.insert("from".into(), s.clone());
    }
    if let Some(u) = &a.until {
        p.insert("to".into(), u.clone());
    }
    p.insert("tz".into(), a.tz.clone());
    let rq = console::parse_read(&st, &p).map_err(|e| api_error(e).replace("--from", "--since").replace("--to:", "--until:"))?;
    let Some(url) = &a.to_url else {
        let g = match a.granularity.as_str() {
            "hour" => Granularity::Hour,
            "day" => Granularity::Day,
            "week" => Granularity::Week,
            "month" => Granularity::Month,
            _ => return Err("--granularity must be hour, day, week or month".into()),
        };
        let started = Instant::now();
        let doc = console::stats_document(&st, &rq, 20);
        let (lo, hi) = match st.engine.status() {
            s if s.events > 0 => (s.oldest_ts_ms.unwrap_or(0), s.newest_ts_ms.unwrap_or(0) + 1),
            _ => (0, 1),
        };
        let range = tokenboard_engine::TimeRange::new(rq.filter.from_ms.unwrap_or(lo), rq.filter.to_ms.unwrap_or(hi));
        let trend = st.engine.trend(range, g, rq.tz).map_err(|e| format!("--granularity: {e}"))?;
        println!("Tokenboard replay of {} ({} events rebuilt in {:.2}s)", a.dir.display(), st.engine.status().events, started.elapsed().as_secs_f64());
        println!("calls {}  tokens {}  errors {}  success {}%  avg latency {} ms", doc["api_call_count"], doc["total_tokens"], doc["error_count"], doc["success_rate"], doc["avg_time"]);
        println!("latency p50/p95/p99 {}/{}/{} ms", doc["latency"]["p50"], doc["latency"]["p95"], doc["latency"]["p99"]);
        println!("\n{:<40} {:>12} {:>16} {:>10}", "model", "calls", "tokens", "success%");
        for m in doc["models"].as_array().into_iter().flatten() {
            println!("{:<40} {:>12} {:>16} {:>10}", m["name"].as_str().unwrap_or(""), m["call_count"].to_string(), m["token_count"].to_string(), m["success_rate"].to_string());
        }
        println!("\n{:<25} {:>12} {:>16} {:>10}  ({})", "bucket start", "calls", "tokens", "errors", rq.tz.name());
        for b in trend.iter().filter(|b| b.agg.calls > 0) {
            println!("{:<25} {:>12} {:>16} {:>10}", console::format_ts(b.start_ms, rq.tz), b.agg.calls, b.agg.total_tokens(), b.agg.errors);
        }
        st.engine.close().map_err(|e| e.to_string())?;
        return Ok(());
    };
    let token = a.token.clone().ok_or("--token (or TOKENBOARD_TOKEN) is required with --to")?;
    let client = Client::new(url, &token)?;
    let total = st.engine.status().events;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let engine = st.engine.clone();
    let filter = rq.filter.clone();
    let batch = a.batch.clamp(1, 100_000);
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut n = 0;
        engine.scan(&filter, &mut |ev| {
            let doc = engine.with_interner(|i| replay_event(ev, i));
            serde_json::to_writer(&mut buf, &doc).expect("serialise");
            buf.push(b'\n');
            n += 1;
            if n % batch == 0 {
                return tx.blocking_send(Bytes::from(std::mem::take(&mut buf))).is_ok();
            }
            true
        });
        if !buf.is_empty() {
            let _ = tx.blocking_send(Bytes::from(buf));
        }
    });
    let mut progress = Progress::new("replay", Some(total));
    let mut sent = crate::client::Sent::default();
    let r: Result<(), String> = rt.block_on(async {
        while let Some(body) = rx.recv().await {
            let s = client.post_ndjson(body).await?;
            sent.accepted += s.accepted;
            sent.duplicates += s.duplicates;
            progress.set(sent.accepted + sent.duplicates);
        }
        Ok(())
    });
    progress.finish();
    drop(rx);
    let _ = reader.join();
    r?;
    st.engine.close().map_err(|e| e.to_string())?;
    eprintln!("replayed to {url}: {} accepted, {} duplicates", sent.accepted, sent.duplicates);
    Ok(())
}

/// A stored event as a Tokenboard event for another server. Events without an id get one from
/// their sequence number, so a repeated replay is recognised as duplicates.
fn replay_event(ev: &StoredEvent, i: &tokenboard_engine::Interner) -> Value {
    let d = |dim: Dim| i.resolve(ev.dim(dim)).to_string();
    json!({
        "event_id": ev.event_id.as_deref().map(str::to_string).unwrap_or_else(|| format!("replay:{}:{}", ev.seq, ev.ts_ms)),
        "ts": ev.ts_ms,
        "method": d(Dim::Method), "endpoint": d(Dim::Endpoint), "model": d(Dim::Model), "model_alias": d(Dim::ModelAlias),
        "provider": d(Dim::Provider), "credential": d(Dim::Credential), "key": d(Dim::Key), "error_class": d(Dim::ErrorClass),
        "user": d(Dim::User), "instance": d(Dim::Instance),
        "status": ev.status, "success": ev.success,
        "tokens": {
            "input_uncached": ev.tokens.input_uncached, "cache_read": ev.tokens.cache_read, "cache_write": ev.tokens.cache_write,
            "output": ev.tokens.output, "reasoning": ev.tokens.reasoning, "unclassified": ev.tokens.unclassified,
        },
        "quality": ev.quality.as_str(), "latency_ms": ev.latency_ms, "ttft_ms": ev.ttft_ms, "stream": ev.stream,
        "request_id": ev.request_id.as_deref(), "error_message": ev.error_message.as_deref(),
    })
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// NDJSON (or a JSON array) of events, or a CLIProxyAPI v1 usage export; `-` reads stdin.
    pub file: PathBuf,
    /// Send to this running server (http://host:port).
    #[arg(long = "to", value_name = "URL", conflicts_with = "data_dir")]
    pub to_url: Option<String>,
    /// A token with the ingest scope, for --to (or TOKENBOARD_TOKEN).
    #[arg(long, env = "TOKENBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Append directly to this data directory (the server must be stopped).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Events per batch.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
}

const PROVIDERS: [&str; 12] = ["codex", "claude", "gemini", "vertex", "aistudio", "antigravity", "kimi", "xai", "openai", "openai-compatibility", "qwen", "unknown"];

/// PROTOCOL.md §7.3: one CLIProxyAPI-shaped event per `details` entry of a v1 export, with the
/// §7.4 key as its id.
pub fn v1_snapshot_events(doc: &Value) -> Result<Vec<Value>, String> {
    let version = doc["version"].as_i64().unwrap_or(0);
    if version != 0 && version != 1 {
        return Err(format!("unsupported v1 export version {version}"));
    }
    let apis = doc["usage"]["apis"].as_object().ok_or("not a CLIProxyAPI usage export: usage.apis is missing")?;
    let mut out = Vec::new();
    for (api, entry) in apis {
        let models = entry["models"].as_object().ok_or_else(|| format!("usage.apis.{api}.models is missing"))?;
        for (model, m) in models {
            for (i, d) in m["details"].as_array().into_iter().flatten().enumerate() {
                let ts = d["timestamp"].as_str().ok_or_else(|| format!("usage.apis.{api}.models.{model}.details[{i}].timestamp is missing"))?;
                let t = &d["tokens"];
                let n = |k: &str| t[k].as_u64().unwrap_or(0);
                let mut total = n("total_tokens");
                if total == 0 {
                    total = n("input_tokens") + n("output_tokens") + n("reasoning_tokens");
                }
                let auth_index = match &d["auth_index"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                let source = d["source"].as_str().unwrap_or("");
                let failed = d["failed"].as_bool().unwrap_or(false);
                let utc = chrono::DateTime::parse_from_rfc3339(ts)
                    .map_err(|e| format!("usage.apis.{api}.models.{model}.details[{i}].timestamp: {e}"))?
                    .with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                let key = format!(
                    "{api}|{model}|{utc}|{source}|{auth_index}|{failed}|{}|{}|{}|{}|{}",
                    n("input_tokens"), n("output_tokens"), n("reasoning_tokens"), n("cached_tokens"), n("total_tokens")
                );
                let is_endpoint = api.split_once(' ').is_some_and(|(m, p)| m.chars().all(|c| c.is_ascii_uppercase()) && p.starts_with('/'));
                let is_provider = PROVIDERS.contains(&api.as_str());
                let mut ev = json!({
                    "event_id": format!("cpa-v1:{}", hex::encode(&Sha256::digest(key.as_bytes())[..16])),
                    "timestamp": ts,
                    "latency_ms": d["latency_ms"].as_u64().unwrap_or(0),
                    "source": source,
                    "auth_index": auth_index,
                    "failed": failed,
                    "fail": { "status_code": if failed { 500 } else { 200 }, "body": "" },
                    "model": model,
                    "alias": model,
                    "tokens": {
                        "input_tokens": n("input_tokens"), "output_tokens": n("output_tokens"), "reasoning_tokens": n("reasoning_tokens"),
                        "cached_tokens": n("cached_tokens"), "cache_read_tokens": n("cached_tokens"), "total_tokens": total,
                    },
                    "token_breakdown": { "schema_version": 2, "quality": "unclassified", "total_tokens": total, "unclassified_tokens": total },
                });
                if is_endpoint {
                    ev["endpoint"] = json!(api);
                } else if is_provider {
                    ev["provider"] = json!(api);
                } else {
                    ev["api_key"] = json!(api);
                }
                out.push(ev);
            }
        }
    }
    Ok(out)
}

/// Reads the import file into NDJSON lines.
fn import_lines(path: &Path) -> Result<Box<dyn Iterator<Item = Result<String, String>>>, String> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?))
    };
    let mut reader = reader;
    let first = reader.fill_buf().map_err(|e| e.to_string())?.iter().find(|b| !b.is_ascii_whitespace()).copied();
    // A whole JSON document: an array of events or a v1 export (which is small: aggregated).
    let whole_doc = matches!(first, Some(b'[')) || {
        if first == Some(b'{') {
            // Peek: a v1 export starts with a document holding "usage"; an event line is one line.
            let buf = reader.fill_buf().map_err(|e| e.to_string())?;
            let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            serde_json::from_slice::<Value>(&buf[..line_end]).is_err() || buf[..line_end].windows(8).any(|w| w == b"\"usage\":")
        } else {
            false
        }
    };
    if whole_doc {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut text).map_err(|e| e.to_string())?;
        let doc: Value = serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let items = match doc {
            Value::Array(items) => items,
            d if d.get("usage").is_some() => v1_snapshot_events(&d)?,
            d => vec![d],
        };
        return Ok(Box::new(items.into_iter().map(|v| Ok(v.to_string()))));
    }
    Ok(Box::new(reader.lines().map(|l| l.map_err(|e| e.to_string())).filter(|l| l.as_ref().map_or(true, |l| !l.trim().is_empty()))))
}

pub fn import(a: ImportArgs) -> Result<(), String> {
    let batch = a.batch.clamp(1, 100_000);
    let lines = import_lines(&a.file)?;
    let mut progress = Progress::new("import", None);
    let (mut accepted, mut duplicates, mut line_no) = (0u64, 0u64, 0usize);
    match (&a.to_url, &a.data_dir) {
        (Some(url), _) => {
            let token = a.token.clone().ok_or("--token (or TOKENBOARD_TOKEN) is required with --to")?;
            let client = Client::new(url, &token)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let mut buf = String::new();
            let mut n = 0;
            let mut send = |buf: &mut String, first_line: usize| -> Result<(), String> {
                let s = rt.block_on(client.post_ndjson(Bytes::from(std::mem::take(buf)))).map_err(|e| format!("batch starting at event {first_line}: {e}"))?;
                accepted += s.accepted;
                duplicates += s.duplicates;
                progress.set(accepted + duplicates);
                Ok(())
            };
            for line in lines {
                buf.push_str(&line?);
                buf.push('\n');
                n += 1;
                line_no += 1;
                if n == batch {
                    send(&mut buf, line_no - n + 1)?;
                    n = 0;
                }
            }
            if n > 0 {
                send(&mut buf, line_no - n + 1)?;
            }
        }
        (None, Some(dir)) => {
            let mut config = Config::default();
            config.storage.data_dir = dir.clone();
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let fp = Fingerprinter::load_or_create(dir).map_err(|e| e.to_string())?;
            let mut o = config.engine_options();
            o.dir = events_dir(dir);
            o.retention = Retention::none();
            o.retention_interval_ms = None;
            let (engine, _) = Engine::open(o).map_err(|e| match e {
                tokenboard_engine::Error::Locked { .. } => format!("{}: the server is running on this directory; use --to instead", dir.display()),
                e => e.to_string(),
            })?;
            let mut chunk: Vec<String> = Vec::new();
            let mut flush = |chunk: &mut Vec<String>, first: usize| -> Result<(), String> {
                let mapper = Mapper { fp: &fp, now_ms: now_ms() };
                let body = chunk.join("\n");
                let parsed = mapper.parse_body(body.as_bytes(), true, usize::MAX).map_err(|e| match e {
                    BodyError::Items(errs) => {
                        let e = &errs[0];
                        format!("event {}: {}: {}", first + e.index, if e.field.is_empty() { "(the event)" } else { &e.field }, e.message)
                    }
                    BodyError::Body(m) => m,
                    BodyError::TooManyEvents { .. } => "too many events".into(),
                })?;
                let out = engine.append(&parsed.events).map_err(|e| e.to_string())?;
                accepted += out.accepted as u64;
                duplicates += out.duplicates as u64;
                progress.set(accepted + duplicates);
                chunk.clear();
                Ok(())
            };
            for line in lines {
                chunk.push(line?);
                line_no += 1;
                if chunk.len() == batch {
                    flush(&mut chunk, line_no - batch + 1)?;
                }
            }
            let left = chunk.len();
            if left > 0 {
                flush(&mut chunk, line_no - left + 1)?;
            }
            engine.close().map_err(|e| e.to_string())?;
        }
        (None, None) => return Err("give --to URL (a running server) or --data-dir DIR (offline)".into()),
    }
    progress.finish();
    eprintln!("imported {line_no} events: {accepted} accepted, {duplicates} duplicates");
    Ok(())
}

#[derive(Args, Debug)]
pub struct LoadgenArgs {
    /// The server, e.g. http://127.0.0.1:8317.
    #[arg(long = "to", value_name = "URL")]
    pub to_url: Option<String>,
    /// A token with the ingest scope (or TOKENBOARD_TOKEN).
    #[arg(long, env = "TOKENBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Events per second in all; 0 sends as fast as the server takes them.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many events instead.
    #[arg(long)]
    pub events: Option<u64>,
    /// Events per request (1 = one POST per event).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Spread timestamps over this many past days instead of stamping now.
    #[arg(long, default_value_t = 0)]
    pub backfill_days: u32,
    /// Random seed, for repeatable traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print this many events as NDJSON on stdout instead of sending (for wrk bodies); the
    /// events carry no event id unless --with-ids.
    #[arg(long, value_name = "N")]
    pub dump: Option<u64>,
    #[arg(long, requires = "dump")]
    pub with_ids: bool,
}

/// A small, fast, seedable generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Roughly Zipf-like: small indices far more often.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64 % n.max(1)
    }
}

const MODELS: [(&str, &str); 12] = [
    ("gpt-5.4", "codex"),
    ("gpt-5.4-mini", "codex"),
    ("o4-mini", "openai"),
    ("claude-sonnet-4-5", "claude"),
    ("claude-opus-4-1", "claude"),
    ("claude-haiku-4-5", "claude"),
    ("gemini-2.5-pro", "gemini"),
    ("gemini-2.5-flash", "gemini"),
    ("grok-4", "xai"),
    ("kimi-k2", "kimi"),
    ("deepseek-v3.2", "openai-compatibility"),
    ("qwen3-coder", "openai-compatibility"),
];
const ENDPOINTS: [&str; 4] = ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1beta/models/*action"];

/// One synthetic event, as CLIProxyAPI-independent Tokenboard JSON.
fn synthetic_event(rng: &mut Rng, n: u64, seed: u64, now: i64, backfill_days: u32) -> String {
    let (model, provider) = MODELS[rng.skewed(MODELS.len() as u64) as usize];
    let key = rng.skewed(500);
    let credential = rng.below(24);
    let endpoint = ENDPOINTS[rng.below(ENDPOINTS.len() as u64) as usize];
    let roll = rng.below(1000);
    let status = match roll {
        0..=14 => 429,
        15..=21 => 500,
        22..=25 => 401,
        26..=30 => 400,
        31..=33 => 503,
        _ => 200,
    };
    let stream = rng.below(10) < 6;
    let input = 200 + rng.skewed(20_000);
    let cache_read = if rng.below(3) == 0 { input * rng.below(90) / 100 } else { 0 };
    let output = if status == 200 { 20 + rng.skewed(4000) } else { 0 };
    let reasoning = if model.starts_with("gpt") || model.starts_with("o4") { output * rng.below(60) / 100 } else { 0 };
    let latency = 150 + rng.skewed(30_000);
    let ttft = if stream { Some(50 + rng.skewed(latency.min(5000))) } else { None };
    let ts = if backfill_days > 0 { now - rng.below(u64::from(backfill_days) * 86_400_000) as i64 } else { now };
    let mut ev = json!({
        "event_id": format!("loadgen-{seed}-{n}"),
        "ts": ts,
        "method": "POST",
        "endpoint": endpoint,
        "model": model,
        "provider": provider,
        "credential": format!("cred-{credential:02}"),
        "key": format!("sk-load…{key:04}"),
        "status": status,
        "tokens": { "input_uncached": input - cache_read, "cache_read": cache_read, "output": output - reasoning, "reasoning": reasoning },
        "latency_ms": latency,
        "stream": stream,
        "instance": "loadgen",
    });
    if let Some(t) = ttft {
        ev["ttft_ms"] = json!(t);
    }
    if status != 200 {
        ev["error_message"] = json!(format!("upstream answered {status}"));
    }
    ev.to_string()
}

pub fn loadgen(a: LoadgenArgs) -> Result<(), String> {
    if let Some(n) = a.dump {
        let mut rng = Rng(a.seed);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let now = now_ms();
        for i in 0..n {
            let mut line = synthetic_event(&mut rng, i, a.seed, now, a.backfill_days);
            if !a.with_ids {
                let v: Value = serde_json::from_str(&line).expect("own JSON");
                let mut v = v;
                v.as_object_mut().expect("object").remove("event_id");
                line = v.to_string();
            }
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
        return out.flush().map_err(|e| e.to_string());
    }
    let to_url = a.to_url.as_deref().ok_or("--to URL is required (or --dump N)")?;
    let token = a.token.as_deref().ok_or("--token (or TOKENBOARD_TOKEN) is required")?;
    let client = Client::new(to_url, token)?;
    let batch = a.batch.clamp(1, 100_000);
    let concurrency = a.concurrency.clamp(1, 1024);
    let limit = a.events.unwrap_or(u64::MAX);
    let deadline = Instant::now() + Duration::from_secs(if a.events.is_some() { 86_400 } else { a.duration.max(1) });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let start = Instant::now();
    let rate = a.rate;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let (client, next, sent, errors, latencies) = (client.clone(), next.clone(), sent.clone(), errors.clone(), latencies.clone());
            let (seed, backfill) = (a.seed, a.backfill_days);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(seed.wrapping_mul(1_000_003).wrapping_add(w as u64));
                let mut lat = Vec::new();
                loop {
                    let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                    if first >= limit || Instant::now() >= deadline {
                        break;
                    }
                    let n = (batch as u64).min(limit - first);
                    if rate > 0 {
                        // Pace: the batch starting at event `first` is due at first / rate seconds.
                        let due = start + Duration::from_secs_f64(first as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let now = now_ms();
                    let mut body = String::with_capacity(n as usize * 400);
                    for i in 0..n {
                        body.push_str(&synthetic_event(&mut rng, first + i, seed, now, backfill));
                        body.push('\n');
                    }
                    let t = Instant::now();
                    match client.post_ndjson(Bytes::from(body)).await {
                        Ok(s) => {
                            sent.fetch_add(s.accepted + s.duplicates, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("loadgen: {e}");
                            }
                        }
                    }
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                latencies.lock().unwrap_or_else(|e| e.into_inner()).extend(lat);
            }));
        }
        let mut progress = Progress::new("loadgen", a.events);
        while tasks.iter().any(|t| !t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            progress.set(sent.load(Ordering::Relaxed));
        }
        progress.finish();
    });
    let took = start.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lat.sort_unstable();
    let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1000.0;
    let events = sent.load(Ordering::Relaxed);
    println!(
        "loadgen: {events} events in {} requests over {took:.2}s: {:.0} events/s, {:.0} requests/s; request latency p50 {:.2} ms, p99 {:.2} ms; {} failed requests",
        lat.len(),
        events as f64 / took,
        lat.len() as f64 / took,
        q(0.5),
        q(0.99),
        errors.load(Ordering::Relaxed)
    );
    if errors.load(Ordering::Relaxed) > 0 { Err("some requests failed".into()) } else { Ok(()) }
}
