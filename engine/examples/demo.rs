//! Exercises the engine end to end until the server exists: opens (or creates) a data directory,
//! appends a synthetic workload, reopens it, and prints what the views and indexes answer.
//!
//! Usage: `cargo run --release -p tokenboard-engine --example demo -- [DATA_DIR] [EVENTS]`
//! (defaults: `./data`, 1000000). Every number printed comes from the engine; the events are
//! generated and labelled as such.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokenboard_engine::{
    Dim, Engine, EngineOptions, Granularity, Group, LogFilter, NewEvent, StatusFilter, TimeRange, Tokens,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if matches!(first.as_deref(), Some("-h" | "--help")) {
        println!("usage: demo [DATA_DIR] [EVENTS]\n\nAppends EVENTS synthetic usage events (default 1000000) to the Tokenboard log in\nDATA_DIR (default ./data), reopens it and prints the views.");
        return Ok(());
    }
    let dir = first.unwrap_or_else(|| "./data".into());
    let n: usize = match args.next() {
        Some(v) => v.parse().map_err(|_| format!("EVENTS must be a number, got {v:?}"))?,
        None => 1_000_000,
    };
    let (engine, report) = Engine::open(EngineOptions::new(&dir))?;
    println!("opened {dir}: {} events in {} segments, {} recovery findings", report.events, report.segments, report.issues.len());
    for issue in &report.issues {
        println!("  {}: {:?}", issue.segment.display(), issue.kind);
    }

    let now = tokenboard_engine::system_clock_ms();
    let mut rng = SmallRng::seed_from_u64(now as u64);
    let models = ["gpt-5", "claude-sonnet-4", "gemini-2.5-pro", "deepseek-v3", "qwen3-coder"];
    let start = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let mut e = NewEvent {
            // Spread over the last 24 hours.
            ts_ms: now - 86_400_000 + (i as i64 * 86_400_000 / n.max(1) as i64),
            status: 200,
            success: true,
            latency_ms: rng.random_range(300..8000),
            tokens: Tokens { input_uncached: rng.random_range(100..4000), output: rng.random_range(10..1500), ..Tokens::default() },
            ..NewEvent::default()
        };
        if rng.random_bool(0.02) {
            e.status = 429;
            e.success = false;
            e.error_message = Some("rate limited (synthetic)".into());
        }
        e.set_dim(Dim::Method, "POST");
        e.set_dim(Dim::Endpoint, "/v1/chat/completions");
        e.set_dim(Dim::Model, models[rng.random_range(0..models.len())]);
        e.set_dim(Dim::Key, format!("demo-key-{}", rng.random_range(0..100)));
        batch.push(e);
        if batch.len() == 1000 {
            engine.append(&batch)?;
            batch.clear();
        }
    }
    engine.append(&batch)?;
    let took = start.elapsed();
    println!("appended {n} synthetic events in {took:.2?} ({:.0} events/s)", n as f64 / took.as_secs_f64());
    engine.close()?;
    drop(engine);

    let start = Instant::now();
    let (engine, report) = Engine::open(EngineOptions::new(&dir))?;
    println!("reopened and rebuilt {} events in {:.2?}", report.events, start.elapsed());
    let status = engine.status();
    println!(
        "{} segments, {:.1} bytes on disk per event, {:.1} MB of views and indexes",
        status.segments,
        status.bytes_on_disk as f64 / status.events.max(1) as f64,
        status.heap_bytes as f64 / 1e6
    );
    let all = TimeRange { from_ms: i64::MIN / 4, to_ms: i64::MAX / 4 };
    let s = engine.summary(all);
    println!(
        "calls {}  tokens {}  errors {}  success {:.2}%  p50 {:?} ms  p95 {:?} ms",
        s.agg.calls,
        s.agg.total_tokens(),
        s.agg.errors,
        s.agg.success_rate().unwrap_or(0.0) * 100.0,
        s.latency.quantile(0.5),
        s.latency.quantile(0.95)
    );
    for (sym, agg) in engine.breakdown(Group::Model, all) {
        println!("  model {:<18} calls {:>9}  tokens {:>12}", &*engine.resolve(tokenboard_engine::Sym(sym)), agg.calls, agg.total_tokens());
    }
    let trend = engine.trend(TimeRange { from_ms: now - 6 * 3_600_000, to_ms: now }, Granularity::Hour, chrono_tz::Tz::UTC)?;
    for b in trend {
        println!("  hour from {} calls {:>8}", rfc3339(b.start_ms), b.agg.calls);
    }
    let errors = engine.logs(&LogFilter { status: Some(StatusFilter::Errors), ..LogFilter::default() }, None, 3);
    for ev in errors.events {
        println!("  error #{} at {} status {} model {}", ev.seq, rfc3339(ev.ts_ms), ev.status, engine.resolve(ev.dim(Dim::Model)));
    }
    engine.close()?;
    Ok(())
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}
