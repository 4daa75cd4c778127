//! Times a filtered read: `Engine::slice` for one model (the most common one) over the whole
//! benchmark dataset, then the summary, a 30-day hourly trend and the top 10 keys from it, as a
//! filtered console read asks. Prints each step's time and the matching events.
//!
//! `cargo run --release -p tokenboard-benches --example slice_time [REPEATS]`

use std::time::Instant;

use tokenboard_benches::{bench_options, dataset, dataset_events};
use tokenboard_engine::{Engine, Granularity, Group, LogFilter, TimeRange, TopBy};

fn main() {
    let repeats: usize = std::env::args().nth(1).map(|a| a.parse().expect("REPEATS")).unwrap_or(3);
    let dir = dataset(dataset_events());
    let (e, _) = Engine::open(bench_options(&dir)).expect("open dataset");
    let (top, _) = e.top(Group::Model, TimeRange::ALL, 1, TopBy::Calls);
    let model = tokenboard_engine::Sym(top[0].0);
    println!("model {} with {} of {} events", e.resolve(model), top[0].1.calls, e.status().events);
    let (from, to) = e.with_views(|v| v.time_bounds()).expect("events");
    let range = TimeRange::new(from, to + 1);
    let filter = LogFilter { model: Some(model), ..Default::default() };
    for _ in 0..repeats {
        let t = Instant::now();
        let s = e.slice(&filter, range);
        let sliced = t.elapsed();
        let t = Instant::now();
        let sum = s.summary(range);
        let summary = t.elapsed();
        let t = Instant::now();
        let trend = s.trend(range, Granularity::Hour, chrono_tz::Asia::Shanghai).expect("trend");
        let trended = t.elapsed();
        let t = Instant::now();
        let (keys, _) = s.top(Group::Key, range, 10, TopBy::Calls);
        let topped = t.elapsed();
        println!(
            "slice {:.0} ms ({} events, {:.0} ns each); summary {:.2} ms; trend {:.2} ms ({} buckets); top keys {:.2} ms ({})",
            sliced.as_secs_f64() * 1e3,
            sum.agg.calls,
            sliced.as_nanos() as f64 / sum.agg.calls as f64,
            summary.as_secs_f64() * 1e3,
            trended.as_secs_f64() * 1e3,
            trend.len(),
            topped.as_secs_f64() * 1e3,
            keys.len()
        );
    }
}
