//! Exports of exactly the filtered view: `json` (the original `{stats, logs, keys}` document, keys
//! masked), `ndjson` or `csv`. Rows stream oldest first from a snapshot of the log in 64 KiB
//! chunks through a bounded channel, so memory stays constant whatever the row count and a slow
//! reader only slows its own export. The same writer serves the offline `tokenboard export`.

use std::io::Write;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono_tz::Tz;
use tokenboard_engine::{Engine, LogFilter, StoredEvent};

use crate::console::{LogRow, Params, ReadQuery, keys_document, log_row, parse_read, stats_document};
use crate::http::{ApiError, Shared};
use crate::keys::KeyStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

pub const CSV_COLUMNS: [&str; 31] = [
    "id", "timestamp", "ts_ms", "method", "endpoint", "status", "success", "tokens", "duration", "model", "error", "model_alias",
    "provider", "credential", "key", "key_name", "error_class", "input_uncached", "cache_read", "cache_write", "output",
    "reasoning", "unclassified", "quality", "ttft_ms", "stream", "request_id", "user", "instance", "event_id", "ts_clamped",
];

/// A CSV cell: quoted when needed, and with a leading `'` when a spreadsheet would run it as a
/// formula.
fn csv_cell(out: &mut Vec<u8>, v: &str) {
    let formula = v.starts_with(['=', '+', '-', '@', '\t', '\r']) && v.parse::<f64>().is_err();
    let quote = formula || v.contains([',', '"', '\n', '\r']);
    if quote {
        out.push(b'"');
        if formula {
            out.push(b'\'');
        }
        for b in v.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(v.as_bytes());
    }
}

fn csv_row(out: &mut Vec<u8>, r: &LogRow) {
    let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
    let cells: [String; 31] = [
        r.id.to_string(),
        r.timestamp.clone(),
        r.ts_ms.to_string(),
        r.method.to_string(),
        r.endpoint.to_string(),
        r.status.to_string(),
        r.success.to_string(),
        r.tokens.to_string(),
        r.duration.to_string(),
        r.model.to_string(),
        r.error.clone(),
        r.model_alias.to_string(),
        r.provider.to_string(),
        r.credential.to_string(),
        r.key.to_string(),
        r.key_name.clone().unwrap_or_default(),
        r.error_class.to_string(),
        r.input_uncached.to_string(),
        r.cache_read.to_string(),
        r.cache_write.to_string(),
        r.output.to_string(),
        r.reasoning.to_string(),
        r.unclassified.to_string(),
        r.quality.to_string(),
        opt(r.ttft_ms),
        r.stream.to_string(),
        r.request_id.as_deref().unwrap_or("").to_string(),
        r.user.to_string(),
        r.instance.to_string(),
        r.event_id.as_deref().unwrap_or("").to_string(),
        r.ts_clamped.to_string(),
    ];
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_cell(out, c);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an export to `sink` in chunks; `sink` returns false to stop (the reader went away).
/// `head` is the JSON document's part before the rows (stats and keys).
pub fn write_export(
    engine: &Engine,
    keys: &KeyStore,
    filter: &LogFilter,
    tz: Tz,
    format: Format,
    head: Option<serde_json::Value>,
    sink: &mut dyn FnMut(Vec<u8>) -> bool,
) -> u64 {
    const CHUNK: usize = 64 * 1024;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    match format {
        Format::Csv => {
            buf.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        Format::Json => {
            // `{"stats":…,"keys":[…],"logs":[` then the rows, then `]}`.
            let head = head.unwrap_or_else(|| serde_json::json!({}));
            let text = head.to_string();
            buf.extend_from_slice(&text.as_bytes()[..text.len() - 1]);
            if text.len() > 2 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"\"logs\":[");
        }
        Format::Ndjson => {}
    }
    let mut rows = 0u64;
    let mut alive = true;
    let mut batch: Vec<StoredEvent> = Vec::with_capacity(256);
    let flush_rows = |batch: &mut Vec<StoredEvent>, buf: &mut Vec<u8>, rows: &mut u64| {
        engine.with_interner(|i| {
            for ev in batch.iter() {
                let row = log_row(ev, i, keys, tz);
                match format {
                    Format::Csv => csv_row(buf, &row),
                    Format::Ndjson => {
                        serde_json::to_writer(&mut *buf, &row).expect("rows serialise");
                        buf.push(b'\n');
                    }
                    Format::Json => {
                        if *rows > 0 {
                            buf.push(b',');
                        }
                        serde_json::to_writer(&mut *buf, &row).expect("rows serialise");
                    }
                }
                *rows += 1;
            }
        });
        batch.clear();
    };
    engine.scan(filter, &mut |ev| {
        batch.push(ev.clone());
        if batch.len() == 256 {
            flush_rows(&mut batch, &mut buf, &mut rows);
            if buf.len() >= CHUNK {
                alive = sink(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096)));
            }
        }
        alive
    });
    if alive {
        flush_rows(&mut batch, &mut buf, &mut rows);
        if format == Format::Json {
            buf.extend_from_slice(b"]}");
        }
        let _ = buf.flush();
        sink(buf);
    }
    rows
}

fn parse_format(q: &Params) -> Result<Format, ApiError> {
    let f = q.get("format").map(|s| s.trim()).filter(|s| !s.is_empty()).unwrap_or("json");
    Format::parse(f).ok_or_else(|| ApiError::field("format", "must be json, ndjson or csv"))
}

pub async fn export(State(st): State<Shared>, Query(q): Query<Params>) -> Result<Response, ApiError> {
    let rq: ReadQuery = parse_read(&st, &q)?;
    let format = parse_format(&q)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || {
        let head = (format == Format::Json).then(|| {
            serde_json::json!({ "stats": stats_document(&st2, &rq, 10), "keys": keys_document(&st2) })
        });
        let mut sink = |chunk: Vec<u8>| tx.blocking_send(chunk).is_ok();
        if rq.nothing {
            // A filter names a value never seen: an empty export of the right shape.
            let filter = LogFilter { from_ms: Some(1), to_ms: Some(0), ..LogFilter::default() };
            write_export(&st2.engine, &st2.keys, &filter, rq.tz, format, head, &mut sink);
        } else {
            write_export(&st2.engine, &st2.keys, &rq.filter, rq.tz, format, head, &mut sink);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (Ok::<_, std::io::Error>(bytes::Bytes::from(c)), rx)) });
    let name = format!("tokenboard-export-{}.{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), format.extension());
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_quote_and_defuse_formulas() {
        let mut out = Vec::new();
        for v in ["plain", "a,b", "say \"hi\"", "=SUM(A1)", "-5", "@x"] {
            csv_cell(&mut out, v);
            out.push(b'|');
        }
        assert_eq!(String::from_utf8(out).unwrap(), "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"'=SUM(A1)\"|-5|\"'@x\"|");
    }
}
