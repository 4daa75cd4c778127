//! The console API's reads and the key routes.
//!
//! Every read takes `from`, `to` (RFC 3339 or epoch ms), `tz` (IANA) and the filters `model`,
//! `key` (a client key id as the log shows it, or `key_id`, a managed key's id), `endpoint`,
//! `provider`, `credential`, `status` (a code such as `429`, a class such as `5xx`, or `error`).
//! Unfiltered reads answer from the engine's views; filtered ones from a slice (private views of
//! the matching events, built from the indexes).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{Value, json};
use tokenboard_engine::views::Agg;
use tokenboard_engine::{Dim, Engine, Granularity, Group, Histogram, Interner, LogFilter, StatusFilter, StoredEvent, Summary, Sym, TimeRange, TopBy, TrendBucket};

use crate::http::{ApiError, AppState, Shared, authorize, now_ms, ok};
use crate::keys::{KeyPatch, KeyRecord, KeyStore, Need, Scope};

pub type Params = HashMap<String, String>;

/// The parameters every read shares.
#[derive(Clone, Debug)]
pub struct ReadQuery {
    pub range: TimeRange,
    pub tz: Tz,
    pub filter: LogFilter,
    /// Some filter was given.
    pub filtered: bool,
    /// A filter names a value the log never held: the answer is empty.
    pub nothing: bool,
}

fn param<'a>(q: &'a Params, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

pub fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::field(name, "must be an RFC 3339 timestamp (2026-11-30T08:00:00+08:00) or epoch milliseconds"))
}

pub fn parse_int(q: &Params, name: &str, min: i64, max: i64, default: i64) -> Result<i64, ApiError> {
    match param(q, name) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::field(name, format!("must be a whole number from {min} to {max}"))),
        },
    }
}

pub fn parse_tz(st: &AppState, q: &Params) -> Result<Tz, ApiError> {
    match param(q, "tz") {
        None => Ok(st.config.timezone()),
        Some(v) => v.parse::<Tz>().map_err(|_| ApiError::field("tz", "must be an IANA time zone name such as UTC, Asia/Shanghai or America/New_York")),
    }
}

const FILTERS: [(&str, Dim); 5] =
    [("model", Dim::Model), ("endpoint", Dim::Endpoint), ("provider", Dim::Provider), ("credential", Dim::Credential), ("key", Dim::Key)];

pub fn parse_read(st: &AppState, q: &Params) -> Result<ReadQuery, ApiError> {
    let from = param(q, "from").map(|v| parse_time("from", v)).transpose()?;
    let to = param(q, "to").map(|v| parse_time("to", v)).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::field("to", "must be after from"));
    }
    let tz = parse_tz(st, q)?;
    let mut filter = LogFilter { from_ms: from, to_ms: to, ..LogFilter::default() };
    let mut filtered = false;
    let mut nothing = false;
    let mut key_value = param(q, "key").map(str::to_string);
    if let Some(id) = param(q, "key_id") {
        let id: u64 = id.parse().map_err(|_| ApiError::field("key_id", "must be a key id"))?;
        let k = st.keys.list().into_iter().find(|(k, _)| k.id == id).ok_or_else(|| ApiError::field("key_id", "no such key"))?;
        key_value = Some(k.0.client_key_id);
    }
    for (name, dim) in FILTERS {
        let v = if dim == Dim::Key { key_value.as_deref() } else { param(q, name) };
        let Some(v) = v else { continue };
        if v.len() > tokenboard_engine::event::DIMENSION_BYTES_MAX {
            return Err(ApiError::field(name, "is longer than any stored value"));
        }
        filtered = true;
        let sym = st.engine.lookup(v);
        nothing |= sym.is_none();
        let sym = sym.unwrap_or(Sym(u32::MAX));
        match dim {
            Dim::Model => filter.model = Some(sym),
            Dim::Endpoint => filter.endpoint = Some(sym),
            Dim::Provider => filter.provider = Some(sym),
            Dim::Credential => filter.credential = Some(sym),
            _ => filter.key = Some(sym),
        }
    }
    if let Some(s) = param(q, "status") {
        filtered = true;
        filter.status = Some(parse_status(s)?);
    }
    let range = TimeRange::new(from.unwrap_or(i64::MIN / 4), to.unwrap_or(i64::MAX / 4));
    Ok(ReadQuery { range, tz, filter, filtered, nothing })
}

fn parse_status(s: &str) -> Result<StatusFilter, ApiError> {
    let lower = s.to_ascii_lowercase();
    if lower == "error" || lower == "errors" || lower == "failed" {
        return Ok(StatusFilter::Errors);
    }
    if lower.len() == 3
        && lower.ends_with("xx")
        && let Some(c) = lower[..1].parse::<u8>().ok().filter(|c| (1..=5).contains(c))
    {
        return Ok(StatusFilter::Class(c));
    }
    match s.parse::<u16>() {
        Ok(c) if c <= 999 => Ok(StatusFilter::Code(c)),
        _ => Err(ApiError::field("status", "must be a status code (429), a class (5xx) or error")),
    }
}

/// The views a read answers from. (One per read, on the stack: boxing the slice would only add
/// an allocation.)
#[allow(clippy::large_enum_variant)]
enum Source {
    Engine(Engine),
    Slice(tokenboard_engine::Slice),
    Empty,
}

impl Source {
    fn of(st: &AppState, rq: &ReadQuery) -> Source {
        if rq.nothing {
            Source::Empty
        } else if rq.filtered {
            Source::Slice(st.engine.slice(&rq.filter, rq.range))
        } else {
            Source::Engine(st.engine.clone())
        }
    }

    fn summary(&self, range: TimeRange) -> Summary {
        match self {
            Source::Engine(e) => e.summary(range),
            Source::Slice(s) => s.summary(range),
            Source::Empty => Summary::default(),
        }
    }

    fn top(&self, group: Group, range: TimeRange, n: usize) -> (Vec<(u32, Agg)>, Agg) {
        match self {
            Source::Engine(e) => e.top(group, range, n, TopBy::Calls),
            Source::Slice(s) => s.top(group, range, n, TopBy::Calls),
            Source::Empty => (Vec::new(), Agg::default()),
        }
    }

    fn trend(&self, range: TimeRange, g: Granularity, tz: Tz) -> tokenboard_engine::Result<Vec<TrendBucket>> {
        match self {
            Source::Engine(e) => e.trend(range, g, tz),
            Source::Slice(s) => s.trend(range, g, tz),
            Source::Empty => Ok(tokenboard_engine::Views::new().trend(range, g, tz, &mut |_: TimeRange, _: &mut dyn FnMut(&StoredEvent)| {})?),
        }
    }
}

/// Runs a read off the async workers; filtered reads take a slot.
async fn blocking<T: Send + 'static>(st: &Shared, rq: &ReadQuery, f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    if !rq.filtered || rq.nothing {
        // Answered from the views in microseconds: no thread hop.
        return f();
    }
    in_slot(st, f).await
}

/// Runs a read on a blocking thread once it has one of the read slots.
async fn in_slot<T: Send + 'static>(st: &Shared, f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    let _permit = st.slice_slots.clone().acquire_owned().await.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("read failed: {e}")))?
}

fn tokens_json(t: &[u64; 6]) -> Value {
    json!({
        "input_uncached": t[0], "cache_read": t[1], "cache_write": t[2],
        "output": t[3], "reasoning": t[4], "unclassified": t[5],
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn agg_json(name: &str, a: &Agg) -> Value {
    json!({
        "name": name,
        "call_count": a.calls,
        "token_count": a.total_tokens(),
        "input_tokens": a.tokens[0] + a.tokens[1] + a.tokens[2],
        "output_tokens": a.tokens[3] + a.tokens[4],
        "tokens": tokens_json(&a.tokens),
        "error_count": a.errors,
        "success_rate": a.success_rate().map(|r| round2(r * 100.0)),
        "avg_time": a.avg_latency_ms().map(round2),
        "avg_ttft": a.avg_ttft_ms().map(round2),
        "stream_count": a.stream_calls,
    })
}

fn percentiles(h: &Histogram) -> Value {
    json!({ "p50": h.quantile(0.5), "p95": h.quantile(0.95), "p99": h.quantile(0.99), "count": h.count() })
}

pub fn status_class_name(c: u32) -> String {
    if c == 0 { "none".to_string() } else { format!("{c}xx") }
}

/// The display name of a group key.
fn group_name(group: Group, k: u32, interner: &Interner) -> String {
    match group {
        Group::StatusClass => status_class_name(k),
        _ => interner.resolve(Sym(k)).to_string(),
    }
}

fn summary_json(s: &Summary) -> Value {
    let a = &s.agg;
    json!({
        "api_call_count": a.calls,
        "total_tokens": a.total_tokens(),
        "input_tokens": a.tokens[0] + a.tokens[1] + a.tokens[2],
        "output_tokens": a.tokens[3] + a.tokens[4],
        "tokens": tokens_json(&a.tokens),
        "success_count": a.calls - a.errors,
        "error_count": a.errors,
        "success_rate": a.success_rate().map(|r| round2(r * 100.0)),
        "avg_time": a.avg_latency_ms().map(round2),
        "latency": percentiles(&s.latency),
        "ttft": percentiles(&s.ttft),
        "avg_ttft": a.avg_ttft_ms().map(round2),
        "stream_count": a.stream_calls,
        "quality": {
            "complete": a.quality_calls[0], "inconsistent": a.quality_calls[1],
            "unclassified": a.quality_calls[2], "estimated": a.quality_calls[3],
        },
    })
}

const STAT_GROUPS: [(&str, Group); 6] = [
    ("models", Group::Model),
    ("keys", Group::Key),
    ("endpoints", Group::Endpoint),
    ("providers", Group::Provider),
    ("credentials", Group::Credential),
    ("status_classes", Group::StatusClass),
];

/// The stats document (also the `stats` part of the JSON export).
pub fn stats_document(st: &AppState, rq: &ReadQuery, top: usize) -> Value {
    let src = Source::of(st, rq);
    let mut doc = summary_json(&src.summary(rq.range));
    for (name, group) in STAT_GROUPS {
        let (items, other) = src.top(group, rq.range, top);
        let mut list: Vec<Value> = st.engine.with_interner(|i| items.iter().map(|(k, a)| agg_json(&group_name(group, *k, i), a)).collect());
        if group == Group::Key {
            for item in &mut list {
                annotate_key(&st.keys, item);
            }
        }
        if other.calls > 0 {
            let mut o = agg_json("other", &other);
            o["other"] = json!(true);
            list.push(o);
        }
        doc[name] = Value::Array(list);
    }
    doc["range"] = range_json(rq);
    doc
}

/// Adds the managed key's id and name to a key row.
fn annotate_key(keys: &KeyStore, item: &mut Value) {
    if let Some(k) = item["name"].as_str().and_then(|n| keys.by_client_key_id(n)) {
        item["key_id"] = json!(k.id);
        item["key_name"] = json!(k.name);
    }
}

fn range_json(rq: &ReadQuery) -> Value {
    json!({
        "from": rq.filter.from_ms,
        "to": rq.filter.to_ms,
        "tz": rq.tz.name(),
    })
}

pub async fn stats(State(st): State<Shared>, Query(q): Query<Params>) -> Result<Response, ApiError> {
    let rq = parse_read(&st, &q)?;
    let top = parse_int(&q, "top", 1, 1000, 10)? as usize;
    let st2 = st.clone();
    let rq2 = rq.clone();
    let doc = blocking(&st, &rq, move || Ok(stats_document(&st2, &rq2, top))).await?;
    Ok(ok(doc))
}

fn granularity(q: &Params) -> Result<Granularity, ApiError> {
    Ok(match param(q, "granularity").unwrap_or("day") {
        "minute" => Granularity::Minute,
        "hour" => Granularity::Hour,
        "day" => Granularity::Day,
        "week" => Granularity::Week,
        "month" => Granularity::Month,
        _ => return Err(ApiError::field("granularity", "must be minute, hour, day, week or month")),
    })
}

fn label(ms: i64, g: Granularity, tz: Tz) -> String {
    let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default().with_timezone(&tz);
    match g {
        Granularity::Minute => t.format("%Y-%m-%d %H:%M").to_string(),
        Granularity::Hour => t.format("%Y-%m-%d %H:00").to_string(),
        Granularity::Day | Granularity::Week => t.format("%Y-%m-%d").to_string(),
        Granularity::Month => t.format("%Y-%m").to_string(),
    }
}

/// Midnight, local time in `tz`, of the day `days_back` before the day holding `ms`.
fn local_midnight(ms: i64, days_back: i64, tz: Tz) -> i64 {
    let local = Utc.timestamp_millis_opt(ms).single().unwrap_or_default().with_timezone(&tz).date_naive();
    let day = local - chrono::Duration::days(days_back);
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A zone may skip midnight; take the earliest instant of that local day.
    tz.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(midnight + chrono::Duration::hours(1))).earliest())
        .map_or(ms, |t| t.timestamp_millis())
}

pub async fn usage_trend(State(st): State<Shared>, Query(q): Query<Params>) -> Result<Response, ApiError> {
    let mut rq = parse_read(&st, &q)?;
    let g = granularity(&q)?;
    if param(&q, "from").is_none() {
        // The last `days` local days, today included.
        let days = parse_int(&q, "days", 1, 90, 7)?;
        let now = now_ms();
        let to = rq.filter.to_ms.unwrap_or_else(|| local_midnight(now, -1, rq.tz));
        let from = local_midnight(to - 1, days - 1, rq.tz);
        rq.range = TimeRange::new(from, to);
        rq.filter.from_ms = Some(from);
        rq.filter.to_ms = Some(to);
    } else if param(&q, "days").is_some() {
        return Err(ApiError::field("days", "give either days or from/to, not both"));
    } else if rq.filter.to_ms.is_none() {
        let to = now_ms() + 1;
        if to <= rq.range.from_ms {
            return Err(ApiError::field("from", "must be in the past when to is not given"));
        }
        rq.range.to_ms = to;
        rq.filter.to_ms = Some(to);
    }
    let st2 = st.clone();
    let rq2 = rq.clone();
    let doc = blocking(&st, &rq, move || {
        let src = Source::of(&st2, &rq2);
        let buckets = src.trend(rq2.range, g, rq2.tz).map_err(|e| match e {
            tokenboard_engine::Error::View(v) => ApiError::field("granularity", format!("{v}; choose a coarser granularity or a shorter range")),
            e => ApiError::engine(e),
        })?;
        Ok(trend_json(&buckets, g, &rq2))
    })
    .await?;
    Ok(ok(doc))
}

/// The longest history one request may span.
const HISTORY_DAYS_MAX: i64 = 3660;

fn parse_day(name: &str, v: &str) -> Result<i64, ApiError> {
    let date = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| ApiError::field(name, "must be a UTC date such as 2026-11-30"))?;
    Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis().div_euclid(DAY_MS))
}

const DAY_MS: i64 = 86_400_000;

/// `GET /api/console/history`: calls and tokens per UTC day or month over up to ten years, with
/// what retention deleted from the log counted from the daily rollups, and the same per model,
/// key, provider, credential or status class over the range.
pub async fn history(State(st): State<Shared>, Query(q): Query<Params>) -> Result<Response, ApiError> {
    use tokenboard_engine::rollup::RollupGroup;
    let g = match param(&q, "granularity").unwrap_or("day") {
        "day" => Granularity::Day,
        "month" => Granularity::Month,
        _ => return Err(ApiError::field("granularity", "must be day or month (history is kept per UTC day)")),
    };
    let utc = chrono_tz::UTC;
    let group = match param(&q, "group") {
        None => RollupGroup::All,
        Some("model") => RollupGroup::Model,
        Some("key") => RollupGroup::Key,
        Some("provider") => RollupGroup::Provider,
        Some("credential") => RollupGroup::Credential,
        Some("status") => RollupGroup::StatusClass,
        Some(_) => return Err(ApiError::field("group", "must be model, key, provider, credential or status")),
    };
    let top = parse_int(&q, "top", 1, 1000, 20)? as usize;
    let today = now_ms().div_euclid(DAY_MS);
    let (from, to) = match (param(&q, "from"), param(&q, "to")) {
        (None, None) => {
            let days = parse_int(&q, "days", 1, HISTORY_DAYS_MAX, 90)?;
            (today + 1 - days, today + 1)
        }
        (_, _) if param(&q, "days").is_some() => return Err(ApiError::field("days", "give either days or from/to, not both")),
        (from, to) => {
            let given_to = to.map(|v| parse_day("to", v)).transpose()?;
            let to = given_to.unwrap_or(today) + 1;
            let from = match from {
                Some(v) => parse_day("from", v)?,
                None => to - 90,
            };
            if from >= to {
                return Err(match given_to {
                    Some(_) => ApiError::field("to", "must be on or after from"),
                    None => ApiError::field("from", "must not be after today (UTC) when to is not given"),
                });
            }
            if to - from > HISTORY_DAYS_MAX {
                return Err(ApiError::field("from", format!("the range may span at most {HISTORY_DAYS_MAX} days")));
            }
            (from, to)
        }
    };
    // Cheap on whole days, but a read off the async workers all the same: it takes a slot.
    let st2 = st.clone();
    let doc = in_slot(&st, move || {
        let h = st2.engine.history(from, to, g == Granularity::Month, group).map_err(ApiError::engine)?;
        let series = |f: &dyn Fn(&tokenboard_engine::rollup::HistoryBucket) -> Value| Value::Array(h.buckets.iter().map(f).collect());
        let mut rows: Vec<Value> = Vec::new();
        // The rest holds the names the rollups did not keep on some days: it joins "other".
        let mut other = tokenboard_engine::rollup::HistoryRow { name: "other".to_string(), rollups: h.rest.clone(), ..Default::default() };
        for (i, r) in h.breakdown.iter().enumerate() {
            if i >= top {
                other.log.merge(&r.log);
                other.rollups.merge(&r.rollups);
                continue;
            }
            let name = if group == RollupGroup::StatusClass { status_class_name(r.name.parse().unwrap_or(0)) } else { r.name.clone() };
            let mut row = history_row_json(&name, r);
            if group == RollupGroup::Key {
                annotate_key(&st2.keys, &mut row);
            }
            rows.push(row);
        }
        if other.log.calls + other.rollups.calls > 0 {
            let mut o = history_row_json("other", &other);
            o["other"] = json!(true);
            rows.push(o);
        }
        let status = st2.engine.status();
        Ok(json!({
            "labels": series(&|b| json!(label(b.start_ms, g, utc))),
            "starts": series(&|b| json!(b.start_ms)),
            "ends": series(&|b| json!(b.end_ms)),
            "callData": series(&|b| json!(b.log.calls + b.rollups.calls)),
            "tokenData": series(&|b| json!(b.log.total_tokens() + b.rollups.total_tokens())),
            "errorData": series(&|b| json!(b.log.errors + b.rollups.errors)),
            "rolledUp": {
                "callData": series(&|b| json!(b.rollups.calls)),
                "tokenData": series(&|b| json!(b.rollups.total_tokens())),
            },
            "rows": rows,
            "group": param(&q, "group"),
            "granularity": format!("{g:?}").to_lowercase(),
            "range": { "from": label(from * DAY_MS, Granularity::Day, utc), "to": label((to - 1) * DAY_MS, Granularity::Day, utc), "tz": "UTC" },
            "log_oldest": status.oldest_ts_ms.map(|t| format_ts(t, utc)),
        }))
    })
    .await?;
    Ok(ok(doc))
}

fn history_row_json(name: &str, r: &tokenboard_engine::rollup::HistoryRow) -> Value {
    let t = r.total();
    json!({
        "name": name,
        "call_count": t.calls,
        "token_count": t.total_tokens(),
        "tokens": tokens_json(&t.tokens),
        "error_count": t.errors,
        "success_rate": (t.calls > 0).then(|| round2(t.calls.saturating_sub(t.errors) as f64 * 100.0 / t.calls as f64)),
        "avg_time": (t.calls > 0).then(|| round2(t.latency_sum_ms as f64 / t.calls as f64)),
        "rolled_up": { "call_count": r.rollups.calls, "token_count": r.rollups.total_tokens() },
    })
}

fn trend_json(buckets: &[TrendBucket], g: Granularity, rq: &ReadQuery) -> Value {
    let series = |f: &dyn Fn(&TrendBucket) -> Value| Value::Array(buckets.iter().map(f).collect());
    let bucket_series = |i: usize| series(&|b| json!(b.agg.tokens[i]));
    json!({
        "labels": series(&|b| json!(label(b.start_ms, g, rq.tz))),
        "tokenData": series(&|b| json!(b.agg.total_tokens())),
        "callData": series(&|b| json!(b.agg.calls)),
        "errorData": series(&|b| json!(b.agg.errors)),
        "tokens": {
            "input_uncached": bucket_series(0), "cache_read": bucket_series(1), "cache_write": bucket_series(2),
            "output": bucket_series(3), "reasoning": bucket_series(4), "unclassified": bucket_series(5),
        },
        "latency": {
            "p50": series(&|b| json!(b.latency.quantile(0.5))),
            "p95": series(&|b| json!(b.latency.quantile(0.95))),
            "p99": series(&|b| json!(b.latency.quantile(0.99))),
            "avg": series(&|b| json!(b.agg.avg_latency_ms().map(round2))),
        },
        "ttft": {
            "p50": series(&|b| json!(b.ttft.quantile(0.5))),
            "p95": series(&|b| json!(b.ttft.quantile(0.95))),
            "p99": series(&|b| json!(b.ttft.quantile(0.99))),
        },
        "starts": series(&|b| json!(b.start_ms)),
        "ends": series(&|b| json!(b.end_ms)),
        "granularity": format!("{g:?}").to_lowercase(),
        "range": { "from": rq.range.from_ms, "to": rq.range.to_ms, "tz": rq.tz.name() },
    })
}

/// One log row: the original fields (`id`, `timestamp`, `method`, `endpoint`, `status`, `tokens`,
/// `duration`, `model`, `error`) and every other stored field.
#[derive(Serialize)]
pub struct LogRow {
    pub id: u64,
    pub timestamp: String,
    pub ts_ms: i64,
    pub method: Arc<str>,
    pub endpoint: Arc<str>,
    pub status: u16,
    pub success: bool,
    pub tokens: u64,
    pub duration: u32,
    pub model: Arc<str>,
    pub error: String,
    pub model_alias: Arc<str>,
    pub provider: Arc<str>,
    pub credential: Arc<str>,
    pub key: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub error_class: Arc<str>,
    pub input_uncached: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    pub unclassified: u64,
    pub quality: &'static str,
    pub ttft_ms: Option<u32>,
    pub stream: bool,
    pub request_id: Option<Box<str>>,
    pub user: Arc<str>,
    pub instance: Arc<str>,
    pub event_id: Option<Box<str>>,
    pub ts_clamped: bool,
}

pub fn format_ts(ms: i64, tz: Tz) -> String {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default().with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn log_row(ev: &StoredEvent, interner: &Interner, keys: &KeyStore, tz: Tz) -> LogRow {
    let d = |dim: Dim| interner.resolve_arc(ev.dim(dim));
    let key = d(Dim::Key);
    let key_name = if key.is_empty() { None } else { keys.by_client_key_id(&key).map(|k| k.name) };
    LogRow {
        id: ev.seq,
        timestamp: format_ts(ev.ts_ms, tz),
        ts_ms: ev.ts_ms,
        method: d(Dim::Method),
        endpoint: d(Dim::Endpoint),
        status: ev.status,
        success: ev.success,
        tokens: ev.tokens.total(),
        duration: ev.latency_ms,
        model: d(Dim::Model),
        error: ev.error_message.as_deref().unwrap_or("").to_string(),
        model_alias: d(Dim::ModelAlias),
        provider: d(Dim::Provider),
        credential: d(Dim::Credential),
        key,
        key_name,
        error_class: d(Dim::ErrorClass),
        input_uncached: ev.tokens.input_uncached,
        cache_read: ev.tokens.cache_read,
        cache_write: ev.tokens.cache_write,
        output: ev.tokens.output,
        reasoning: ev.tokens.reasoning,
        unclassified: ev.tokens.unclassified,
        quality: ev.quality.as_str(),
        ttft_ms: ev.ttft_ms,
        stream: ev.stream,
        request_id: ev.request_id.clone(),
        user: d(Dim::User),
        instance: d(Dim::Instance),
        event_id: ev.event_id.clone(),
        ts_clamped: ev.ts_clamped,
    }
}

pub async fn logs(State(st): State<Shared>, Query(q): Query<Params>) -> Result<Response, ApiError> {
    let rq = parse_read(&st, &q)?;
    let limit = parse_int(&q, "limit", 1, 1000, 100)? as usize;
    if let Some(m) = param(&q, "min_latency_ms") {
        let _ = m.parse::<u32>().map_err(|_| ApiError::field("min_latency_ms", "must be a whole number of milliseconds"))?;
    }
    let cursor = match param(&q, "cursor") {
        None => None,
        Some(c) => Some(c.parse::<u64>().ok().filter(|&c| c > 0).ok_or_else(|| ApiError::field("cursor", "must be a next_cursor value from a previous page"))?),
    };
    let mut filter = rq.filter.clone();
    filter.min_latency_ms = param(&q, "min_latency_ms").and_then(|m| m.parse().ok());
    let st2 = st.clone();
    let tz = rq.tz;
    let nothing = rq.nothing;
    // A page is at most 1000 rows read through the indexes: answered inline.
    let (rows, next) = if nothing {
        (Vec::new(), None)
    } else {
        let page = st2.engine.logs(&filter, cursor, limit);
        let rows: Vec<LogRow> = st2.engine.with_interner(|i| page.events.iter().map(|e| log_row(e, i, &st2.keys, tz)).collect());
        (rows, page.next_cursor)
    };
    Ok(axum::response::IntoResponse::into_response(axum::Json(json!({ "code": 0, "data": rows, "next_cursor": next.map(|c| c.to_string()) }))))
}

/// Usage per client key id, all time, for the key list.
pub fn key_usage(engine: &Engine) -> HashMap<u32, Agg> {
    engine.breakdown(Group::Key, TimeRange::new(i64::MIN / 4, i64::MAX / 4)).into_iter().collect()
}

/// A key as the API shows it: never the secret or its hash.
pub fn key_json(st: &AppState, k: &KeyRecord, api_used: Option<i64>, usage: &HashMap<u32, Agg>) -> Value {
    let sym = st.engine.lookup(&k.client_key_id);
    let last_event = sym.and_then(|sym| {
        let f = LogFilter { key: Some(sym), ..LogFilter::default() };
        st.engine.logs(&f, None, 1).events.first().map(|e| e.ts_ms)
    });
    let agg = sym.and_then(|s| usage.get(&s.0)).cloned().unwrap_or_default();
    let last_used = match (last_event, api_used) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    json!({
        "id": k.id,
        "name": k.name,
        "description": k.description,
        "key": k.masked,
        "client_key_id": k.client_key_id,
        "scope": k.scope,
        "enabled": k.enabled,
        "created_at": format_ts(k.created_at_ms, chrono_tz::UTC),
        "last_used": last_used.map(|t| format_ts(t, chrono_tz::UTC)),
        "usage": { "calls": agg.calls, "tokens": agg.total_tokens(), "errors": agg.errors },
    })
}

/// Every managed key as the API shows it.
pub fn keys_document(st: &AppState) -> Vec<Value> {
    let usage = key_usage(&st.engine);
    st.keys.list().iter().map(|(k, used)| key_json(st, k, *used, &usage)).collect()
}

pub async fn list_keys(State(st): State<Shared>) -> Result<Response, ApiError> {
    let st2 = st.clone();
    let list = tokio::task::spawn_blocking(move || keys_document(&st2))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("read failed: {e}")))?;
    Ok(ok(Value::Array(list)))
}

fn key_error(e: crate::keys::KeyError) -> ApiError {
    use crate::keys::KeyError;
    match e {
        KeyError::Invalid { field, message } => ApiError::field(field, message),
        KeyError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        KeyError::Limit(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        KeyError::Io { .. } => {
            crate::log::error(&e.to_string());
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot write the key log")
        }
    }
}

/// Parses a JSON body into `T`, naming the field of any error.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        let msg = msg.split(" at line ").next().unwrap_or("").to_string();
        if path == "." || path.is_empty() { ApiError::bad_request(format!("invalid JSON body: {msg}")) } else { ApiError::field(&path, msg) }
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    scope: Option<String>,
}

pub async fn create_key(State(st): State<Shared>, headers: HeaderMap, body: axum::body::Body) -> Result<Response, ApiError> {
    let body = crate::http::read_body(&headers, body, 64 * 1024, 64 * 1024).await?;
    let nk: NewKey = json_body(&body)?;
    let scope = match nk.scope.as_deref() {
        None => Scope::Gateway,
        Some(s) => Scope::parse(s).ok_or_else(|| ApiError::field("scope", "must be gateway, read, ingest or admin"))?,
    };
    let (rec, secret) = st.keys.create(&nk.name, &nk.description, scope, st.config.console.max_keys, now_ms(), None).map_err(key_error)?;
    let mut doc = key_json(&st, &rec, None, &HashMap::new());
    doc["secret"] = json!(secret);
    doc["notice"] = json!("This is the only time the key is shown in full; store it now.");
    let mut r = ok(doc);
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

pub async fn update_key(State(st): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: axum::body::Body) -> Result<Response, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::field("id", "must be a key id"))?;
    let body = crate::http::read_body(&headers, body, 64 * 1024, 64 * 1024).await?;
    let patch: KeyPatch = json_body(&body)?;
    let rec = st.keys.update(id, patch).map_err(key_error)?;
    Ok(ok(key_json(&st, &rec, None, &key_usage(&st.engine))))
}

pub async fn delete_key(State(st): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::field("id", "must be a key id"))?;
    let me = authorize(&st, &headers, Need::Admin)?;
    if me.id == id && st.keys.list().iter().filter(|(k, _)| k.scope == Scope::Admin && k.enabled).count() <= 1 {
        return Err(ApiError::new(StatusCode::CONFLICT, "this is the last admin token; create another admin token before deleting it"));
    }
    st.keys.delete(id).map_err(key_error)?;
    Ok(ok(json!({ "id": id, "deleted": true })))
}

pub async fn status(State(st): State<Shared>) -> Result<Response, ApiError> {
    let s = st.engine.status();
    Ok(ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "last_seq": s.last_seq,
        "durable_seq": s.durable_seq,
        "segments": s.segments,
        "events": s.events,
        "bytes_on_disk": s.bytes_on_disk,
        "heap_bytes": s.heap_bytes,
        "fenced": s.fenced,
        "oldest": s.oldest_ts_ms.map(|t| format_ts(t, chrono_tz::UTC)),
        "newest": s.newest_ts_ms.map(|t| format_ts(t, chrono_tz::UTC)),
        "timezone": st.config.server.timezone,
        "durability": st.config.storage.durability,
        "uptime_s": st.started.elapsed().as_secs(),
    })))
}

/// The collectors' state: connected, subscribed, last event, rate, reconnects, auth failures, lag.
pub async fn sources(State(st): State<Shared>) -> Result<Response, ApiError> {
    let list: Vec<Value> = st.sources.get().map(|s| s.iter().map(|h| h.json()).collect()).unwrap_or_default();
    Ok(ok(Value::Array(list)))
}
