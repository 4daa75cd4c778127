//! The workload the benchmarks share: realistic usage events for a busy gateway.
//!
//! ~30 models with a skewed mix, 10k client keys (Zipf), 20 credentials, 2 % errors, streaming and
//! non-streaming calls, timestamps over 30 days (mostly in order, some a few seconds late). The
//! generator is seeded, so every engine in a comparison sees the same events.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokenboard_engine::{Dim, NewEvent, Quality, Tokens};

pub const MODELS: usize = 30;
pub const KEYS: usize = 10_000;
pub const CREDENTIALS: usize = 20;
pub const DAYS: i64 = 30;
/// 2026-01-01T00:00:00Z.
pub const START_MS: i64 = 1_767_225_600_000;

/// A sampler for a discrete distribution with weights `1 / (i + 1)^s`.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for i in 0..n {
            acc += 1.0 / ((i + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in cdf.iter_mut() {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut SmallRng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

pub struct Workload {
    rng: SmallRng,
    models: Vec<String>,
    providers: Vec<&'static str>,
    keys: Vec<String>,
    credentials: Vec<String>,
    model_zipf: Zipf,
    key_zipf: Zipf,
    n_total: u64,
    i: u64,
}

impl Workload {
    /// A stream of `n_total` events spread evenly over `DAYS` days from `START_MS`.
    pub fn new(seed: u64, n_total: u64) -> Workload {
        let families = ["gpt-5", "claude-sonnet-4", "gemini-2.5-pro", "deepseek-v3", "qwen3-coder"];
        let models = (0..MODELS).map(|i| format!("{}-{}", families[i % families.len()], i / families.len())).collect();
        Workload {
            rng: SmallRng::seed_from_u64(seed),
            models,
            providers: vec!["openai", "anthropic", "google", "deepseek", "alibaba"],
            keys: (0..KEYS).map(|i| format!("sk-fp-{i:05x}")).collect(),
            credentials: (0..CREDENTIALS).map(|i| format!("account-{i:02}")).collect(),
            model_zipf: Zipf::new(MODELS, 1.2),
            key_zipf: Zipf::new(KEYS, 1.0),
            n_total: n_total.max(1),
            i: 0,
        }
    }

    pub fn model_name(&self, i: usize) -> &str {
        &self.models[i]
    }

    pub fn next_event(&mut self) -> NewEvent {
        let span = DAYS * 86_400_000;
        let base = START_MS + (self.i as i128 * span as i128 / self.n_total as i128) as i64;
        self.i += 1;
        let rng = &mut self.rng;
        let late = if rng.random_bool(0.01) { rng.random_range(0..5_000) } else { 0 };
        let m = self.model_zipf.sample(rng);
        let stream = rng.random_bool(0.6);
        let failed = rng.random_bool(0.02);
        let u: f64 = rng.random();
        let input = (200.0 + u * u * 12_000.0) as u64;
        let cached = if rng.random_bool(0.35) { input * rng.random_range(1..4) } else { 0 };
        let output = if failed { 0 } else { rng.random_range(20..1500) };
        let reasoning = if m.is_multiple_of(3) && !failed { rng.random_range(0..3000) } else { 0 };
        let latency_ms = if failed { rng.random_range(100..3000) } else { rng.random_range(400..2000) + output as u32 * 8 };
        let mut e = NewEvent {
            ts_ms: base - late,
            status: if failed { [429, 500, 502, 401][rng.random_range(0..4)] } else { 200 },
            success: !failed,
            latency_ms,
            ttft_ms: if stream { Some(rng.random_range(150..1500)) } else { None },
            stream,
            tokens: Tokens { input_uncached: input, cache_read: cached, cache_write: 0, output, reasoning, unclassified: 0 },
            quality: Quality::Complete,
            ..NewEvent::default()
        };
        e.set_dim(Dim::Method, "POST");
        e.set_dim(Dim::Endpoint, if m % 5 == 1 { "/v1/messages" } else { "/v1/chat/completions" });
        e.set_dim(Dim::Model, self.models[m].as_str());
        e.set_dim(Dim::Provider, self.providers[m % self.providers.len()]);
        e.set_dim(Dim::Credential, self.credentials[rng.random_range(0..CREDENTIALS)].as_str());
        e.set_dim(Dim::Key, self.keys[self.key_zipf.sample(rng)].as_str());
        e.set_dim(Dim::Instance, "gw-1");
        if failed {
            e.set_dim(Dim::ErrorClass, if e.status == 429 { "rate_limited" } else { "upstream_error" });
            e.error_message = Some(format!("upstream returned {}", e.status));
        }
        e
    }

    pub fn batch(&mut self, n: usize) -> Vec<NewEvent> {
        (0..n).map(|_| self.next_event()).collect()
    }
}

/// Events in the big dataset: `TB_BENCH_EVENTS`, default 10 million.
pub fn dataset_events() -> u64 {
    std::env::var("TB_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000)
}

/// A data directory holding `n` workload events, built once and reused across bench runs (it is
/// rebuilt when the format version changes or the build was interrupted).
pub fn dataset(n: u64) -> std::path::PathBuf {
    use tokenboard_engine::{Durability, Engine, EngineOptions, Retention};
    let root = std::env::var_os("TB_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    // Bump DATASET_REVISION when the workload or the encoding changes without a format version bump.
    const DATASET_REVISION: u32 = 3;
    let dir = root.join(format!("tokenboard-bench-{n}-v{}-r{DATASET_REVISION}", tokenboard_engine::format::FORMAT_VERSION));
    let done = dir.with_extension("complete");
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = EngineOptions::new(&dir);
    o.durability = Durability::Never;
    o.retention = Retention::none();
    o.segment_age_max_ms = 365 * 86_400_000;
    let (engine, _) = Engine::open(o).expect("open bench dataset");
    let mut w = Workload::new(42, n);
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000) as usize;
        engine.append(&w.batch(k)).expect("append");
        left -= k as u64;
    }
    engine.close().expect("close");
    std::fs::write(&done, b"").expect("mark dataset complete");
    dir
}

/// The options the benches open a dataset with.
pub fn bench_options(dir: &std::path::Path) -> tokenboard_engine::EngineOptions {
    let mut o = tokenboard_engine::EngineOptions::new(dir);
    o.retention = tokenboard_engine::Retention::none();
    o.segment_age_max_ms = 365 * 86_400_000;
    // The rebuild figures are of a rebuild: no state saved at close to load instead.
    o.save_state = false;
    o
}

/// The CPU time of the calling thread so far, in ns (`CLOCK_THREAD_CPUTIME_ID`): what an
/// appender spent, apart from its waits.
pub fn thread_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Counts what is really allocated: see `tokenboard_engine::counting`.
pub use tokenboard_engine::counting::{CountingAlloc, allocated_bytes};
