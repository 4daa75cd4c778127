//! The CPU time the appending thread spends per event, for comparing builds of the append path
//! on a noisy machine (wall-clock throughput moves ±5 % run to run here; the appender's own CPU
//! time moves less). Appends `ROUNDS` × 1000-event batches (8 batches cycled, as the criterion
//! bench does) under `interval`, after a warm-up, and prints ns of appender CPU per event and
//! the wall-clock rate, and the longest single append (a segment roll's stall).
//!
//! `cargo run --release -p tokenboard-benches --example append_cpu [ROUNDS [BATCH]]` (ROUNDS of
//! 1000 events, in batches of BATCH events, 1000 by default). With `TB_FRESH=1` the batches come
//! fresh from the generator instead, as in the peers bench: 10 000 events generated (untimed),
//! then appended in batches of BATCH (timed). With `TB_TRASH=MB` as well, MB megabytes are
//! written and read between the 10 000-event rounds (untimed), as SQLite's inserts do in the
//! peers bench: the appender then starts each round with cold caches.

use std::time::Instant;

use tokenboard_benches::{bench_options, thread_cpu_ns, Workload};
use tokenboard_engine::{Durability, Engine};

/// The fold thread's CPU time so far (from /proc, in clock ticks of 10 ms).
fn fold_cpu_ns() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc") {
        let path = task.expect("task").path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "tokenboard-fold") {
            let stat = std::fs::read_to_string(path.join("stat")).expect("stat");
            let fields: Vec<&str> = stat.rsplit(')').next().expect("fields").split_whitespace().collect();
            total += fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        }
    }
    total * 10_000_000
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map(|a| a.parse().expect("ROUNDS")).unwrap_or(20_000);
    let batch: usize = std::env::args().nth(2).map(|a| a.parse().expect("BATCH")).unwrap_or(1000);
    let dir = tempfile::tempdir_in(std::env::var_os("TB_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into())).expect("temp dir");
    let mut o = bench_options(dir.path());
    o.durability = Durability::Interval { every_ms: 200 };
    let (e, _) = Engine::open(o).expect("open");
    let mut w = Workload::new(1, 50_000_000);
    let batches: Vec<_> = (0..8).map(|_| w.batch(batch)).collect();
    let rounds = rounds * 1000 / batch;
    for b in batches.iter().cycle().take(rounds / 10) {
        e.append(b).expect("append");
    }
    let fresh = std::env::var_os("TB_FRESH").is_some();
    let (mut cpu, mut wall, fold) = (0, std::time::Duration::ZERO, fold_cpu_ns());
    // The longest single append (cycled batches only): a segment roll's stall shows here.
    let mut slowest = std::time::Duration::ZERO;
    let (mut stalls, mut n_stalls) = (std::time::Duration::ZERO, 0);
    let mut n = rounds * batch;
    if fresh {
        // Fresh batches spread over the workload's month, as the peers bench appends them: 10 000
        // generated (untimed; the fold thread catches up meanwhile, and its figure counts that),
        // then appended in batches of BATCH (timed).
        n = n.div_ceil(10_000) * 10_000;
        let mut w = Workload::new(42, n as u64);
        let trash_mb: usize = std::env::var("TB_TRASH").ok().map(|v| v.parse().expect("TB_TRASH in MB")).unwrap_or(0);
        let mut trash = vec![0u64; trash_mb << 17];
        let mut sum = 0u64;
        for round in 0..n / 10_000 {
            for (i, v) in trash.iter_mut().enumerate() {
                *v = v.wrapping_add(i as u64 ^ round as u64);
                sum = sum.wrapping_add(*v);
            }
            let big = w.batch(10_000);
            let (c, t) = (thread_cpu_ns(), Instant::now());
            for b in big.chunks(batch) {
                e.append(b).expect("append");
            }
            cpu += thread_cpu_ns() - c;
            wall += t.elapsed();
        }
        std::hint::black_box(sum);
    } else {
        let (c, t) = (thread_cpu_ns(), Instant::now());
        for b in batches.iter().cycle().take(rounds) {
            let one = Instant::now();
            e.append(b).expect("append");
            let took = one.elapsed();
            slowest = slowest.max(took);
            if took > std::time::Duration::from_millis(1) {
                stalls += took;
                n_stalls += 1;
            }
        }
        (cpu, wall) = (thread_cpu_ns() - c, t.elapsed());
    }
    let fold = fold_cpu_ns() - fold;
    let n = n as f64;
    println!(
        "appender CPU {:.1} ns/event; fold thread CPU {:.1} ns/event (its waits for work included); wall {:.2} M events/s",
        cpu as f64 / n,
        fold as f64 / n,
        n / wall.as_secs_f64() / 1e6
    );
    if !fresh {
        println!(
            "slowest append: {:.2} ms; {n_stalls} appends over 1 ms took {:.1} ms in all ({:.1} % of the time)",
            slowest.as_secs_f64() * 1e3,
            stalls.as_secs_f64() * 1e3,
            100.0 * stalls.as_secs_f64() / wall.as_secs_f64()
        );
    }
}
