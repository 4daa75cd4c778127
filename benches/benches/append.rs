//! Append throughput: batches and single events under `interval`, and 8 concurrent writers
//! under `always` (group commit).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenboard_benches::{bench_options, Workload};
use tokenboard_engine::{Durability, Engine};

fn open(durability: Durability) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir_in(std::env::var_os("TB_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into())).unwrap();
    let mut o = bench_options(dir.path());
    o.durability = durability;
    let (e, _) = Engine::open(o).unwrap();
    (dir, e)
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.measurement_time(Duration::from_secs(8));

    const BATCH: usize = 1000;
    let mut w = Workload::new(1, 50_000_000);
    // A few batches cycled: as in the server, where a batch was parsed just before it is appended
    // and is still in the CPU caches (200 distinct batches would measure DRAM misses instead).
    let batches: Vec<_> = (0..8).map(|_| w.batch(BATCH)).collect();
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("batch_1000_interval", |b| {
        let (_dir, e) = open(Durability::Interval { every_ms: 200 });
        let mut i = 0;
        b.iter(|| {
            e.append(&batches[i % batches.len()]).unwrap();
            i += 1;
        });
    });

    g.throughput(Throughput::Elements(1));
    let singles: Vec<_> = w.batch(8_000);
    g.bench_function("single_interval", |b| {
        let (_dir, e) = open(Durability::Interval { every_ms: 200 });
        let mut i = 0;
        b.iter(|| {
            e.append(std::slice::from_ref(&singles[i % singles.len()])).unwrap();
            i += 1;
        });
    });

    // 8 writers, batches of 100, acknowledged only after fdatasync.
    const WRITERS: usize = 8;
    const WRITER_BATCH: usize = 100;
    let per_writer: Arc<Vec<Vec<_>>> = Arc::new((0..64).map(|_| w.batch(WRITER_BATCH)).collect());
    g.throughput(Throughput::Elements((WRITERS * WRITER_BATCH) as u64));
    g.sample_size(10);
    g.bench_function("always_8_writers_batch_100", |b| {
        let (_dir, e) = open(Durability::Always);
        b.iter_custom(|iters| {
            let start = Instant::now();
            let threads: Vec<_> = (0..WRITERS)
                .map(|t| {
                    let e = e.clone();
                    let batches = per_writer.clone();
                    std::thread::spawn(move || {
                        for i in 0..iters as usize {
                            e.append(&batches[(i + t) % batches.len()]).unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            start.elapsed()
        });
    });
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
