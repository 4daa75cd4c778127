//! Builds (once) the benchmark dataset of `TB_BENCH_EVENTS` events, opens it and prints the time
//! to rebuild, bytes on disk per event and where the heap goes; then the time to save the state
//! at close and to open again from it, in this process and in a new one.
//!
//! `cargo run --release -p tokenboard-benches --example dataset_status`
//! `… --example dataset_status -- --open DIR`: only the open from the saved state and the first
//! totals (then a clean close, which saves the state again, unless `--no-close` follows), timed
//! in this new process.

use std::time::Instant;

use tokenboard_benches::{bench_options, dataset, dataset_events};
use tokenboard_engine::Engine;

/// Counts what is really allocated (the engine's `heap_bytes` is an estimate).
#[global_allocator]
static ALLOCATOR: tokenboard_benches::CountingAlloc = tokenboard_benches::CountingAlloc;

/// Opens `dir` from its saved state, answers the first totals, prints the time, closes (unless
/// `close` is false: then the next open rebuilds, for profiling the open alone on a copy).
fn open_only(dir: &std::path::Path, close: bool) -> std::time::Duration {
    let mut o = bench_options(dir);
    o.save_state = true;
    let start = Instant::now();
    let (e, report) = Engine::open(o).expect("open dataset");
    let first = e.summary(tokenboard_engine::TimeRange::ALL).agg.calls;
    let took = start.elapsed();
    assert!(report.restored, "the saved state was not used");
    assert_eq!(first, e.status().events);
    if close {
        e.close().expect("close");
    } else {
        // Not dropped either: the process exits next, so a profile is of the open alone.
        std::mem::forget(e);
    }
    took
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--open") {
        let close = args.get(3).map(String::as_str) != Some("--no-close");
        let took = open_only(std::path::Path::new(&args[2]), close);
        println!("{}", took.as_secs_f64());
        if !close {
            // Nothing to drop: a profile of this run is of the open alone.
            std::process::exit(0);
        }
        return;
    }
    let n = dataset_events();
    let dir = dataset(n);
    let before = tokenboard_benches::allocated_bytes();
    let start = Instant::now();
    let (e, report) = Engine::open(bench_options(&dir)).expect("open dataset");
    let took = start.elapsed();
    let s = e.status();
    let counted = tokenboard_benches::allocated_bytes() - before;
    println!("dataset {}: {} events in {} segments", dir.display(), report.events, s.segments);
    println!("rebuild: {took:.2?} ({:.2} M events/s)", n as f64 / took.as_secs_f64() / 1e6);
    println!("disk: {:.1} bytes per event", s.bytes_on_disk as f64 / s.events as f64);
    let per_m = |b: usize| b as f64 / 1e6 / (s.events as f64 / 1e6);
    println!("heap: {:.1} MB ({:.2} MB per 1M events) by the engine's estimate", s.heap_bytes as f64 / 1e6, per_m(s.heap_bytes));
    println!("heap: {:.1} MB ({:.2} MB per 1M events) allocated, counted by the allocator", counted as f64 / 1e6, per_m(counted));
    if std::env::var_os("TB_HEAP_ONLY").is_some() {
        // For a heap profiler's last snapshot: the engine as opened, nothing after.
        std::process::exit(0);
    }
    let h = &s.heap;
    for (what, b) in [("views", h.views), ("bitmaps", h.bitmaps), ("blocks and dicts", h.blocks_and_dicts), ("interner", h.interner), ("dedup", h.dedup), ("rollups", h.rollups)] {
        println!("  {what:<17} {:>7.1} MB ({:.2} MB per 1M events)", b as f64 / 1e6, per_m(b));
    }
    drop(e);

    // The saved state: written by a clean close, loaded by the next open (then deleted).
    let mut o = bench_options(&dir);
    o.save_state = true;
    let (e, _) = Engine::open(o.clone()).expect("open dataset");
    let start = Instant::now();
    e.close().expect("close");
    let save = start.elapsed();
    drop(e);
    let saved_bytes = std::fs::metadata(dir.join("state.saved")).map(|m| m.len()).unwrap_or(0);
    let load = open_only(&dir, true);
    println!(
        "saved state: {:.1} MB ({:.1} B per event), written at close in {save:.2?}; open from it + first totals {load:.2?}",
        saved_bytes as f64 / 1e6,
        saved_bytes as f64 / n as f64
    );
    // In a new process each time, after the page cache has settled.
    let mut times = Vec::new();
    for _ in 0..5 {
        let _ = std::process::Command::new("sync").status();
        std::thread::sleep(std::time::Duration::from_secs(1));
        let out = std::process::Command::new(std::env::current_exe().expect("this program"))
            .arg("--open")
            .arg(&dir)
            .output()
            .expect("run --open");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        times.push(String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().expect("seconds") * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!("open from the saved state + first totals in a new process: median {:.1} ms (runs: {:?} ms)", times[2], times.iter().map(|t| (t * 10.0).round() / 10.0).collect::<Vec<_>>());
}
