//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokenboard_engine::format::{self, FrameHeader, SegmentHeader, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use tokenboard_engine::{Dim, Durability, Engine, EngineOptions, LogFilter, NewEvent, Quality, StoredEvent, Tokens};

pub const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A clock tests can move.
#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn new(ms: i64) -> TestClock {
        TestClock(Arc::new(AtomicI64::new(ms)))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst)
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

pub fn options(dir: &Path, clock: &TestClock) -> EngineOptions {
    let mut o = EngineOptions::new(dir);
    o.durability = Durability::Never;
    // Small segments keep copies of data directories cheap.
    o.segment_bytes_max = 1 << 20;
    let c = clock.0.clone();
    o.clock = Arc::new(move || c.load(Ordering::SeqCst));
    o
}

/// Test options with segments of `segment_bytes` and no retention limits.
pub fn keep_all(dir: &Path, clock: &TestClock, segment_bytes: u64) -> EngineOptions {
    let mut o = options(dir, clock);
    o.segment_bytes_max = segment_bytes;
    o.retention = tokenboard_engine::Retention::none();
    o
}

pub fn event(rng: &mut SmallRng, ts_ms: i64) -> NewEvent {
    let models = ["gpt-5", "claude-sonnet-4", "gemini-2.5-pro", "qwen3", "deepseek-v3"];
    let mut e = NewEvent {
        ts_ms,
        status: 200,
        success: true,
        latency_ms: rng.random_range(50..20_000),
        tokens: Tokens {
            input_uncached: rng.random_range(0..5000),
            cache_read: if rng.random_bool(0.3) { rng.random_range(0..20_000) } else { 0 },
            cache_write: 0,
            output: rng.random_range(0..2000),
            reasoning: if rng.random_bool(0.2) { rng.random_range(0..4000) } else { 0 },
            unclassified: 0,
        },
        quality: Quality::Complete,
        ..NewEvent::default()
    };
    e.set_dim(Dim::Method, "POST");
    e.set_dim(Dim::Endpoint, if rng.random_bool(0.7) { "/v1/chat/completions" } else { "/v1/messages" });
    e.set_dim(Dim::Model, models[rng.random_range(0..models.len())]);
    e.set_dim(Dim::Provider, ["openai", "anthropic", "google"][rng.random_range(0..3)]);
    e.set_dim(Dim::Credential, format!("cred-{}", rng.random_range(0..4)));
    e.set_dim(Dim::Key, format!("key-{}", rng.random_range(0..50)));
    if rng.random_bool(0.1) {
        e.status = [429, 500, 502][rng.random_range(0..3)];
        e.success = false;
        e.set_dim(Dim::ErrorClass, "upstream");
        e.error_message = Some(format!("upstream said {}", e.status));
    }
    if rng.random_bool(0.5) {
        e.stream = true;
        e.ttft_ms = Some(rng.random_range(10..3000));
    }
    e
}

pub fn events(seed: u64, n: usize, start_ms: i64, step_ms: i64) -> Vec<NewEvent> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n).map(|i| event(&mut rng, start_ms + i as i64 * step_ms)).collect()
}

/// Every stored event, oldest first.
pub fn all_events(engine: &Engine) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    engine.scan(&LogFilter::default(), &mut |ev| {
        out.push(ev.clone());
        true
    });
    out
}

/// Checks a stored event against what was appended.
pub fn same_event(engine: &Engine, stored: &StoredEvent, sent: &NewEvent) -> bool {
    engine.with_interner(|i| {
        Dim::ALL.iter().all(|d| i.resolve(stored.dim(*d)) == sent.dim(*d))
            && stored.ts_ms == sent.ts_ms
            && stored.status == sent.status
            && stored.success == sent.success
            && stored.tokens == sent.tokens
            && stored.latency_ms == sent.latency_ms
            && stored.ttft_ms == sent.ttft_ms
            && stored.stream == sent.stream
            && stored.quality == sent.quality
            && stored.event_id.as_deref() == sent.event_id.as_deref()
            && stored.error_message.as_deref() == sent.error_message.as_deref()
            && stored.request_id.as_deref() == sent.request_id.as_deref()
    })
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// (offset, header) of every valid frame of a segment file, in order, up to the first invalid one.
pub fn frames(path: &Path) -> Vec<(usize, FrameHeader)> {
    let bytes = std::fs::read(path).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut out = Vec::new();
    while pos + FRAME_HEADER_BYTES <= bytes.len() {
        match format::check_frame(header.salt, &bytes[pos..]) {
            Ok((h, _)) => {
                out.push((pos, h));
                pos += h.frame_bytes();
            }
            Err(_) => break,
        }
    }
    out
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "LOCK" {
            continue;
        }
        std::fs::copy(e.path(), to.join(name)).unwrap();
    }
}
