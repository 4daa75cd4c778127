//! Turns request bodies into engine events.
//!
//! Three event shapes are accepted, one per JSON object, and may be mixed in one batch:
//! - Tokenboard's own (the engine's field names, snake_case; `tokens` an object of buckets);
//! - the original design's recording `{method, endpoint, model, status, tokens, duration}`, where
//!   `tokens` is a number (kept as unclassified) and `duration` is milliseconds;
//! - a CLIProxyAPI usage event verbatim (it has `token_breakdown`, `fail` or provider-native
//!   `tokens.*_tokens` counters), mapped as `../shared/reference/cliproxyapi/PROTOCOL.md` §6 says.
//!
//! Client secrets (`api_key`, CLIProxyAPI's `source`) are replaced by a keyed fingerprint and a
//! masked form before anything is stored.

use std::collections::HashMap;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokenboard_engine::{Dim, NewEvent, Quality, Tokens};

use crate::secrets::Fingerprinter;

/// One problem with one event of a batch.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ItemError {
    pub index: usize,
    pub field: String,
    pub message: String,
}

/// Errors reported per batch at most; the rest are counted.
pub const ERRORS_MAX: usize = 100;

#[derive(Debug)]
pub enum BodyError {
    /// Per-event problems; nothing of the batch is stored.
    Items(Vec<ItemError>),
    /// The body as a whole is unusable.
    Body(String),
    TooManyEvents { max: usize },
}

pub struct Parsed {
    pub events: Vec<NewEvent>,
    /// CLIProxyAPI control payloads (`{"refresh":true}`…), which carry no usage.
    pub ignored: usize,
}

/// A timestamp: RFC 3339 text (any offset) or epoch milliseconds.
#[derive(Debug)]
struct Ts(i64);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 timestamp or epoch milliseconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
                i64::try_from(v).map(Ts).map_err(|_| E::custom("epoch milliseconds out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
                if v < 0 {
                    return Err(E::custom("is before 1970-01-01"));
                }
                Ok(Ts(v))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Ts, E> {
                Err(E::custom("epoch milliseconds must be a whole number"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts, E> {
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    return v.parse::<i64>().map(Ts).map_err(|_| E::custom("epoch milliseconds out of range"));
                }
                let t = chrono::DateTime::parse_from_rfc3339(v)
                    .map_err(|e| E::custom(format!("is not an RFC 3339 timestamp ({e}): {}", shorten(v))))?;
                let ms = t.timestamp_millis();
                if ms < 0 {
                    return Err(E::custom("is before 1970-01-01"));
                }
                Ok(Ts(ms))
            }
        }
        d.deserialize_any(V)
    }
}

fn shorten(v: &str) -> String {
    if v.len() <= 40 {
        return format!("{v:?}");
    }
    let mut end = 40;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &v[..end])
}

/// Token counters under any of the accepted names.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenFields {
    // Tokenboard's buckets.
    input_uncached: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
    output: Option<u64>,
    reasoning: Option<u64>,
    unclassified: Option<u64>,
    // CLIProxyAPI's provider-native counters.
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cache_read_tokens: Option<u64>,
    cache_creation_tokens: Option<u64>,
    total_tokens: Option<u64>,
    cache_read_tokens_present: Option<bool>,
}

impl TokenFields {
    fn is_native_cpa(&self) -> bool {
        self.input_tokens.is_some()
            || self.output_tokens.is_some()
            || self.total_tokens.is_some()
            || self.cached_tokens.is_some()
            || self.reasoning_tokens.is_some()
    }
}

/// (One per parsed event, on the stack: boxing the fields would add an allocation per event.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum RawTokens {
    Total(u64),
    Fields(TokenFields),
}

impl<'de> Deserialize<'de> for RawTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawTokens, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTokens;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token count or an object of token buckets")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawTokens, E> {
                Ok(RawTokens::Total(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawTokens, E> {
                u64::try_from(v).map(RawTokens::Total).map_err(|_| E::custom("must not be negative"))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTokens, A::Error> {
                TokenFields::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawTokens::Fields)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Fail {
    status_code: Option<u16>,
    body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BreakdownIn {
    uncached_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BreakdownOut {
    non_reasoning_tokens: u64,
    reasoning_tokens: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Breakdown {
    quality: Option<String>,
    total_tokens: u64,
    input: BreakdownIn,
    output: BreakdownOut,
    unclassified_tokens: u64,
}

/// The union of every accepted shape's fields. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    event_id: Option<String>,
    ts: Option<Ts>,
    timestamp: Option<Ts>,
    method: Option<String>,
    endpoint: Option<String>,
    model: Option<String>,
    model_alias: Option<String>,
    alias: Option<String>,
    provider: Option<String>,
    credential: Option<String>,
    key: Option<String>,
    api_key: Option<String>,
    user: Option<String>,
    instance: Option<String>,
    status: Option<u16>,
    success: Option<bool>,
    failed: Option<bool>,
    error_class: Option<String>,
    error_message: Option<String>,
    error: Option<String>,
    tokens: Option<RawTokens>,
    quality: Option<String>,
    latency_ms: Option<u64>,
    duration: Option<u64>,
    ttft_ms: Option<u64>,
    stream: Option<bool>,
    request_id: Option<String>,
    // CLIProxyAPI.
    source: Option<String>,
    auth_index: Option<String>,
    fail: Option<Fail>,
    token_breakdown: Option<Breakdown>,
    response_headers: Option<HashMap<String, serde_json::Value>>,
    support_refresh: Option<bool>,
    refresh: Option<bool>,
}

impl Raw {
    fn is_cpa(&self) -> bool {
        self.token_breakdown.is_some()
            || self.fail.is_some()
            || matches!(&self.tokens, Some(RawTokens::Fields(t)) if t.is_native_cpa())
    }

    fn is_control(&self) -> bool {
        (self.support_refresh.is_some() || self.refresh.is_some()) && self.timestamp.is_none() && self.tokens.is_none()
    }
}

/// Maps raw events to engine events.
pub struct Mapper<'a> {
    pub fp: &'a Fingerprinter,
    pub now_ms: i64,
}

/// HTTP methods an endpoint string may start with (`"POST /v1/messages"`).
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

fn error_class_of(status: u16) -> &'static str {
    match status {
        0 => "no_response",
        401 | 403 => "auth",
        408 | 504 => "timeout",
        429 => "rate_limited",
        400..=499 => "client_error",
        500..=599 => "upstream_error",
        _ => "error",
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn parse_quality(q: &str) -> Option<Quality> {
    Quality::ALL.into_iter().find(|x| x.as_str() == q)
}

impl Mapper<'_> {
    fn map(&self, raw: Raw) -> Result<NewEvent, (String, String)> {
        if raw.is_cpa() {
            return Ok(self.map_cpa(raw));
        }
        let err = |field: &str, message: &str| (field.to_string(), message.to_string());
        let mut ev = NewEvent { event_id: raw.event_id, ..NewEvent::default() };
        ev.ts_ms = raw.ts.or(raw.timestamp).map_or(self.now_ms, |t| t.0);
        let status = raw.status;
        ev.success = match (raw.success, raw.failed) {
            (Some(s), _) => s,
            (None, Some(f)) => !f,
            (None, None) => status.is_none_or(|s| (100..400).contains(&s)),
        };
        ev.status = status.unwrap_or(if ev.success { 200 } else { 0 });
        if ev.status > 999 {
            return Err(err("status", "must be an HTTP status code (0–999)"));
        }
        let (tokens, implied_quality) = match raw.tokens {
            None => (Tokens::default(), Quality::Complete),
            Some(RawTokens::Total(t)) => (Tokens { unclassified: t, ..Tokens::default() }, Quality::Unclassified),
            Some(RawTokens::Fields(t)) => (
                Tokens {
                    input_uncached: t.input_uncached.unwrap_or(0),
                    cache_read: t.cache_read.unwrap_or(0),
                    cache_write: t.cache_write.unwrap_or(0),
                    output: t.output.unwrap_or(0),
                    reasoning: t.reasoning.unwrap_or(0),
                    unclassified: t.unclassified.unwrap_or(0),
                },
                Quality::Complete,
            ),
        };
        if tokens.to_array().iter().try_fold(0u64, |a, &t| a.checked_add(t)).is_none() {
            return Err(err("tokens", "the buckets add up to more than 2^64"));
        }
        ev.tokens = tokens;
        ev.quality = match raw.quality.as_deref() {
            None => implied_quality,
            Some(q) => parse_quality(q).ok_or_else(|| err("quality", "must be complete, inconsistent, unclassified or estimated"))?,
        };
        let latency = raw.latency_ms.or(raw.duration).unwrap_or(0);
        ev.latency_ms = u32::try_from(latency).map_err(|_| err(if raw.latency_ms.is_some() { "latency_ms" } else { "duration" }, "must be below 2^32 ms"))?;
        ev.ttft_ms = raw.ttft_ms.map(|t| u32::try_from(t).map_err(|_| err("ttft_ms", "must be below 2^32 ms"))).transpose()?;
        ev.stream = raw.stream.unwrap_or(false);
        ev.request_id = raw.request_id.filter(|s| !s.is_empty());
        ev.error_message = raw.error_message.or(raw.error).filter(|s| !s.is_empty());
        let mut endpoint = raw.endpoint.unwrap_or_default();
        let mut method = raw.method.unwrap_or_default();
        if method.is_empty() {
            (method, endpoint) = split_endpoint(endpoint);
        }
        ev.set_dim(Dim::Method, method.to_ascii_uppercase());
        ev.set_dim(Dim::Endpoint, endpoint);
        ev.set_dim(Dim::Model, raw.model.unwrap_or_default());
        ev.set_dim(Dim::ModelAlias, raw.model_alias.or(raw.alias).unwrap_or_default());
        ev.set_dim(Dim::Provider, raw.provider.unwrap_or_default());
        ev.set_dim(Dim::Credential, raw.credential.or(raw.auth_index).unwrap_or_default());
        let key = match raw.api_key.filter(|k| !k.is_empty()) {
            Some(secret) => self.fp.client_key_id(&secret),
            None => raw.key.unwrap_or_default(),
        };
        ev.set_dim(Dim::Key, key);
        let class = raw.error_class.unwrap_or_else(|| if ev.success { String::new() } else { error_class_of(ev.status).to_string() });
        ev.set_dim(Dim::ErrorClass, class);
        ev.set_dim(Dim::User, raw.user.unwrap_or_default());
        ev.set_dim(Dim::Instance, raw.instance.unwrap_or_default());
        Ok(ev)
    }

    /// PROTOCOL.md §6: accounting from `token_breakdown`, secrets fingerprinted, a natural key
    /// (§6.7) as the event id so a re-sent event is a duplicate.
    fn map_cpa(&self, raw: Raw) -> NewEvent {
        let ts_ms = raw.timestamp.or(raw.ts).map_or(self.now_ms, |t| t.0);
        let failed = raw.failed.unwrap_or(false);
        let fail = raw.fail.unwrap_or_default();
        let status = fail.status_code.unwrap_or(if failed { 500 } else { 200 });
        let native = match &raw.tokens {
            Some(RawTokens::Fields(t)) => Some(t),
            _ => None,
        };
        let (tokens, quality) = match &raw.token_breakdown {
            Some(b) => {
                let quality = match b.quality.as_deref() {
                    Some("complete") => Quality::Complete,
                    Some("inconsistent") => Quality::Inconsistent,
                    _ => Quality::Unclassified,
                };
                let t = Tokens {
                    input_uncached: b.input.uncached_tokens,
                    cache_read: b.input.cache_read_tokens,
                    cache_write: b.input.cache_write_tokens,
                    output: b.output.non_reasoning_tokens,
                    reasoning: b.output.reasoning_tokens,
                    unclassified: b.unclassified_tokens,
                };
                // A third-party breakdown whose parts miss tokens of its total: keep the
                // difference as unclassified rather than lose it.
                let missing = b.total_tokens.saturating_sub(t.total());
                if missing > 0 {
                    (Tokens { unclassified: t.unclassified + missing, ..t }, Quality::Unclassified)
                } else {
                    (t, quality)
                }
            }
            None => {
                let total = native.map_or(0, |t| {
                    t.total_tokens.filter(|&v| v > 0).unwrap_or_else(|| t.input_tokens.unwrap_or(0) + t.output_tokens.unwrap_or(0))
                });
                (Tokens { unclassified: total, ..Tokens::default() }, Quality::Unclassified)
            }
        };
        let source = raw.source.unwrap_or_default();
        let auth_index = raw.auth_index.unwrap_or_default();
        let credential = if !auth_index.is_empty() {
            auth_index.clone()
        } else if !source.is_empty() {
            self.fp.client_key_id(&source)
        } else {
            String::new()
        };
        let key = raw.api_key.filter(|k| !k.is_empty()).map(|k| self.fp.client_key_id(&k)).unwrap_or_default();
        let stream = raw.stream.unwrap_or_else(|| {
            raw.response_headers.as_ref().is_some_and(|h| {
                h.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.to_string().contains("text/event-stream"))
            })
        });
        let (method, endpoint) = split_endpoint(raw.endpoint.unwrap_or_default());
        let model = raw.model.unwrap_or_default();
        let request_id = raw.request_id.unwrap_or_default();
        let natural_key = format!(
            "{ts_ms}|{request_id}|{auth_index}|{model}|{failed}|{status}|{}",
            native.and_then(|t| t.total_tokens).unwrap_or(tokens.total())
        );
        let event_id = raw.event_id.unwrap_or_else(|| format!("cpa:{}", hex::encode(&Sha256::digest(natural_key.as_bytes())[..16])));
        let mut ev = NewEvent {
            event_id: Some(event_id),
            ts_ms,
            status,
            success: !failed,
            tokens,
            quality,
            latency_ms: raw.latency_ms.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
            // 0 means "not measured" in CLIProxyAPI.
            ttft_ms: raw.ttft_ms.filter(|&t| t > 0).map(|t| t.min(u64::from(u32::MAX)) as u32),
            stream,
            request_id: (!request_id.is_empty()).then_some(request_id),
            error_message: fail.body.filter(|b| failed && !b.is_empty()).map(|b| truncate(b, tokenboard_engine::event::ERROR_MESSAGE_BYTES_MAX)),
            ..NewEvent::default()
        };
        ev.set_dim(Dim::Method, method);
        ev.set_dim(Dim::Endpoint, endpoint);
        ev.set_dim(Dim::ModelAlias, raw.alias.or(raw.model_alias).unwrap_or_default());
        ev.set_dim(Dim::Model, model);
        ev.set_dim(Dim::Provider, raw.provider.unwrap_or_default());
        ev.set_dim(Dim::Credential, credential);
        ev.set_dim(Dim::Key, key);
        ev.set_dim(Dim::ErrorClass, if failed { error_class_of(status) } else { "" });
        ev.set_dim(Dim::User, raw.user.unwrap_or_default());
        ev.set_dim(Dim::Instance, raw.instance.unwrap_or_default());
        ev
    }

    /// Parses and maps one JSON object; `Ok(None)` for a control payload.
    pub fn one(&self, json: &[u8]) -> Result<Option<NewEvent>, (String, String)> {
        let raw: Raw = match serde_json::from_slice(json) {
            Ok(r) => r,
            Err(_) => {
                // Parse again, tracking the path, to name the field.
                let mut de = serde_json::Deserializer::from_slice(json);
                return Err(match serde_path_to_error::deserialize::<_, Raw>(&mut de) {
                    Ok(_) => (String::new(), "is not valid JSON".to_string()),
                    Err(e) => {
                        let path = e.path().to_string();
                        let field = if path == "." || path == "?" { String::new() } else { path };
                        (field, clean_serde_message(&e.into_inner().to_string()))
                    }
                });
            }
        };
        if raw.is_control() {
            return Ok(None);
        }
        let ev = self.map(raw)?;
        ev.validate().map_err(|e| (e.field.to_string(), e.message))?;
        Ok(Some(ev))
    }

    /// Parses a whole body: one object, an array, or NDJSON (`ndjson` forces the last).
    pub fn parse_body(&self, body: &[u8], ndjson: bool, max_events: usize) -> Result<Parsed, BodyError> {
        let text = trim_ascii(body);
        if text.is_empty() {
            return Err(BodyError::Body("the body is empty; send a JSON event, a JSON array or NDJSON".into()));
        }
        let items: Vec<&[u8]> = if !ndjson && text[0] == b'[' {
            let arr: Vec<&RawValue> = serde_json::from_slice(text).map_err(|e| BodyError::Body(format!("the body is not a JSON array of events: {}", clean_serde_message(&e.to_string()))))?;
            if arr.len() > max_events {
                return Err(BodyError::TooManyEvents { max: max_events });
            }
            arr.into_iter().map(|r| r.get().as_bytes()).collect()
        } else if !ndjson && serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok() {
            vec![text]
        } else {
            let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').map(trim_ascii).filter(|l| !l.is_empty()).collect();
            if lines.len() > max_events {
                return Err(BodyError::TooManyEvents { max: max_events });
            }
            lines
        };
        let mut events = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        let mut ignored = 0;
        for (index, item) in items.iter().enumerate() {
            if item.first() != Some(&b'{') {
                push_error(&mut errors, index, "", "each event must be a JSON object");
                continue;
            }
            match self.one(item) {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => ignored += 1,
                Err((field, message)) => push_error(&mut errors, index, &field, &message),
            }
        }
        if !errors.is_empty() {
            return Err(BodyError::Items(errors));
        }
        Ok(Parsed { events, ignored })
    }
}

fn push_error(errors: &mut Vec<ItemError>, index: usize, field: &str, message: &str) {
    if errors.len() < ERRORS_MAX {
        errors.push(ItemError { index, field: field.to_string(), message: message.to_string() });
    }
}

/// Splits `"POST /v1/messages"` into method and path; anything else is all path.
fn split_endpoint(endpoint: String) -> (String, String) {
    if let Some((m, rest)) = endpoint.split_once(' ')
        && METHODS.contains(&m)
    {
        return (m.to_string(), rest.trim().to_string());
    }
    (String::new(), endpoint)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end]
}

/// serde's message without the position suffix, which means nothing to a caller of a batch.
fn clean_serde_message(m: &str) -> String {
    let m = match m.find(" at line ") {
        Some(i) => &m[..i],
        None => m,
    };
    m.replace("expected u64", "expected a whole number ≥ 0")
        .replace("expected u16", "expected an HTTP status code (0–999)")
        .replace("invalid value: integer", "invalid value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(fp: &Fingerprinter) -> Mapper<'_> {
        Mapper { fp, now_ms: 1_700_000_000_000 }
    }

    fn sample(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi").join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn the_three_shapes_map() {
        let fp = Fingerprinter::fixed([3; 32]);
        let m = mapper(&fp);
        let body = br#"{"ts":"2026-08-22T22:11:25.73+08:00","method":"post","endpoint":"/v1/chat","model":"m","api_key":"sk-secret-value-1234","tokens":{"input_uncached":5,"cache_read":2,"output":7,"reasoning":1},"latency_ms":12,"ttft_ms":3,"stream":true,"event_id":"e1"}
{"method":"POST","endpoint":"/v1/x","model":"old","status":502,"tokens":40,"duration":99}"#;
        let p = m.parse_body(body, true, 10).unwrap();
        let [a, b] = &p.events[..] else { panic!() };
        assert_eq!(a.ts_ms, 1_787_407_885_730);
        assert_eq!((a.dim(Dim::Method), a.tokens.total(), a.ttft_ms, a.stream), ("POST", 15, Some(3), true));
        assert!(a.dim(Dim::Key).starts_with("sk-s…1234#"), "{}", a.dim(Dim::Key));
        assert_eq!((b.status, b.success, b.tokens.unclassified, b.quality, b.latency_ms), (502, false, 40, Quality::Unclassified, 99));
        assert_eq!((b.ts_ms, b.dim(Dim::ErrorClass)), (1_700_000_000_000, "upstream_error"));

        let c = m.parse_body(&sample("event-codex-stream-cached-reasoning.json"), false, 10).unwrap().events.remove(0);
        assert_eq!(c.tokens, Tokens { input_uncached: 2277, cache_read: 6144, cache_write: 0, output: 453, reasoning: 640, unclassified: 0 });
        assert_eq!((c.dim(Dim::Method), c.dim(Dim::Endpoint), c.dim(Dim::Credential)), ("POST", "/v1/chat/completions", "9b1e4c2a7d3f0e58"));
        assert_eq!((c.latency_ms, c.ttft_ms, c.stream, c.quality), (5234, Some(812), true, Quality::Complete));
        assert!(c.event_id.as_deref().unwrap().starts_with("cpa:"));
        assert!(!format!("{c:?}").contains("sk-test-client-alpha-0001"));
        assert!(!format!("{c:?}").contains("dev.alpha@example.com"));

        let f = m.parse_body(&sample("event-openai-compat-failed-429.json"), false, 10).unwrap().events.remove(0);
        assert_eq!((f.status, f.success, f.dim(Dim::ErrorClass)), (429, false, "rate_limited"));
        assert!(f.error_message.is_some());
    }

    #[test]
    fn every_sample_event_maps_and_totals_match_the_breakdown() {
        let fp = Fingerprinter::fixed([3; 32]);
        let m = mapper(&fp);
        let text = sample("usage-events.ndjson");
        let p = m.parse_body(&text, true, 1000).unwrap();
        assert!(!p.events.is_empty());
        for (line, ev) in String::from_utf8(text).unwrap().lines().filter(|l| !l.trim().is_empty()).zip(&p.events) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(total) = v["token_breakdown"]["total_tokens"].as_u64() {
                assert_eq!(ev.tokens.total(), total, "{line}");
            }
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let fp = Fingerprinter::fixed([3; 32]);
        let m = mapper(&fp);
        let cases: [(&[u8], &str); 7] = [
            (br#"{"tokens":{"output":-5}}"#, "tokens.output"),
            (br#"{"status":"ok"}"#, "status"),
            (br#"{"ts":"yesterday"}"#, "ts"),
            (br#"{"quality":"great"}"#, "quality"),
            (br#"{"latency_ms":99999999999}"#, "latency_ms"),
            (br#"{"tokens":-1}"#, "tokens"),
            (br#"{"model":5}"#, "model"),
        ];
        for (body, field) in cases {
            match m.parse_body(body, false, 10) {
                Err(BodyError::Items(e)) => assert_eq!(e[0].field, field, "{}: {e:?}", String::from_utf8_lossy(body)),
                _ => panic!("{} was accepted", String::from_utf8_lossy(body)),
            }
        }
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(300));
        assert!(matches!(m.parse_body(long.as_bytes(), false, 10), Err(BodyError::Items(e)) if e[0].field == "model"));
        assert!(matches!(m.parse_body(b"{\"model\":", false, 10), Err(BodyError::Items(_))));
        assert!(matches!(m.parse_body(b"[1,2]", false, 10), Err(BodyError::Items(e)) if e.len() == 2));
        assert!(matches!(m.parse_body(b"{}\n{}\n{}", false, 2), Err(BodyError::TooManyEvents { max: 2 })));
        assert!(matches!(m.parse_body(b"  ", false, 2), Err(BodyError::Body(_))));
        let p = m.parse_body(b"{\"support_refresh\":true}\n{\"model\":\"a\"}", false, 5).unwrap();
        assert_eq!((p.events.len(), p.ignored), (1, 1));
    }
}
