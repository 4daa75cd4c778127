//! Summaries, breakdowns, top-N and trends through the engine, against naive folds over the log,
//! across sealed segments and the live one.

mod common;

use common::*;
use tokenboard_engine::{Dim, Engine, Granularity, Group, LogFilter, StatusFilter, TimeRange, TopBy};

#[test]
fn engine_queries_match_naive_folds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 30 * 86_400_000);
    let o = keep_all(dir.path(), &clock, 256 * 1024);
    let (engine, _) = Engine::open(o).unwrap();
    let sent = events(31, 30_000, T0, 37_000); // about 13 days
    for c in sent.chunks(1000) {
        engine.append(c).unwrap();
    }
    let all = all_events(&engine);
    let tz: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    let ranges = [
        TimeRange { from_ms: i64::MIN / 4, to_ms: i64::MAX / 4 },
        TimeRange { from_ms: T0 + 123_456, to_ms: T0 + 5 * 86_400_000 + 999 },
        TimeRange { from_ms: T0 + 2 * 86_400_000 - 5 * 3_600_000 - 1_800_000, to_ms: T0 + 9 * 86_400_000 - 1_800_000 },
    ];
    for r in ranges {
        let inside: Vec<_> = all.iter().filter(|e| e.ts_ms >= r.from_ms && e.ts_ms < r.to_ms).collect();
        let s = engine.summary(r);
        assert_eq!(s.agg.calls as usize, inside.len());
        assert_eq!(s.agg.errors as usize, inside.iter().filter(|e| !e.success).count());
        assert_eq!(s.agg.total_tokens(), inside.iter().map(|e| e.tokens.total()).sum::<u64>());
        assert_eq!(s.agg.latency_sum_ms, inside.iter().map(|e| e.latency_ms as u64).sum::<u64>());

        // Top keys by tokens with the rest as "other".
        let mut per_key = std::collections::HashMap::new();
        for e in &inside {
            let a: &mut (u64, u64) = per_key.entry(e.dim(Dim::Key).0).or_default();
            a.0 += e.tokens.total();
            a.1 += 1;
        }
        let (top, other) = engine.top(Group::Key, r, 5, TopBy::Tokens);
        let mut expect: Vec<_> = per_key.iter().map(|(k, (t, c))| (*k, *t, *c)).collect();
        expect.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        assert_eq!(top.iter().map(|(k, a)| (*k, a.total_tokens())).collect::<Vec<_>>(), expect.iter().take(5).map(|e| (e.0, e.1)).collect::<Vec<_>>());
        assert_eq!(other.calls + top.iter().map(|(_, a)| a.calls).sum::<u64>(), inside.len() as u64);

        // Per model.
        let models = engine.breakdown(Group::Model, r);
        for (sym, agg) in &models {
            let n = inside.iter().filter(|e| e.dim(Dim::Model).0 == *sym).count();
            assert_eq!(agg.calls as usize, n);
        }
        assert_eq!(models.iter().map(|(_, a)| a.calls).sum::<u64>(), inside.len() as u64);
    }
    // Daily buckets in a +05:30 zone: each bucket is a local day.
    let r = TimeRange { from_ms: T0 - 19_800_000, to_ms: T0 + 10 * 86_400_000 - 19_800_000 };
    let trend = engine.trend(r, Granularity::Day, tz).unwrap();
    assert_eq!(trend.len(), 10);
    for b in &trend {
        assert_eq!((b.start_ms + 19_800_000) % 86_400_000, 0, "bucket starts at local midnight");
        let n = all.iter().filter(|e| e.ts_ms >= b.start_ms && e.ts_ms < b.end_ms).count();
        assert_eq!(b.agg.calls as usize, n);
    }
}

#[test]
fn odd_ranges_answer_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 86_400_000);
    let (engine, _) = Engine::open(options(dir.path(), &clock)).unwrap();
    engine.append(&events(9, 100, T0, 60_000)).unwrap();
    let inverted = TimeRange { from_ms: T0 + 1000, to_ms: T0 };
    assert_eq!(engine.summary(inverted).agg.calls, 0);
    assert!(engine.breakdown(Group::Model, inverted).is_empty());
    let extreme = TimeRange { from_ms: i64::MIN, to_ms: i64::MAX };
    assert_eq!(engine.summary(extreme).agg.calls, 100);
    assert_eq!(engine.top(Group::Key, extreme, 3, TopBy::Calls).0.len(), 3);
    // Too many buckets is an error, not a huge allocation.
    let year = TimeRange { from_ms: T0, to_ms: T0 + 365 * 86_400_000 };
    assert!(engine.trend(year, Granularity::Minute, chrono_tz::Tz::UTC).is_err());
    // The whole representable range: either refused as too many buckets, or every call counted.
    if let Ok(buckets) = engine.trend(extreme, Granularity::Month, chrono_tz::Tz::UTC) {
        assert_eq!(buckets.iter().map(|b| b.agg.calls).sum::<u64>(), 100);
    }
    let month = engine.trend(TimeRange { from_ms: T0, to_ms: T0 + 31 * 86_400_000 }, Granularity::Month, chrono_tz::Tz::UTC).unwrap();
    assert_eq!(month.iter().map(|b| b.agg.calls).sum::<u64>(), 100);
}

#[test]
fn slices_answer_filtered_queries_like_naive_folds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 30 * 86_400_000);
    let (engine, _) = Engine::open(keep_all(dir.path(), &clock, 256 * 1024)).unwrap();
    let sent = events(7, 20_000, T0, 41_000);
    for c in sent.chunks(700) {
        engine.append(c).unwrap();
    }
    let all = all_events(&engine);
    let model = all[17].dim(Dim::Model);
    let key = all[99].dim(Dim::Key);
    let filters = [
        LogFilter { model: Some(model), ..LogFilter::default() },
        LogFilter { key: Some(key), ..LogFilter::default() },
        LogFilter { model: Some(model), status: Some(StatusFilter::Errors), ..LogFilter::default() },
    ];
    let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let range = TimeRange { from_ms: T0 + 3_600_000 + 7, to_ms: T0 + 6 * 86_400_000 + 1_234 };
    for filter in filters {
        let inside: Vec<_> = all.iter().filter(|e| range.contains(e.ts_ms) && filter.matches(e)).collect();
        assert!(!inside.is_empty());
        let slice = engine.slice(&filter, range);
        assert_eq!(slice.event_count() as usize, inside.len());
        let s = slice.summary(range);
        assert_eq!(s.agg.calls as usize, inside.len());
        assert_eq!(s.agg.total_tokens(), inside.iter().map(|e| e.tokens.total()).sum::<u64>());
        let (top, other) = slice.top(Group::Provider, range, 2, TopBy::Calls);
        assert_eq!(other.calls + top.iter().map(|(_, a)| a.calls).sum::<u64>(), inside.len() as u64);
        let trend = slice.trend(range, Granularity::Day, tz).unwrap();
        for b in &trend {
            let n = inside.iter().filter(|e| e.ts_ms >= b.start_ms && e.ts_ms < b.end_ms).count();
            assert_eq!(b.agg.calls as usize, n);
        }
        let mut scanned = 0;
        let visited = engine.scan(&LogFilter { from_ms: Some(range.from_ms), to_ms: Some(range.to_ms), ..filter.clone() }, &mut |_| {
            scanned += 1;
            true
        });
        assert_eq!((visited, scanned), (inside.len() as u64, inside.len()));
    }
}

#[test]
fn indexed_scans_find_events_after_reopen_of_a_small_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 30 * 86_400_000);
    let sent = events(9, 12, T0, 1000);
    {
        let (engine, _) = Engine::open(keep_all(dir.path(), &clock, 256 * 1024)).unwrap();
        engine.append(&sent).unwrap();
        engine.close().unwrap();
    }
    let (engine, _) = Engine::open(keep_all(dir.path(), &clock, 256 * 1024)).unwrap();
    let all = all_events(&engine);
    let model = all[3].dim(Dim::Model);
    let filter = LogFilter { model: Some(model), ..LogFilter::default() };
    let expect = all.iter().filter(|e| filter.matches(e)).count();
    let got = engine.scan(&filter, &mut |_| true);
    assert_eq!(got as usize, expect);
    assert_eq!(engine.logs(&filter, None, 100).events.len(), expect);
}
