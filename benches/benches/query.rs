//! The dashboard questions at `TB_BENCH_EVENTS` events (default 10M): totals, per-model stats, top
//! keys, a 30-day hourly trend in Asia/Shanghai, a year's history, and filtered log pages.

use criterion::{criterion_group, criterion_main, Criterion};
use tokenboard_benches::{bench_options, dataset, dataset_events, DAYS, START_MS};
use tokenboard_engine::rollup::RollupGroup;
use tokenboard_engine::{Engine, Granularity, Group, LogFilter, StatusFilter, TimeRange, TopBy};

fn query(c: &mut Criterion) {
    let n = dataset_events();
    let dir = dataset(n);
    let (e, _) = Engine::open(bench_options(&dir)).unwrap();
    let all = TimeRange { from_ms: i64::MIN / 4, to_ms: i64::MAX / 4 };
    let day = 86_400_000;
    // The last 7 local days at UTC+8: neither end is on a UTC day boundary.
    let week_shanghai = TimeRange { from_ms: START_MS + (DAYS - 7) * day - 8 * 3_600_000, to_ms: START_MS + DAYS * day - 8 * 3_600_000 };
    let month = TimeRange { from_ms: START_MS, to_ms: START_MS + DAYS * day };
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();

    let mut g = c.benchmark_group("query");
    g.bench_function("totals_all", |b| b.iter(|| e.summary(all)));
    g.bench_function("totals_7d_shanghai", |b| b.iter(|| e.summary(week_shanghai)));
    g.bench_function("per_model_all", |b| b.iter(|| e.breakdown(Group::Model, all)));
    g.bench_function("per_model_7d_shanghai", |b| b.iter(|| e.breakdown(Group::Model, week_shanghai)));
    let top10 = |range| e.top(Group::Key, range, 10, TopBy::Tokens);
    g.bench_function("top10_keys_all", |b| b.iter(|| top10(all)));
    g.bench_function("top10_keys_7d_shanghai", |b| b.iter(|| top10(week_shanghai)));
    g.bench_function("trend_30d_hourly_shanghai", |b| b.iter(|| e.trend(month, Granularity::Hour, tz).unwrap()));
    let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    g.bench_function("trend_30d_hourly_kolkata", |b| b.iter(|| e.trend(month, Granularity::Hour, kolkata).unwrap()));
    let kathmandu: chrono_tz::Tz = "Asia/Kathmandu".parse().unwrap();
    g.bench_function("trend_30d_daily_kathmandu", |b| b.iter(|| e.trend(month, Granularity::Day, kathmandu).unwrap()));
    // The History screen's question: a year per UTC day, and per key over it.
    let (first_day, last_day) = (START_MS.div_euclid(day), (START_MS + DAYS * day).div_euclid(day) + 1);
    let history = |group| e.history(last_day - 365, last_day, false, group).unwrap();
    assert!(first_day >= last_day - 365);
    g.bench_function("history_365d_daily", |b| b.iter(|| history(RollupGroup::All)));
    g.bench_function("history_365d_daily_per_key", |b| b.iter(|| history(RollupGroup::Key)));
    g.bench_function("logs_page_100_newest", |b| b.iter(|| e.logs(&LogFilter::default(), None, 100)));
    let model = e.lookup("claude-sonnet-4-0").unwrap();
    let errors_of_model = LogFilter { model: Some(model), status: Some(StatusFilter::Errors), ..LogFilter::default() };
    g.bench_function("logs_page_100_errors_of_one_model", |b| b.iter(|| e.logs(&errors_of_model, None, 100)));
    let key = e.lookup("sk-fp-00100").unwrap();
    let by_key = LogFilter { key: Some(key), ..LogFilter::default() };
    g.bench_function("logs_page_100_one_key", |b| b.iter(|| e.logs(&by_key, None, 100)));
    g.finish();
}

criterion_group!(benches, query);
criterion_main!(benches);
