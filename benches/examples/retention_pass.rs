//! How long a retention pass holds the engine's write lock: the bench dataset (10 M events in
//! six segments) copied, opened, and its oldest segment dropped by an event-count limit, while a
//! thread appends one event at a time and records its slowest append.
//!
//! `cargo run --release -p tokenboard-benches --example retention_pass [KEEP_PERCENT]`: keep
//! 80 % of the events by default (the oldest segment goes); 40 drops the three oldest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenboard_benches::{bench_options, dataset, dataset_events, Workload};
use tokenboard_engine::{Engine, Retention};

fn main() {
    let n = dataset_events();
    let src = dataset(n);
    let dir = tempfile::tempdir_in(src.parent().expect("the datasets' folder")).expect("temp dir");
    for entry in std::fs::read_dir(&src).expect("dataset") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    let mut o = bench_options(dir.path());
    // Six segments of about a sixth each: by default the oldest goes, the next stays.
    let keep: u64 = std::env::args().nth(1).map_or(80, |a| a.parse().expect("KEEP_PERCENT: a whole number"));
    o.retention = Retention { max_events: Some(n * keep / 100), ..Retention::none() };
    o.retention_interval_ms = None;
    let (engine, _) = Engine::open(o).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w = Workload::new(9, 1_000_000);
            let events = w.batch(1000);
            let (mut slowest, mut i) = (Duration::ZERO, 0);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                engine.append(std::slice::from_ref(&events[i % events.len()])).expect("append");
                slowest = slowest.max(t.elapsed());
                i += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            slowest
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let report = engine.enforce_retention().expect("retention");
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let slowest = appender.join().expect("appender");
    println!(
        "retention pass: {} segment(s), {} events deleted in {:.0} ms ({:.0} ns per event); slowest append meanwhile {:.1} ms",
        report.segments_deleted,
        report.events_deleted,
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e9 / report.events_deleted.max(1) as f64,
        slowest.as_secs_f64() * 1e3
    );
}
