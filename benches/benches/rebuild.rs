//! Rebuild: open a data directory of `TB_BENCH_EVENTS` events (default 10M), recover every segment
//! and rebuild the views and indexes.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenboard_benches::{bench_options, dataset, dataset_events};
use tokenboard_engine::Engine;

fn rebuild(c: &mut Criterion) {
    let n = dataset_events();
    let dir = dataset(n);
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("open_{n}"), |b| {
        b.iter(|| {
            let (e, report) = Engine::open(bench_options(&dir)).unwrap();
            assert_eq!(report.events, n);
            e
        });
    });
    g.finish();
    let (e, _) = Engine::open(bench_options(&dir)).unwrap();
    let s = e.status();
    eprintln!(
        "dataset: {} events, {} segments, {:.1} bytes on disk per event, {:.1} MB heap ({:.2} MB per 1M events)",
        s.events,
        s.segments,
        s.bytes_on_disk as f64 / s.events as f64,
        s.heap_bytes as f64 / 1e6,
        s.heap_bytes as f64 / 1e6 / (s.events as f64 / 1e6)
    );
    eprintln!("heap: {:?}", s.heap);
}

criterion_group!(benches, rebuild);
criterion_main!(benches);
