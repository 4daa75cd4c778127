//! Random damage to segment files: recovery never panics, never invents an event, and keeps every
//! event whose bytes were not touched.

mod common;

use common::*;
use proptest::prelude::*;
use tokenboard_engine::format::SEGMENT_HEADER_BYTES;
use tokenboard_engine::{Engine, StoredEvent};

#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Garbage { at: usize, bytes: Vec<u8> },
    Zeros { at: usize, len: usize },
    Truncate { at: usize },
}

fn arb_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(at, bytes)| Damage::Garbage { at, bytes }),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Damage::Zeros { at, len }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn recovery_survives_random_damage(damages in prop::collection::vec(arb_damage(), 1..6), seed in any::<u64>()) {
        let src = tempfile::tempdir().unwrap();
        let clock = TestClock::new(T0);
        let o = keep_all(src.path(), &clock, 64 * 1024);
        let sent = events(seed, 2500, T0, 1000);
        let original: Vec<StoredEvent> = {
            let (e, _) = Engine::open(o.clone()).unwrap();
            for c in sent.chunks(97) {
                e.append(c).unwrap();
            }
            e.close().unwrap();
            all_events(&e)
        };
        let segs = segment_files(src.path());
        prop_assert!(segs.len() >= 2);
        // Damage copies of the files, in the written part of each.
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dir.path());
        let mut touched: Vec<(std::path::PathBuf, usize, usize)> = Vec::new();
        for (i, d) in damages.iter().enumerate() {
            let name = segs[i % segs.len()].file_name().unwrap();
            let path = dir.path().join(name);
            let mut bytes = std::fs::read(&path).unwrap();
            let used = frames(&segs[i % segs.len()]).last().map(|(o, h)| o + h.frame_bytes()).unwrap_or(SEGMENT_HEADER_BYTES);
            let span = used.min(bytes.len()).max(SEGMENT_HEADER_BYTES + 1);
            match d {
                Damage::Flip { at, mask } => {
                    let at = at % span;
                    bytes[at] ^= mask;
                    touched.push((path.clone(), at, at + 1));
                }
                Damage::Garbage { at, bytes: g } => {
                    let at = at % span;
                    let end = (at + g.len()).min(bytes.len());
                    bytes[at..end].copy_from_slice(&g[..end - at]);
                    touched.push((path.clone(), at, end));
                }
                Damage::Zeros { at, len } => {
                    let at = at % span;
                    let end = (at + len).min(bytes.len());
                    bytes[at..end].fill(0);
                    touched.push((path.clone(), at, end));
                }
                Damage::Truncate { at } => {
                    let at = SEGMENT_HEADER_BYTES + at % (span - SEGMENT_HEADER_BYTES);
                    bytes.truncate(at);
                    touched.push((path.clone(), at, usize::MAX));
                }
            }
            std::fs::write(&path, &bytes).unwrap();
        }
        let (e, report) = Engine::open(keep_all(dir.path(), &clock, 64 * 1024)).unwrap();
        let recovered = all_events(&e);
        // Never an invented or altered event: everything recovered is an original, in order.
        let by_seq: std::collections::HashMap<u64, &StoredEvent> = original.iter().map(|ev| (ev.seq, ev)).collect();
        let mut last = 0;
        for ev in &recovered {
            prop_assert!(ev.seq > last);
            last = ev.seq;
            let orig = by_seq.get(&ev.seq);
            prop_assert!(orig.is_some(), "event {} was invented", ev.seq);
            let orig = orig.unwrap();
            // Strings may be lost with a damaged dict frame; everything else must match.
            prop_assert_eq!(ev.ts_ms, orig.ts_ms);
            prop_assert_eq!(ev.tokens, orig.tokens);
            prop_assert_eq!(ev.latency_ms, orig.latency_ms);
        }
        // Untouched segments lose nothing.
        for seg in &segs {
            let name = seg.file_name().unwrap();
            if touched.iter().any(|(p, _, _)| p.file_name().unwrap() == name) {
                continue;
            }
            let base: u64 = name.to_str().unwrap()[..20].parse().unwrap();
            let want: Vec<u64> = original.iter().filter(|ev| ev.seq >= base).map(|ev| ev.seq).take_while(|s| segs.iter().all(|other| {
                let ob: u64 = other.file_name().unwrap().to_str().unwrap()[..20].parse().unwrap();
                ob <= base || *s < ob
            })).collect();
            for s in want {
                prop_assert!(recovered.iter().any(|ev| ev.seq == s), "event {} of an untouched segment is lost: {:?}", s, report.issues);
            }
        }
        // And the engine still takes appends.
        e.append(&events(1, 3, T0, 1)).unwrap();
    }
}
