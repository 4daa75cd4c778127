//! Replay equivalence: for random event streams with reopens injected, the views rebuilt from disk
//! equal the live views, and the log holds exactly the accepted events of a simple model.

mod common;

use common::*;
use proptest::prelude::*;
use tokenboard_engine::{Dim, Engine, EngineOptions, Group, LogFilter, NewEvent, Quality, TimeRange, Tokens};

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<NewEvent>),
    /// The events appended one at a time, with no read in between: dense enough to leave them
    /// pending for the fold thread (see `fold`).
    Singles(Vec<NewEvent>),
    /// Close cleanly (or not) and open again.
    Reopen { clean: bool },
}

fn arb_event() -> impl Strategy<Value = NewEvent> {
    (
        (0i64..4 * 86_400_000, 0usize..6, 0usize..40, 0usize..4, prop::option::of(0u32..200)),
        (any::<[u16; 4]>(), 0u32..60_000, prop::option::of(0u32..5000), any::<bool>(), 0u8..4, prop::sample::select(vec![200u16, 200, 200, 429, 500, 0])),
    )
        .prop_map(|((ts, model, key, cred, id), (tok, latency, ttft, stream, quality, status))| {
            let mut e = NewEvent {
                event_id: id.map(|i| format!("id-{i}")),
                ts_ms: T0 + ts,
                status,
                success: status == 200,
                tokens: Tokens {
                    input_uncached: tok[0] as u64,
                    cache_read: tok[1] as u64 / 2,
                    cache_write: (tok[2] % 7) as u64,
                    output: tok[3] as u64,
                    reasoning: (tok[0] % 13) as u64,
                    unclassified: 0,
                },
                quality: Quality::from_u8(quality).unwrap(),
                latency_ms: latency,
                ttft_ms: ttft,
                stream,
                error_message: (status != 200).then(|| format!("status {status}")),
                ..NewEvent::default()
            };
            e.set_dim(Dim::Method, "POST");
            e.set_dim(Dim::Endpoint, ["/v1/chat/completions", "/v1/messages"][model % 2]);
            e.set_dim(Dim::Model, format!("model-{model}"));
            e.set_dim(Dim::ModelAlias, if model % 3 == 0 { format!("alias-{model}") } else { String::new() });
            e.set_dim(Dim::Provider, format!("provider-{}", model % 3));
            e.set_dim(Dim::Credential, format!("cred-{cred}"));
            e.set_dim(Dim::Key, format!("key-{key}"));
            e
        })
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            // Below `fold::ASYNC_MIN_EVENTS` (128) the appender folds a batch into the views
            // itself; from there on the fold thread does.
            5 => prop::collection::vec(arb_event(), 1..120).prop_map(Op::Append),
            2 => prop::collection::vec(arb_event(), 128..400).prop_map(Op::Append),
            1 => prop::collection::vec(arb_event(), 60..300).prop_map(Op::Singles),
            1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        ],
        1..16,
    )
}

fn opts(dir: &std::path::Path, clock: &TestClock) -> EngineOptions {
    keep_all(dir, clock, 64 * 1024) // several rolls per case
}

/// Opens a copy of the directory and checks that its rebuilt state equals the live engine's.
fn check_rebuild_equals_live(live: &Engine, dir: &std::path::Path, clock: &TestClock) -> Result<(), TestCaseError> {
    live.sync().unwrap();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let (rebuilt, report) = Engine::open(opts(copy.path(), clock)).unwrap();
    prop_assert!(report.issues.is_empty(), "{:?}", report.issues);
    let same_views = live.with_views(|a| rebuilt.with_views(|b| a == b));
    prop_assert!(same_views, "rebuilt views differ from live views");
    prop_assert_eq!(all_events(live), all_events(&rebuilt));
    let all = TimeRange { from_ms: i64::MIN / 4, to_ms: i64::MAX / 4 };
    prop_assert_eq!(live.summary(all), rebuilt.summary(all));
    prop_assert_eq!(live.breakdown(Group::Key, all), rebuilt.breakdown(Group::Key, all));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn live_views_equal_views_rebuilt_from_disk(ops in arb_ops()) {
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new(T0 + 5 * 86_400_000);
        let (mut engine, _) = Engine::open(opts(dir.path(), &clock)).unwrap();
        // The model: accepted events in order, and the ids seen.
        let mut model: Vec<NewEvent> = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for op in ops {
            match op {
                Op::Append(batch) => {
                    let mut accepted = 0;
                    for ev in &batch {
                        if ev.event_id.as_ref().is_none_or(|id| ids.insert(id.clone())) {
                            model.push(ev.clone());
                            accepted += 1;
                        }
                    }
                    let out = engine.append(&batch).unwrap();
                    prop_assert_eq!(out.accepted, accepted);
                    prop_assert_eq!(out.duplicates, batch.len() - accepted);
                    // A read right after an append sees it, wherever it was folded.
                    let all = TimeRange { from_ms: i64::MIN / 4, to_ms: i64::MAX / 4 };
                    prop_assert_eq!(engine.summary(all).agg.calls, model.len() as u64);
                    clock.advance(1000);
                }
                Op::Singles(events) => {
                    for ev in &events {
                        let new = ev.event_id.as_ref().is_none_or(|id| ids.insert(id.clone()));
                        if new {
                            model.push(ev.clone());
                        }
                        let out = engine.append(std::slice::from_ref(ev)).unwrap();
                        prop_assert_eq!(out.accepted, usize::from(new));
                    }
                    let all = TimeRange { from_ms: i64::MIN / 4, to_ms: i64::MAX / 4 };
                    prop_assert_eq!(engine.summary(all).agg.calls, model.len() as u64);
                    clock.advance(1000);
                }
                Op::Reopen { clean } => {
                    check_rebuild_equals_live(&engine, dir.path(), &clock)?;
                    if clean {
                        engine.close().unwrap();
                    } else {
                        engine.sync().unwrap();
                    }
                    drop(engine);
                    let (reopened, report) = Engine::open(opts(dir.path(), &clock)).unwrap();
                    // A clean close saves the state and the open loads it; else a rebuild.
                    prop_assert_eq!(report.restored, clean);
                    engine = reopened;
                }
            }
        }
        check_rebuild_equals_live(&engine, dir.path(), &clock)?;
        let stored = all_events(&engine);
        prop_assert_eq!(stored.len(), model.len());
        for (i, (s, m)) in stored.iter().zip(&model).enumerate() {
            prop_assert_eq!(s.seq, i as u64 + 1);
            prop_assert!(same_event(&engine, s, m), "event {} differs", i);
        }
        // Newest-first log pages walk the model backwards, whatever the filter.
        let mut cursor = None;
        let mut walked = Vec::new();
        loop {
            let page = engine.logs(&LogFilter::default(), cursor, 37);
            walked.extend(page.events.iter().map(|e| e.seq));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let expect: Vec<u64> = (1..=model.len() as u64).rev().collect();
        prop_assert_eq!(walked, expect);
    }
}
