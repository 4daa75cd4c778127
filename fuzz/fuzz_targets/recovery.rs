//! Recovery over arbitrary segment contents: opening never panics, every event it serves reads
//! back, a second open finds the same events (recovery is idempotent), and the read-only verify
//! agrees on the count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenboard_engine::format::{SEGMENT_HEADER_BYTES, SEGMENT_MAGIC};
use tokenboard_engine::{Engine, EngineOptions, LogFilter, Retention};

fn options(dir: &std::path::Path) -> EngineOptions {
    let mut o = EngineOptions::new(dir);
    o.segment_bytes_max = 64 * 1024;
    o.retention = Retention::none();
    o.retention_interval_ms = None;
    o.clock = std::sync::Arc::new(|| 1_800_000_000_000);
    o
}

fn events(e: &Engine) -> Vec<u64> {
    let mut seqs = Vec::new();
    e.scan(&LogFilter::default(), &mut |ev| {
        seqs.push(ev.seq);
        true
    });
    seqs
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    // Mostly keep a plausible header so the fuzzer reaches the frames; sometimes not.
    let mut file = data.to_vec();
    if file.first().is_some_and(|b| b & 1 == 0) && file.len() >= SEGMENT_HEADER_BYTES {
        file[..8].copy_from_slice(&SEGMENT_MAGIC);
    }
    std::fs::write(dir.path().join("00000000000000000001.seg"), &file).unwrap();
    let verified = tokenboard_engine::verify(dir.path(), &mut |_, _, _| {});
    let Ok((engine, report)) = Engine::open(options(dir.path())) else { return };
    let first = events(&engine);
    assert_eq!(first.len() as u64, report.events);
    assert!(first.windows(2).all(|w| w[0] < w[1]), "sequence numbers increase");
    for &s in &first {
        assert!(engine.get(s).is_some(), "served event {s} reads back");
    }
    if let Ok(v) = verified {
        if !v.segments.iter().any(|s| s.bad_header.is_some()) {
            assert_eq!(v.events(), report.events, "verify and recovery agree");
        }
    }
    engine.close().unwrap();
    drop(engine);
    let (engine, _) = Engine::open(options(dir.path())).expect("a recovered log reopens");
    assert_eq!(events(&engine), first, "recovery is idempotent");
});
