//! `GET /api/console/stream`: Server-Sent Events for the live console.
//!
//! One thread subscribes to the engine and republishes its batches on a bounded broadcast
//! channel. Each client task takes them, keeps the newest rows that match its filters, and every
//! `TICK` sends one `logs` event (at most `ROWS_PER_TICK` rows, with the count it left out) and
//! one `totals` event. A client that falls behind the channel is dropped, never ingest.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokenboard_engine::{Engine, StoredEvent, TimeRange};
use tokio::sync::broadcast;

use crate::console::{Params, log_row, parse_read};
use crate::http::{ApiError, Shared};

const TICK: Duration = Duration::from_millis(500);
const ROWS_PER_TICK: usize = 50;
/// Batches the channel holds for a slow client before it is dropped.
const CHANNEL_BATCHES: usize = 4096;

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<[StoredEvent]>>,
}

impl Hub {
    /// Starts the thread that forwards the engine's batches; it ends when the engine closes.
    pub fn start(engine: &Engine) -> Hub {
        let (tx, _) = broadcast::channel(CHANNEL_BATCHES);
        let rx = engine.subscribe();
        let tx2 = tx.clone();
        std::thread::Builder::new()
            .name("tokenboard-live".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    let _ = tx2.send(batch);
                }
            })
            .expect("spawn the live-stream thread");
        Hub { tx }
    }
}

struct ClientGuard(Shared);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.metrics.stream_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn stream(State(st): State<Shared>, Query(q): Query<Params>) -> Result<Response, ApiError> {
    let mut rq = parse_read(&st, &q)?;
    let mut rx = st.live.tx.subscribe();
    st.metrics.stream_clients.fetch_add(1, Ordering::Relaxed);
    let guard = ClientGuard(st.clone());
    // The client task writes events into a small channel; the response streams it. A send fails
    // once the client has gone, which ends the task.
    let (out, rx_events) = tokio::sync::mpsc::channel::<Event>(8);
    tokio::spawn(async move {
        let _guard = guard;
        let mut pending: std::collections::VecDeque<StoredEvent> = std::collections::VecDeque::new();
        let mut skipped = 0u64;
        let mut tick = tokio::time::interval(TICK);
        let mut last_seq = 0;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(batch) => {
                        if rq.nothing {
                            // A filter named a value not seen yet; the batch may have brought it.
                            match parse_read(&st, &q) {
                                Ok(r) if !r.nothing => rq = r,
                                _ => continue,
                            }
                        }
                        for ev in batch.iter().filter(|e| rq.filter.matches(e)) {
                            pending.push_back(ev.clone());
                            if pending.len() > ROWS_PER_TICK {
                                pending.pop_front();
                                skipped += 1;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        st.metrics.stream_dropped.fetch_add(1, Ordering::Relaxed);
                        let _ = out.send(Event::default().event("dropped").data("{\"reason\":\"the client fell behind; reconnect\"}")).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let seq = st.engine.last_seq();
                    if pending.is_empty() && seq == last_seq {
                        continue;
                    }
                    last_seq = seq;
                    if !pending.is_empty() {
                        let rows: Vec<_> = st.engine.with_interner(|i| pending.iter().rev().map(|e| log_row(e, i, &st.keys, rq.tz)).collect());
                        let doc = json!({ "rows": rows, "skipped": skipped });
                        pending.clear();
                        skipped = 0;
                        if out.send(Event::default().event("logs").data(doc.to_string())).await.is_err() {
                            return;
                        }
                    }
                    let s = st.engine.summary(TimeRange::new(i64::MIN / 4, i64::MAX / 4));
                    let doc = json!({
                        "api_call_count": s.agg.calls,
                        "total_tokens": s.agg.total_tokens(),
                        "error_count": s.agg.errors,
                        "last_seq": seq,
                    });
                    if out.send(Event::default().event("totals").data(doc.to_string())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let events = futures_util::stream::unfold(rx_events, |mut rx| async move { rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx)) });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
