//! The engine's heap as events accumulate, to catch structures that grow with the events
//! instead of with the keys, models and hours they span. Appends `EVENTS` workload events (200
//! distinct batches of 1000, cycled) under `never` and prints the heap breakdown every 3.5M.
//! With `TB_SAME_TS=1` every event carries one timestamp, as `tokenboard loadgen --dump` output
//! replayed by `scripts/bench-http.sh` does: one hour that never freezes. With `TB_RANDOM_TS=1`
//! each event falls anywhere in 30 days, in no order (a backfill).
//!
//! `cargo run --release -p tokenboard-benches --example heap_growth [EVENTS]` (default 21M)

use tokenboard_benches::{bench_options, Workload};
use tokenboard_engine::{Durability, Engine};

fn main() {
    let total: usize = std::env::args().nth(1).map(|a| a.parse().expect("EVENTS")).unwrap_or(21_000_000);
    let dir = tempfile::tempdir_in(std::env::var_os("TB_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into())).expect("temp dir");
    let mut o = bench_options(dir.path());
    o.durability = Durability::Never;
    let (e, _) = Engine::open(o).expect("open");
    let mut w = Workload::new(1, total as u64);
    let mut batches: Vec<_> = (0..200).map(|_| w.batch(1000)).collect();
    if std::env::var_os("TB_SAME_TS").is_some() {
        let ts = batches[0][0].ts_ms;
        batches.iter_mut().flatten().for_each(|ev| ev.ts_ms = ts);
    }
    if std::env::var_os("TB_RANDOM_TS").is_some() {
        // A backfill in no order: each event anywhere in 30 days.
        let start = batches[0][0].ts_ms;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for ev in batches.iter_mut().flatten() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ev.ts_ms = start + (x % (30 * 86_400_000)) as i64;
        }
    }
    let mb = |b: usize| b as f64 / 1e6;
    let mut n = 0;
    for b in batches.iter().cycle() {
        e.append(b).expect("append");
        n += b.len();
        if n % 3_500_000 == 0 || n >= total {
            let s = e.status();
            println!(
                "{n:>10} events, {:>3} segments: heap {:7.1} MB ({:5.2} MB per 1M events): views {:.1}, bitmaps {:.1}, blocks and dictionaries {:.1}, interner {:.1}",
                s.segments,
                mb(s.heap_bytes),
                mb(s.heap_bytes) / (n as f64 / 1e6),
                mb(s.heap.views),
                mb(s.heap.bitmaps),
                mb(s.heap.blocks_and_dicts),
                mb(s.heap.interner)
            );
        }
        if n >= total {
            break;
        }
    }
}
