//! Log queries: newest first, keyset pagination, every filter, checked against a naive filter over
//! all events, across sealed segments and the live one.

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokenboard_engine::{Dim, Engine, LogFilter, StatusFilter, StoredEvent, TimeRange};

fn everything() -> TimeRange {
    TimeRange { from_ms: i64::MIN / 4, to_ms: i64::MAX / 4 }
}

fn page_all(engine: &Engine, filter: &LogFilter, page: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..100_000 {
        let p = engine.logs(filter, cursor, page);
        assert!(p.events.len() <= page);
        out.extend(p.events.iter().map(|e| e.seq));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

#[test]
fn every_filter_matches_a_naive_scan() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 30 * 86_400_000);
    let o = keep_all(dir.path(), &clock, 128 * 1024);
    let (engine, _) = Engine::open(o).unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    // Timestamps mostly increasing with some late arrivals.
    let mut sent = Vec::new();
    for i in 0..20_000i64 {
        let late = if rng.random_bool(0.05) { rng.random_range(0..3_600_000) } else { 0 };
        sent.push(event(&mut rng, T0 + i * 60_000 - late));
    }
    for c in sent.chunks(333) {
        engine.append(c).unwrap();
    }
    assert!(engine.status().segments > 3, "the data spans several segments");
    let all: Vec<StoredEvent> = all_events(&engine);
    let naive = |f: &LogFilter| -> Vec<u64> { all.iter().rev().filter(|e| f.matches(e)).map(|e| e.seq).collect() };
    let sym = |s: &str| engine.lookup(s).unwrap();

    let mut filters = vec![
        LogFilter::default(),
        LogFilter { model: Some(sym("qwen3")), ..LogFilter::default() },
        LogFilter { key: Some(sym("key-7")), ..LogFilter::default() },
        LogFilter { key: Some(sym("key-7")), model: Some(sym("gpt-5")), ..LogFilter::default() },
        LogFilter { endpoint: Some(sym("/v1/messages")), provider: Some(sym("google")), ..LogFilter::default() },
        LogFilter { credential: Some(sym("cred-2")), status: Some(StatusFilter::Class(5)), ..LogFilter::default() },
        LogFilter { status: Some(StatusFilter::Code(429)), ..LogFilter::default() },
        LogFilter { status: Some(StatusFilter::Errors), model: Some(sym("gpt-5")), ..LogFilter::default() },
        LogFilter { min_latency_ms: Some(15_000), ..LogFilter::default() },
        LogFilter { from_ms: Some(T0 + 3_000 * 60_000), to_ms: Some(T0 + 9_000 * 60_000), ..LogFilter::default() },
        LogFilter { from_ms: Some(T0 + 100 * 60_000), to_ms: Some(T0 + 101 * 60_000), key: Some(sym("key-1")), ..LogFilter::default() },
    ];
    for _ in 0..30 {
        let from = T0 + rng.random_range(0..20_000) * 60_000;
        filters.push(LogFilter {
            from_ms: Some(from),
            to_ms: Some(from + rng.random_range(1..5_000) * 60_000),
            model: rng.random_bool(0.5).then(|| sym(["gpt-5", "claude-sonnet-4", "qwen3"][rng.random_range(0..3)])),
            key: rng.random_bool(0.3).then(|| sym(&format!("key-{}", rng.random_range(0..50)))),
            status: rng.random_bool(0.3).then_some(StatusFilter::Errors),
            min_latency_ms: rng.random_bool(0.2).then(|| rng.random_range(0..20_000)),
            ..LogFilter::default()
        });
    }
    // While the sealed segments' bitmaps are being compacted (a copy swapped in after each
    // roll), then once they all are.
    for round in ["while compacting", "compacted"] {
        if round == "compacted" {
            engine.wait_for_compaction();
            assert_eq!(engine.uncompacted_segments(), 0);
        }
        for f in &filters {
            let expect = naive(f);
            for page in [1, 7, 100, 1000] {
                assert_eq!(page_all(&engine, f, page), expect, "filter {f:?}, page {page}, {round}");
            }
        }
    }
    // A string the engine never saw matches nothing.
    assert_eq!(engine.lookup("no-such-model"), None);
    // Every returned event carries its fields.
    let page = engine.logs(&LogFilter::default(), None, 5);
    for ev in &page.events {
        let want = &sent[(ev.seq - 1) as usize];
        assert!(same_event(&engine, ev, want));
        assert_eq!(engine.get(ev.seq).as_ref(), Some(ev));
    }
    assert_eq!(engine.with_interner(|i| i.resolve(page.events[0].dim(Dim::Method)).to_string()), "POST");
}

/// The newest sequence number, through a read (which folds what is pending).
fn calls_read(engine: &Engine) -> u64 {
    engine.summary(everything()).agg.calls
}

/// Waits for the next `n` events a subscriber gets (in however many batches), by sequence number.
fn next_seqs(rx: &std::sync::mpsc::Receiver<std::sync::Arc<[StoredEvent]>>, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let batch = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("every event is published");
        seqs.extend(batch.iter().map(|e| e.seq));
    }
    seqs
}

#[test]
fn subscribers_see_new_events_and_slow_ones_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let mut o = options(dir.path(), &clock);
    o.subscriber_queue_max = 2;
    let (engine, _) = Engine::open(o).unwrap();
    let rx = engine.subscribe();
    let slow = engine.subscribe();
    let sent = events(3, 10, T0, 1);
    engine.append(&sent[..4]).unwrap();
    assert_eq!(next_seqs(&rx, 4), vec![1, 2, 3, 4]);
    engine.append(&sent[4..5]).unwrap();
    engine.append(&sent[5..6]).unwrap();
    assert_eq!(next_seqs(&rx, 2), vec![5, 6]);
    // `slow` reads nothing: once its queue of 2 batches is full, the next batch drops it.
    for ev in &sent[6..] {
        engine.append(std::slice::from_ref(ev)).unwrap();
        assert_eq!(next_seqs(&rx, 1), vec![calls_read(&engine)]);
    }
    let mut n = 0;
    while slow.recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 2, "the slow subscriber got what fit, then its channel closed");
}

/// Single-event appends that come densely are left pending for the fold thread: every read
/// still sees them all, and subscribers get them all, in order, with nothing else happening.
#[test]
fn dense_single_appends_are_read_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0); // frozen: every append falls in one millisecond
    let mut o = options(dir.path(), &clock);
    o.subscriber_queue_max = 100_000;
    let (engine, _) = Engine::open(o).unwrap();
    let rx = engine.subscribe();
    // Rounds of 2700 dense appends, until one was gathered: on a busy machine (other tests) the
    // fold thread, woken by the first dense ones, may not get a core before a round is over, and
    // the appender then folds them itself, one at a time.
    const ROUNDS: usize = 20;
    let sent = events(11, 300 + ROUNDS * 2700, T0, 1);
    for (i, ev) in sent[..300].iter().enumerate() {
        engine.append(std::slice::from_ref(ev)).unwrap();
        assert_eq!(engine.summary(everything()).agg.calls, i as u64 + 1, "a read sees every append before it");
    }
    let mut seqs = Vec::new();
    let mut largest = 0;
    let mut end = 300;
    for round in sent[300..].chunks(2700) {
        for ev in round {
            engine.append(std::slice::from_ref(ev)).unwrap();
        }
        end += round.len();
        // No read now: the fold thread publishes what is pending once it runs out of batches.
        while seqs.len() < end {
            let batch = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("every event is published");
            largest = largest.max(batch.len());
            seqs.extend(batch.iter().map(|e| e.seq));
        }
        if largest > 1 {
            break;
        }
    }
    assert_eq!(seqs, (1..=end as u64).collect::<Vec<_>>());
    assert!(largest > 1, "single appends were gathered into larger batches");
    assert_eq!(engine.summary(everything()).agg.calls, end as u64);
    let page = engine.logs(&LogFilter::default(), None, 10);
    assert_eq!(page.events[0].seq, end as u64);
}

/// One-event appends are interned against the event before (see `append_locked`): each event
/// here changes one dimension at a time, to a value new, seen long ago or the one before, and
/// every event reads back with its own strings, before and after a reopen.
#[test]
fn one_event_appends_keep_each_events_own_strings() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let (engine, _) = Engine::open(options(dir.path(), &clock)).unwrap();
    let mut rng = SmallRng::seed_from_u64(9);
    let mut ev = events(3, 1, T0, 1).remove(0);
    let mut sent = Vec::new();
    for i in 0..2000 {
        let dim = Dim::ALL[rng.random_range(0..Dim::ALL.len())];
        let value = match rng.random_range(0..3) {
            0 => format!("{}-new-{i}", dim.name()),
            1 => format!("{}-old-{}", dim.name(), rng.random_range(0..4)),
            _ => String::new(),
        };
        ev.set_dim(dim, value);
        engine.append(std::slice::from_ref(&ev)).unwrap();
        sent.push(ev.clone());
    }
    let check = |engine: &Engine| {
        for (i, want) in sent.iter().enumerate() {
            let got = engine.get(i as u64 + 1).expect("stored");
            for dim in Dim::ALL {
                assert_eq!(&*engine.resolve(got.dim(dim)), want.dim(dim), "event {i}, {}", dim.name());
            }
        }
    };
    check(&engine);
    engine.close().unwrap();
    drop(engine);
    let (engine, _) = Engine::open(options(dir.path(), &clock)).unwrap();
    check(&engine);
}

/// Events still pending when the last handle is dropped (no close, no read) still reach the
/// subscribers before their channel closes.
#[test]
fn subscribers_get_pending_events_when_the_engine_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let mut o = options(dir.path(), &clock);
    o.subscriber_queue_max = 100_000;
    o.save_state = false;
    let (engine, _) = Engine::open(o).unwrap();
    let rx = engine.subscribe();
    let sent = events(12, 1000, T0, 1);
    for ev in &sent {
        engine.append(std::slice::from_ref(ev)).unwrap();
    }
    drop(engine);
    let mut seqs = Vec::new();
    while let Ok(batch) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
        seqs.extend(batch.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, (1..=sent.len() as u64).collect::<Vec<_>>());
}

/// More than one roaring container per segment: the index folds its buffer into bitmaps, and
/// queries combine folded bitmaps with the buffered tail.
#[test]
fn filters_span_folded_bitmaps_and_the_buffered_tail() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 30 * 86_400_000);
    let o = keep_all(dir.path(), &clock, 64 << 20);
    let (engine, _) = Engine::open(o.clone()).unwrap();
    let sent = events(77, 150_000, T0, 1000);
    for c in sent.chunks(5000) {
        engine.append(c).unwrap();
    }
    let check = |engine: &Engine| {
        let all = all_events(engine);
        let sym = |s: &str| engine.lookup(s).unwrap();
        let filters = [
            LogFilter { model: Some(sym("qwen3")), ..LogFilter::default() },
            LogFilter { key: Some(sym("key-3")), status: Some(StatusFilter::Class(5)), ..LogFilter::default() },
            LogFilter { credential: Some(sym("cred-1")), endpoint: Some(sym("/v1/messages")), ..LogFilter::default() },
        ];
        for f in &filters {
            let expect: Vec<u64> = all.iter().rev().filter(|e| f.matches(e)).map(|e| e.seq).collect();
            assert!(expect.len() > 100);
            assert_eq!(page_all(engine, f, 500), expect, "filter {f:?}");
        }
    };
    check(&engine);
    engine.close().unwrap();
    drop(engine);
    let (engine, _) = Engine::open(o).unwrap();
    check(&engine);
}

#[test]
fn subscribers_see_batches_in_sequence_order_under_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let mut o = options(dir.path(), &clock);
    o.subscriber_queue_max = 100_000;
    let (engine, _) = Engine::open(o).unwrap();
    let rx = engine.subscribe();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                // Small batches are folded by the appender, large ones on the fold thread.
                let sent = events(100 + t, 400, T0, 1);
                let (small, large) = sent.split_at(100);
                for c in small.chunks(4) {
                    engine.append(c).unwrap();
                }
                for c in large.chunks(150) {
                    engine.append(c).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut last = 0;
    let mut n = 0;
    // A batch folded on the fold thread is published after its fold, so it may come a little
    // after `append` returned.
    while n < 1600 {
        let batch = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("every batch is published");
        for ev in batch.iter() {
            assert!(ev.seq > last, "{} after {}", ev.seq, last);
            last = ev.seq;
            n += 1;
        }
    }
    assert_eq!(n, 1600);
    assert!(rx.try_recv().is_err(), "nothing published twice");
}

#[test]
fn a_slow_scan_does_not_stall_appends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let (engine, _) = Engine::open(options(dir.path(), &clock)).unwrap();
    engine.append(&events(7, 50, T0, 1)).unwrap();
    let (paused, resume) = std::sync::mpsc::channel::<()>();
    let (started, wait_started) = std::sync::mpsc::channel::<()>();
    let reader = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let mut seen = 0;
            engine.scan(&LogFilter::default(), &mut |_| {
                if seen == 0 {
                    started.send(()).unwrap();
                    resume.recv().unwrap();
                }
                seen += 1;
                true
            });
            seen
        })
    };
    wait_started.recv().unwrap();
    // The scan is paused inside the live segment; appends go on.
    for _ in 0..20 {
        engine.append(&events(8, 10, T0, 1)).unwrap();
    }
    paused.send(()).unwrap();
    assert_eq!(reader.join().unwrap(), 50, "the scan sees the log as it was when it started");
    assert_eq!(all_events(&engine).len(), 250);
}
