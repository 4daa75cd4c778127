//! Counters for `/metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::http::Shared;

/// Upper bounds of the HTTP latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct RouteStats {
    /// By status code.
    requests: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_s: f64,
}

#[derive(Default)]
pub struct Metrics {
    pub ingest_requests: AtomicU64,
    pub ingest_accepted: AtomicU64,
    pub ingest_duplicates: AtomicU64,
    pub ingest_rejected: AtomicU64,
    pub ingest_overloaded: AtomicU64,
    pub auth_failures: AtomicU64,
    pub stream_clients: AtomicU64,
    pub stream_dropped: AtomicU64,
    pub retention_segments_deleted: AtomicU64,
    pub retention_events_deleted: AtomicU64,
    routes: Mutex<BTreeMap<String, RouteStats>>,
}

impl Metrics {
    pub fn observe_http(&self, route: &str, status: u16, took: Duration) {
        let s = took.as_secs_f64();
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let r = match routes.get_mut(route) {
            Some(r) => r,
            None => routes.entry(route.to_string()).or_default(),
        };
        *r.requests.entry(status).or_default() += 1;
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            r.buckets[i] += 1;
        }
        r.count += 1;
        r.sum_s += s;
    }
}

/// A collector's series: name, type, help, and its value read from the source's health.
type SourceSeries = (&'static str, &'static str, &'static str, fn(&crate::collector::SourceHealth) -> i64);

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

pub async fn metrics(State(st): State<Shared>) -> Response {
    let m = &st.metrics;
    let s = st.engine.status();
    let mut out = String::with_capacity(4096);
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(&mut out, "tokenboard_ingest_requests_total", "Ingest requests that stored their batch.", c(&m.ingest_requests));
    counter(&mut out, "tokenboard_ingest_events_total", "Events accepted and stored.", c(&m.ingest_accepted));
    counter(&mut out, "tokenboard_ingest_duplicates_total", "Events skipped as duplicates of an earlier event id.", c(&m.ingest_duplicates));
    counter(&mut out, "tokenboard_ingest_rejected_total", "Ingest requests rejected for bad input or size.", c(&m.ingest_rejected));
    counter(&mut out, "tokenboard_ingest_overloaded_total", "Ingest requests refused with 503 because too many were in flight.", c(&m.ingest_overloaded));
    counter(&mut out, "tokenboard_auth_failures_total", "Requests with a missing or unknown token.", c(&m.auth_failures));
    counter(&mut out, "tokenboard_stream_dropped_total", "Live-stream clients dropped for falling behind.", c(&m.stream_dropped));
    counter(&mut out, "tokenboard_retention_segments_deleted_total", "Segments deleted by retention since start.", c(&m.retention_segments_deleted));
    counter(&mut out, "tokenboard_retention_events_deleted_total", "Events deleted by retention since start.", c(&m.retention_events_deleted));
    gauge(&mut out, "tokenboard_stream_clients", "Connected live-stream clients.", c(&m.stream_clients));
    gauge(&mut out, "tokenboard_last_seq", "Sequence number of the newest event.", s.last_seq);
    gauge(&mut out, "tokenboard_durable_seq", "Newest sequence number known to be on disk.", s.durable_seq);
    gauge(&mut out, "tokenboard_durable_lag_events", "Events written but not yet fsynced.", s.last_seq.saturating_sub(s.durable_seq));
    gauge(&mut out, "tokenboard_segments", "Segment files.", s.segments);
    gauge(&mut out, "tokenboard_events", "Events held in the segments.", s.events);
    gauge(&mut out, "tokenboard_bytes_on_disk", "Bytes used by the segments.", s.bytes_on_disk);
    gauge(&mut out, "tokenboard_heap_bytes", "Approximate heap of views and indexes.", s.heap_bytes);
    gauge(&mut out, "tokenboard_fenced", "1 when the writer is fenced after an I/O failure.", u8::from(s.fenced));
    gauge(&mut out, "tokenboard_uptime_seconds", "Seconds since start.", st.started.elapsed().as_secs());
    if let Some(sources) = st.sources.get().filter(|s| !s.is_empty()) {
        let series: [SourceSeries; 8] = [
            ("tokenboard_source_connected", "gauge", "1 while the collector is connected to the proxy.", |h| i64::from(h.connected.load(Ordering::Relaxed))),
            ("tokenboard_source_subscribed", "gauge", "1 while the collector holds a usage subscription.", |h| i64::from(h.subscribed.load(Ordering::Relaxed))),
            ("tokenboard_source_events_total", "counter", "Events the collector stored.", |h| h.events.load(Ordering::Relaxed) as i64),
            ("tokenboard_source_duplicates_total", "counter", "Events the collector received again (already stored).", |h| h.duplicates.load(Ordering::Relaxed) as i64),
            ("tokenboard_source_reconnects_total", "counter", "Reconnects to the proxy.", |h| h.reconnects.load(Ordering::Relaxed) as i64),
            ("tokenboard_source_auth_failures_total", "counter", "Management keys the proxy refused.", |h| h.auth_failures.load(Ordering::Relaxed) as i64),
            ("tokenboard_source_last_event_timestamp_seconds", "gauge", "When the collector last stored an event.", |h| h.last_event_ms.load(Ordering::Relaxed) / 1000),
            ("tokenboard_source_lag_milliseconds", "gauge", "Storage time minus event time of the newest event stored.", |h| {
                let (a, b) = (h.last_event_ms.load(Ordering::Relaxed), h.last_event_ts_ms.load(Ordering::Relaxed));
                if a > 0 && b > 0 { (a - b).max(0) } else { 0 }
            }),
        ];
        for (name, kind, help, f) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for h in sources {
                let _ = writeln!(out, "{name}{{source=\"{}\"}} {}", h.name.replace(['"', '\\', '\n'], "_"), f(h));
            }
        }
    }
    let routes = m.routes.lock().unwrap_or_else(|e| e.into_inner());
    out.push_str("# HELP tokenboard_http_requests_total HTTP requests by route and status.\n# TYPE tokenboard_http_requests_total counter\n");
    for (route, r) in routes.iter() {
        for (status, n) in &r.requests {
            let _ = writeln!(out, "tokenboard_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
    }
    out.push_str("# HELP tokenboard_http_request_duration_seconds HTTP request latency by route.\n# TYPE tokenboard_http_request_duration_seconds histogram\n");
    for (route, r) in routes.iter() {
        let mut cum = 0;
        for (b, n) in BUCKETS.iter().zip(r.buckets) {
            cum += n;
            let _ = writeln!(out, "tokenboard_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "tokenboard_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", r.count);
        let _ = writeln!(out, "tokenboard_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", r.sum_s);
        let _ = writeln!(out, "tokenboard_http_request_duration_seconds_count{{route=\"{route}\"}} {}", r.count);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
