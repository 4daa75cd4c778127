//! The HTTP surface: shared state, the router, auth, the error envelope, and ingest.
//! Reads live in `console.rs`, export in `export.rs`, the live stream in `live.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::json;
use tokenboard_engine::{Durability, Engine, Error as EngineError};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::ingest::{BodyError, ItemError, Mapper};
use crate::keys::{KeyRecord, KeyStore, Need};
use crate::metrics::Metrics;
use crate::secrets::Fingerprinter;

pub struct AppState {
    pub config: Config,
    pub engine: Engine,
    pub keys: KeyStore,
    pub fp: Arc<Fingerprinter>,
    pub metrics: Metrics,
    pub ingest_slots: Arc<Semaphore>,
    /// Parses and appends large batches at low CPU priority.
    pub ingest_pool: crate::pool::Pool,
    /// Filtered reads materialise private views; at most this many at once.
    pub slice_slots: Arc<Semaphore>,
    pub live: crate::live::Hub,
    /// The collectors' health, set once they start.
    pub sources: std::sync::OnceLock<Vec<Arc<crate::collector::SourceHealth>>>,
    pub started: Instant,
}

pub type Shared = Arc<AppState>;

pub fn now_ms() -> i64 {
    tokenboard_engine::system_clock_ms()
}

/// An error in the envelope `{"code":<status>,"msg":"…"}`, with per-event errors for ingest.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub msg: String,
    pub errors: Option<Vec<ItemError>>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError { status, msg: msg.into(), errors: None, retry_after: None }
    }

    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }

    /// A bad query parameter or body field, named.
    pub fn field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request(format!("{field}: {message}"))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
    }

    pub fn engine(e: EngineError) -> ApiError {
        let status = match &e {
            EngineError::InvalidEvent { .. } | EngineError::View(_) => StatusCode::BAD_REQUEST,
            EngineError::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::DiskFull { .. } | EngineError::InternerFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            EngineError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            crate::log::error(&format!("engine: {e}"));
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.status.as_u16(), "msg": self.msg });
        if let Some(errors) = self.errors {
            body["errors"] = json!(errors);
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// `{"code":0,"data":…}`.
pub fn ok(data: serde_json::Value) -> Response {
    Json(json!({ "code": 0, "data": data })).into_response()
}

/// The key behind the request's bearer token, if it may do `need`.
pub fn authorize(st: &AppState, headers: &HeaderMap, need: Need) -> Result<KeyRecord, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 512);
    let Some(token) = token else {
        st.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unauthorized());
    };
    let Some(key) = st.keys.authenticate(token, now_ms()) else {
        st.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unauthorized());
    };
    if !key.scope.allows(need) {
        let what = match need {
            Need::Read => "read the console API",
            Need::Ingest => "send events",
            Need::Admin => "manage keys",
            Need::Any => "use the API",
        };
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("Forbidden: this token may not {what}")));
    }
    Ok(key)
}

async fn require(State(st): State<Shared>, need: Need, req: Request, next: Next) -> Response {
    match authorize(&st, req.headers(), need) {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

macro_rules! guard {
    ($st:expr, $need:expr) => {{
        let st = $st.clone();
        middleware::from_fn(move |req: Request, next: Next| {
            let st = st.clone();
            async move { require(State(st), $need, req, next).await }
        })
    }};
}

pub fn router(st: Shared) -> Router {
    let ingest = Router::new().route("/api/ingest/events", post(ingest_events)).route_layer(guard!(st, Need::Ingest));
    let read = Router::new()
        .route("/api/console/stats", get(crate::console::stats))
        .route("/api/console/usage-trend", get(crate::console::usage_trend))
        .route("/api/console/history", get(crate::console::history))
        .route("/api/console/logs", get(crate::console::logs))
        .route("/api/console/keys", get(crate::console::list_keys))
        .route("/api/console/export", get(crate::export::export))
        .route("/api/console/stream", get(crate::live::stream))
        .route("/api/console/status", get(crate::console::status))
        .route("/api/console/sources", get(crate::console::sources))
        .route_layer(guard!(st, Need::Read));
    let admin = Router::new()
        .route("/api/console/keys", post(crate::console::create_key))
        .route("/api/console/keys/{id}", delete(crate::console::delete_key).patch(crate::console::update_key))
        .route_layer(guard!(st, Need::Admin));
    let any = Router::new().route("/api/openapi.json", get(crate::openapi::openapi)).route_layer(guard!(st, Need::Any));
    let metrics_route = if st.config.server.metrics_public {
        Router::new().route("/metrics", get(crate::metrics::metrics))
    } else {
        Router::new().route("/metrics", get(crate::metrics::metrics)).route_layer(guard!(st, Need::Read))
    };
    let mut app = Router::new()
        .merge(ingest)
        .merge(read)
        .merge(admin)
        .merge(any)
        .merge(metrics_route)
        .route("/healthz", get(healthz))
        .route("/", get(root));
    if st.config.console.enabled {
        app = app.merge(crate::assets::router(&st.config.console.path));
    }
    app.fallback(not_found).layer(middleware::from_fn_with_state(st.clone(), observe)).with_state(st)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

async fn root(State(st): State<Shared>) -> Response {
    if st.config.console.enabled {
        axum::response::Redirect::temporary(&format!("{}/", st.config.console.path.trim_end_matches('/'))).into_response()
    } else {
        ok(json!({ "name": "tokenboard", "version": env!("CARGO_PKG_VERSION") }))
    }
}

/// Records request counts and latencies per route.
async fn observe(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let start = Instant::now();
    let r = next.run(req).await;
    st.metrics.observe_http(route.as_deref().unwrap_or("unmatched"), r.status().as_u16(), start.elapsed());
    r
}

async fn healthz(State(st): State<Shared>) -> Response {
    let s = st.engine.status();
    let body = json!({
        "code": 0,
        "data": {
            "status": if s.fenced { "fenced" } else { "ok" },
            "last_seq": s.last_seq,
            "durable_seq": s.durable_seq,
            "uptime_s": st.started.elapsed().as_secs(),
        }
    });
    let status = if s.fenced { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Json(body)).into_response()
}

/// Reads a body up to `max` bytes, and inflates it when it is gzip, up to `max_decoded`.
pub async fn read_body(headers: &HeaderMap, body: Body, max: usize, max_decoded: usize) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {max} bytes (ingest.max_body_bytes); send smaller batches"));
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    let bytes = match http_body_util::Limited::new(body, max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => return Err(ApiError::bad_request(format!("cannot read the body: {e}"))),
    };
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(bytes),
        "gzip" | "x-gzip" => {
            use std::io::Read;
            let mut out = Vec::with_capacity(bytes.len() * 4);
            let mut dec = flate2::read::MultiGzDecoder::new(&bytes[..]).take(max_decoded as u64 + 1);
            dec.read_to_end(&mut out).map_err(|e| ApiError::bad_request(format!("Content-Encoding: gzip body does not inflate: {e}")))?;
            if out.len() > max_decoded {
                return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body inflates to more than {max_decoded} bytes (ingest.max_decoded_bytes)")));
            }
            Ok(out.into())
        }
        other => Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Content-Encoding {other:?} is not supported; use gzip or none"))),
    }
}

/// Bodies larger than this are parsed and appended off the async workers.
const INLINE_BODY_BYTES: usize = 64 * 1024;

async fn ingest_events(State(st): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let Ok(_permit) = st.ingest_slots.clone().try_acquire_owned() else {
        st.metrics.ingest_overloaded.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError { retry_after: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded: too many ingest requests in flight; retry later") });
    };
    let body = read_body(&headers, body, st.config.ingest.max_body_bytes, st.config.ingest.max_decoded_bytes).await.inspect_err(|_| {
        st.metrics.ingest_rejected.fetch_add(1, Ordering::Relaxed);
    })?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonlines") || ct.contains("jsonl"));
    let inline = body.len() <= INLINE_BODY_BYTES && st.engine.options().durability != Durability::Always;
    let st2 = st.clone();
    let work = move || -> Result<serde_json::Value, ApiError> {
        let mapper = Mapper { fp: &st2.fp, now_ms: now_ms() };
        let parsed = mapper.parse_body(&body, ndjson, st2.config.ingest.max_events_per_request).map_err(|e| {
            st2.metrics.ingest_rejected.fetch_add(1, Ordering::Relaxed);
            match e {
                BodyError::Items(errors) => ApiError {
                    errors: Some(errors.clone()),
                    ..ApiError::bad_request(format!(
                        "{} invalid event(s); nothing of this batch was stored. First: event {} field {}: {}",
                        errors.len(),
                        errors[0].index,
                        if errors[0].field.is_empty() { "(the event)" } else { &errors[0].field },
                        errors[0].message
                    ))
                },
                BodyError::Body(msg) => ApiError::bad_request(msg),
                BodyError::TooManyEvents { max } => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("more than {max} events in one request (ingest.max_events_per_request)"))
                }
            }
        })?;
        let n = parsed.events.len();
        let out = if n == 0 {
            tokenboard_engine::AppendOutcome { accepted: 0, duplicates: 0, last_seq: st2.engine.last_seq(), first_seq: None }
        } else {
            st2.engine.append(&parsed.events).map_err(ApiError::engine)?
        };
        st2.metrics.ingest_accepted.fetch_add(out.accepted as u64, Ordering::Relaxed);
        st2.metrics.ingest_duplicates.fetch_add(out.duplicates as u64, Ordering::Relaxed);
        st2.metrics.ingest_requests.fetch_add(1, Ordering::Relaxed);
        Ok(json!({ "accepted": out.accepted, "duplicates": out.duplicates, "ignored": parsed.ignored, "last_seq": out.last_seq }))
    };
    let data = if inline {
        work()?
    } else {
        st.ingest_pool.run(work).await.ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ingest task failed"))??
    };
    Ok(ok(data))
}
