//! The engine: opens a data directory, recovers its segments, rebuilds the views and indexes, and
//! serves appends, queries, subscriptions and retention.
//!
//! Concurrency: one `RwLock<State>` holds the segments, interner and dedup set. An append takes
//! the write lock for encode + `pwrite` + block offsets, so sequence numbers follow append order,
//! and hands its events to the views and the live segment's bitmaps (`fold`): a large batch is
//! folded on the fold thread while the next append encodes, a small one inline or left pending
//! for that thread (see `fold`). Queries take the read lock and then make sure those hold every
//! event written before it, so a read never sees them behind the log (`Engine::folded`).
//! Syncing to disk happens outside that lock: under `Durability::Always` concurrent appenders share one `fdatasync`
//! (group commit) in `SyncState`.
//!
//! Invariants:
//! - `written_seq` ≥ `durable_seq`; an event at or below `durable_seq` is on disk.
//! - After a failed write or fsync the engine is fenced: every later append fails until reopen.
//! - The live segment is the last one; sealed segments never change and are shared as `Arc`s, so a
//!   reader holding one keeps reading while retention unlinks its file.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::event::{Dim, NewEvent, StoredEvent, Sym};
use crate::fold::{self, Fold, FoldQueue, Folded};
use crate::format::{self, SegmentHeader, FORMAT_VERSION, KIND_DICT, KIND_EVENT, SEGMENT_HEADER_BYTES};
use crate::index::{self, LogFilter};
use crate::interner::{same_str, Interner, STRINGS_MAX};
use crate::rollup::{self, History, HistoryBucket, HistoryRow, RollupAgg, RollupGroup, Rollups};
use crate::saved;
use crate::index::{LazyIndex, SegmentIndex};
use crate::segment::{self, ScanBounds, ScanIssue, Segment, Shape};
use crate::views::{EdgeScan, Granularity, Group, LoadedDays, LoadedRest, Sign, Summary, TimeRange, TrendBucket, Views};

const MS_PER_HOUR: i64 = 3_600_000;

/// Work for the index thread of a rebuild.
enum IndexWork {
    Entries(Vec<index::TailEntry>),
    /// The segment is read: hand its index back.
    Finish,
}

/// How long after an open from the saved state the sealed segments' bitmaps start loading in
/// the background (a log query that needs them loads them at once).
const INDEX_LOAD_DELAY: Duration = Duration::from_millis(500);

/// How often the interval syncer starts the write-back of what was written since it last looked
/// (`Durable::write_behind`), between its syncs.
const WRITE_BEHIND: Duration = Duration::from_millis(10);

/// Decoded events handed to the views thread at a time during a rebuild.
const REBUILD_CHUNK_EVENTS: usize = 4096;

/// `Dim` indexes with the key first: see `append_locked`.
const KEY_FIRST_ORDER: [usize; Dim::COUNT] = {
    let mut order = [0usize; Dim::COUNT];
    order[0] = Dim::Key as usize;
    let mut i = 0;
    let mut n = 1;
    while i < Dim::COUNT {
        if i != Dim::Key as usize {
            order[n] = i;
            n += 1;
        }
        i += 1;
    }
    order
};
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// When an append is acknowledged relative to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After `fdatasync`; concurrent appends share one sync.
    Always,
    /// After the write reaches the page cache; synced every `every_ms` milliseconds.
    Interval { every_ms: u64 },
    /// After the write reaches the page cache; synced only at roll and close.
    Never,
}

/// What `Engine::top` ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopBy {
    Calls,
    Tokens,
}

/// Retention limits; each `None` means no limit of that kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_age_ms: Option<i64>,
    pub max_bytes: Option<u64>,
    pub max_events: Option<u64>,
}

impl Retention {
    /// Keep everything.
    pub fn none() -> Retention {
        Retention { max_age_ms: None, max_bytes: None, max_events: None }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_ms: Some(30 * MS_PER_DAY), max_bytes: None, max_events: None }
    }
}

/// Test hooks that make disk operations fail, to prove the error paths.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct IoFaults {
    pub fail_fsync: AtomicBool,
    /// Fail preallocation of new segments with ENOSPC.
    pub fail_fallocate: AtomicBool,
    /// Fail writes with ENOSPC.
    pub fail_write: AtomicBool,
}

pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Clone)]
pub struct EngineOptions {
    pub dir: PathBuf,
    pub durability: Durability,
    /// A segment is sealed when the next batch would not fit (default 64 MiB).
    pub segment_bytes_max: u64,
    /// ...or when it is older than this (default 24 h).
    pub segment_age_max_ms: i64,
    /// An event id seen within at least this long is a duplicate (default 48 h, minimum 24 h).
    pub dedup_window_ms: i64,
    /// Timestamps further ahead of the clock than this are clamped and flagged (default 24 h).
    pub future_skew_max_ms: i64,
    pub retention: Retention,
    /// Batches a subscriber may fall behind before it is dropped (default 1024).
    pub subscriber_queue_max: usize,
    /// Events one append may carry (default 100 000).
    pub batch_events_max: usize,
    /// How often a background thread enforces retention (`cleanup_interval`; default 1 h).
    /// `None`: only when `Engine::enforce_retention` is called.
    pub retention_interval_ms: Option<u64>,
    /// Save the in-memory state at `close`, so the next open loads it instead of rebuilding it
    /// from the log (default true; see the `saved` module).
    pub save_state: bool,
    #[doc(hidden)]
    pub faults: Option<Arc<IoFaults>>,
    /// Wall clock in UTC ms; replaceable for tests.
    pub clock: Clock,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("segment_age_max_ms", &self.segment_age_max_ms)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

pub fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The engine's default clock: the kernel's coarse wall clock, which advances once a timer tick
/// (1–4 ms) and costs a few ns where the precise one costs about 20, on every append. What the
/// engine does with the time (roll a segment by age, clamp a far-future timestamp, tell dense
/// small appends) does not need the millisecond.
pub fn coarse_clock_ms() -> i64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000;
        }
    }
    system_clock_ms()
}

impl EngineOptions {
    pub fn new(dir: impl Into<PathBuf>) -> EngineOptions {
        EngineOptions {
            dir: dir.into(),
            durability: Durability::Interval { every_ms: 200 },
            segment_bytes_max: 64 << 20,
            segment_age_max_ms: MS_PER_DAY,
            dedup_window_ms: 2 * MS_PER_DAY,
            future_skew_max_ms: MS_PER_DAY,
            retention: Retention::default(),
            subscriber_queue_max: 1024,
            batch_events_max: 100_000,
            retention_interval_ms: Some(3_600_000),
            save_state: true,
            faults: None,
            clock: Arc::new(coarse_clock_ms),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, reason: &str| Err(Error::InvalidOption { name, reason: reason.to_string() });
        if !(64 * 1024..=1 << 30).contains(&self.segment_bytes_max) {
            return bad("segment_bytes_max", "must be between 64 KiB and 1 GiB");
        }
        if self.segment_age_max_ms < 1000 {
            return bad("segment_age_max_ms", "must be at least one second");
        }
        if self.dedup_window_ms < MS_PER_DAY {
            return bad("dedup_window_ms", "must cover at least 24 hours");
        }
        if self.future_skew_max_ms < 0 {
            return bad("future_skew_max_ms", "must not be negative");
        }
        if let Durability::Interval { every_ms } = self.durability
            && (every_ms == 0 || every_ms > 60_000) {
                return bad("durability", "interval must be between 1 ms and 60 s");
            }
        if self.retention_interval_ms.is_some_and(|ms| ms < 1000) {
            return bad("retention_interval_ms", "must be at least one second");
        }
        if self.subscriber_queue_max == 0 || self.batch_events_max == 0 {
            return bad("subscriber_queue_max", "limits must be positive");
        }
        Ok(())
    }
}

/// One finding of recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryIssue {
    pub segment: PathBuf,
    pub kind: RecoveryIssueKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryIssueKind {
    Scan(ScanIssue),
    /// Sequence numbers `[from, to]` are missing: a segment file was lost or its start corrupted.
    SequenceGap { from: u64, to: u64 },
    /// The segment header is unreadable; the file was skipped (and left in place).
    BadHeader { reason: String },
    /// A leftover of an interrupted roll or retention was removed.
    LeftoverRemoved,
    /// Retention had folded this segment into the rollups before a crash; it was deleted now.
    FoldedSegmentRemoved,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub events: u64,
    pub issues: Vec<RecoveryIssue>,
    /// Whether the previous run closed cleanly.
    pub clean_shutdown: bool,
    /// Whether the state saved at that clean shutdown was loaded instead of rebuilding it.
    pub restored: bool,
}

impl RecoveryReport {
    pub fn corruptions(&self) -> usize {
        self.issues
            .iter()
            .filter(|i| matches!(i.kind, RecoveryIssueKind::Scan(ScanIssue::Corruption { .. }) | RecoveryIssueKind::BadHeader { .. }))
            .count()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    pub accepted: usize,
    pub duplicates: usize,
    /// The sequence number of the last event of the log after this append.
    pub last_seq: u64,
    /// The sequence numbers given to this batch's accepted events, in input order.
    pub first_seq: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogPage {
    pub events: Vec<StoredEvent>,
    /// Pass as `before_seq` to get the next page; `None` when there is nothing older.
    pub next_cursor: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub events_deleted: u64,
    pub bytes_deleted: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStatus {
    pub last_seq: u64,
    pub durable_seq: u64,
    pub segments: usize,
    pub events: u64,
    pub bytes_on_disk: u64,
    /// Approximate heap of everything below, for the memory budget.
    pub heap_bytes: usize,
    pub heap: HeapBreakdown,
    pub fenced: bool,
    pub oldest_ts_ms: Option<i64>,
    pub newest_ts_ms: Option<i64>,
}

/// Where the engine's heap goes (approximate bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapBreakdown {
    pub views: usize,
    pub bitmaps: usize,
    pub blocks_and_dicts: usize,
    pub interner: usize,
    pub dedup: usize,
    /// The daily rollups of deleted segments (bounded by days, see
    /// [`crate::rollup::NAMES_PER_DAY_MAX`]).
    pub rollups: usize,
}

/// Idempotency: 128-bit hashes of event ids seen, with the sequence number that carried each.
#[derive(Default)]
struct Dedup {
    seen: FxHashMap<u128, u64>,
}

impl Dedup {
    fn hash(id: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(id.as_bytes())
    }
}

/// Puts an append's buffer `v` back in `slot`, emptied, for the next append, unless it grew past
/// `max` elements (a huge batch's, or a large one's that went to the fold thread).
fn keep_scratch<T>(slot: &mut Vec<T>, mut v: Vec<T>, max: usize) {
    if v.capacity() != 0 && v.capacity() <= max {
        v.clear();
        *slot = v;
    }
}

/// `pipelined` hands events over in batches of this many, at most this many batches ahead (about
/// 1.4 MB in flight).
const PIPELINE_BATCH_EVENTS: usize = 1024;
const PIPELINE_BATCHES: usize = 8;

/// How far ahead in a batch an append asks for the strings of an event.
const PREFETCH_EVENTS_AHEAD: usize = 4;

/// The most events an append's reused symbol buffer keeps room for.
const DIMS_SCRATCH_MAX: usize = 4096;

struct State {
    sealed: Vec<Arc<Segment>>,
    live: Segment,
    live_file: Arc<File>,
    /// Where appends hand their events to the views (see `fold`).
    fold_queue: FoldQueue,
    interner: Interner,
    dedup: Dedup,
    /// Shared so that a retention pass copies it outside the lock.
    rollups: Arc<Rollups>,
    next_seq: u64,
    /// Reused encode buffer, and where in it each event's frame starts.
    buf: Vec<u8>,
    event_frames: Vec<u32>,
    /// Reused per-event buffers of an append: the symbols of each event, or `None` for a
    /// duplicate; and the stored events of a small batch (a large one hands its own vector over).
    dims_scratch: Vec<Option<[Sym; Dim::COUNT]>>,
    stored_scratch: Vec<StoredEvent>,
    /// Where rolls send the segments they sealed, to have their bitmaps compacted
    /// (`Engine::compact_later`); started by the first roll.
    compactor: Option<std::sync::mpsc::Sender<Compaction>>,
}

impl State {
    fn segments(&self) -> impl DoubleEndedIterator<Item = &Segment> {
        self.sealed.iter().map(|s| &**s).chain(std::iter::once(&self.live))
    }

    /// Each segment with its bitmaps: a sealed segment keeps its own, the live one's are folded
    /// with the views.
    fn indexed_segments<'a>(&'a self, folded: &'a Folded) -> impl DoubleEndedIterator<Item = (&'a Segment, &'a SegmentIndex)> {
        self.sealed.iter().map(|s| (&**s, s.index())).chain(std::iter::once((&self.live, folded.live().index())))
    }
}

struct SyncState {
    durable_seq: u64,
    syncing: bool,
    file: Arc<File>,
    path: PathBuf,
}

/// What the appenders and the background syncer share: it holds no file lock, so the directory
/// is released as soon as the last `Engine` handle is gone, whatever the syncer is doing.
struct Durable {
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    written_seq: AtomicU64,
    fenced: Mutex<Option<(&'static str, PathBuf)>>,
    is_fenced: AtomicBool,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    faults: Option<Arc<IoFaults>>,
}

impl Durable {
    fn check_fenced(&self) -> Result<()> {
        if self.is_fenced.load(Ordering::Acquire) {
            let f = self.fenced.lock().unwrap_or_else(|e| e.into_inner());
            return Err(match f.clone() {
                Some(("close", _)) => Error::Closed,
                Some((op, path)) => Error::Fenced { op, path },
                None => Error::Fenced { op: "write", path: PathBuf::new() },
            });
        }
        Ok(())
    }

    fn fence(&self, op: &'static str, path: &Path) {
        let mut f = self.fenced.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some((op, path.to_path_buf()));
        }
        self.is_fenced.store(true, Ordering::Release);
    }

    fn sync_file(&self, file: &File, path: &Path) -> Result<()> {
        let injected = self.faults.as_ref().is_some_and(|f| f.fail_fsync.load(Ordering::Relaxed));
        let r = if injected { Err(std::io::Error::from_raw_os_error(libc::EIO)) } else { file.sync_data() };
        r.map_err(|e| {
            // No retry: after a failed fsync the kernel may have dropped the dirty pages.
            self.fence("fdatasync", path);
            Error::io("fdatasync", path, e)
        })
    }

    /// Waits until every event up to `seq` is on disk, sharing one fdatasync with concurrent
    /// callers (group commit).
    fn sync_through(&self, seq: u64) -> Result<()> {
        let mut g = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.durable_seq >= seq {
                return Ok(());
            }
            self.check_fenced()?;
            if g.syncing {
                g = self.sync_cv.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g.syncing = true;
            let upto = self.written_seq.load(Ordering::Acquire);
            let file = g.file.clone();
            let path = g.path.clone();
            drop(g);
            let r = self.sync_file(&file, &path);
            g = self.sync.lock().unwrap_or_else(|e| e.into_inner());
            g.syncing = false;
            if r.is_ok() {
                g.durable_seq = g.durable_seq.max(upto);
            }
            self.sync_cv.notify_all();
            r?;
        }
    }

    fn stop(&self) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop_cv.notify_all();
    }

    fn stopped(&self) -> bool {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the write-back of the live segment's dirty pages, without waiting for it: done
    /// often between two syncs, it leaves little for the next `fdatasync` to write, above all the
    /// one a roll makes the appender wait for (at 5 M events/s, 200 ms of data took it about
    /// 30 ms). A hint only: a write-back error is still reported by the next sync.
    fn write_behind(&self) {
        let file = self.sync.lock().unwrap_or_else(|e| e.into_inner()).file.clone();
        #[cfg(target_os = "linux")]
        // SAFETY: a descriptor we own; offset 0 and length 0 cover the whole file. Without a
        // wait flag the call neither waits for nor consumes a write-back error.
        unsafe {
            libc::sync_file_range(std::os::fd::AsRawFd::as_raw_fd(&*file), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
    }

    /// Sleeps for `period` or until `stop`; returns whether the engine is stopping.
    fn sleep_unless_stopped(&self, period: Duration) -> bool {
        let guard = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        // The flag is checked under the lock before waiting, so a stop that came first is seen.
        let (guard, _) = self
            .stop_cv
            .wait_timeout_while(guard, period, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

struct Shared {
    opts: EngineOptions,
    /// In an `Arc` of its own so the compactor thread can hold it weakly: were it to hold the
    /// engine's `Shared`, a drop of the last handle could leave the directory locked a moment.
    state: Arc<RwLock<State>>,
    durable: Arc<Durable>,
    /// The views and the subscribers, fed by appends through `State::fold_queue`.
    fold: Arc<Fold>,
    /// The retention thread, joined by `close`.
    workers: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held by a retention pass: passes take turns (see `enforce_retention`).
    retention_turn: Mutex<()>,
    _lock: File,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.durable.stop();
    }
}

/// A handle to an open data directory. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

const CLEAN_MARKER: &str = "clean-shutdown";
const LOCK_FILE: &str = "LOCK";

impl Engine {
    pub fn open(opts: EngineOptions) -> Result<(Engine, RecoveryReport)> {
        opts.validate()?;
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = lock_dir(&dir)?;
        let mut report = RecoveryReport::default();
        let clean_path = dir.join(CLEAN_MARKER);
        report.clean_shutdown = clean_path.exists();
        if report.clean_shutdown {
            fs::remove_file(&clean_path).map_err(|e| Error::io("remove", &clean_path, e))?;
        }
        let now = (opts.clock)();

        // Leftovers of interrupted rolls and retention.
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".seg.tmp") || name.ends_with(".deleted") || name == "rollups.tmp" || name == saved::TMP_FILE {
                let p = entry.path();
                fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
                report.issues.push(RecoveryIssue { segment: p, kind: RecoveryIssueKind::LeftoverRemoved });
            } else if let Some(base) = segment::parse_segment_file_name(&name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let rollups = Rollups::load(&dir)?;
        // A crash between writing the rollups and deleting a segment leaves a folded segment.
        while bases.len() > 1 && bases[1] <= rollups.folded_through_seq + 1 {
            let p = dir.join(segment::segment_file_name(bases[0]));
            fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            report.issues.push(RecoveryIssue { segment: p, kind: RecoveryIssueKind::FoldedSegmentRemoved });
            bases.remove(0);
        }
        rollup::sync_dir(&dir)?;

        // The state saved at a clean shutdown, if it still describes the log; else a rebuild.
        let saved_path = dir.join(saved::FILE);
        let saved_file = if report.clean_shutdown && opts.save_state { saved::open(&saved_path) } else { None };
        match fs::remove_file(&saved_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("remove", &saved_path, e)),
            _ => {}
        }
        let restored = saved_file.as_ref().and_then(|f| restore(&opts, &bases, &rollups, f));
        report.restored = restored.is_some();
        let (mut loaded, live_file, interner, dedup, last_seq, views) = if let Some(r) = restored {
            report.events = r.loaded.iter().map(|s| s.n_events).sum();
            (r.loaded, Some(r.live_file), r.interner, r.dedup, r.last_seq, r.views)
        } else {
            let mut interner = Interner::new();
            let mut dedup = Dedup::default();
            let mut loaded: Vec<Segment> = Vec::new();
            let mut live_file: Option<Arc<File>> = None;
            let mut last_seq = rollups.folded_through_seq;
            let dedup_cutoff = now - opts.dedup_window_ms - opts.segment_age_max_ms;
            // Rebuild on three threads: this one reads, checks and decodes frames; one folds the
            // decoded events into the views; one builds each segment's bitmaps.
            let views = std::thread::scope(|scope| -> Result<Views> {
                let (to_views, chunks) = std::sync::mpsc::sync_channel::<Vec<StoredEvent>>(4);
                // Emptied chunks come back, so the reader does not allocate (and the kernel zero)
                // fresh pages for every chunk.
                let (recycle, recycled) = std::sync::mpsc::sync_channel::<Vec<StoredEvent>>(6);
                let folder = scope.spawn(move || {
                    let mut views = Views::new();
                    for mut chunk in chunks {
                        for ev in &chunk {
                            views.apply(ev, Sign::Add);
                        }
                        chunk.clear();
                        let _ = recycle.try_send(chunk);
                    }
                    views
                });
                let (to_indexer, index_work) = std::sync::mpsc::sync_channel::<IndexWork>(4);
                let (built, built_indexes) = std::sync::mpsc::sync_channel::<SegmentIndex>(1);
                let indexer = scope.spawn(move || {
                    let mut index = SegmentIndex::default();
                    for work in index_work {
                        match work {
                            IndexWork::Entries(entries) => entries.into_iter().for_each(|e| index.add_entry(e)),
                            IndexWork::Finish => {
                                if built.send(std::mem::take(&mut index)).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                let mut pending: Vec<StoredEvent> = Vec::with_capacity(REBUILD_CHUNK_EVENTS);
                let mut entries: Vec<index::TailEntry> = Vec::with_capacity(REBUILD_CHUNK_EVENTS);
                for (i, &base) in bases.iter().enumerate() {
                    let path = dir.join(segment::segment_file_name(base));
                    let newest = i + 1 == bases.len();
                    let file = OpenOptions::new()
                        .read(true)
                        .write(newest)
                        .open(&path)
                        .map_err(|e| Error::io("open", &path, e))?;
                    let header = match segment::read_header(&file, base) {
                        Ok(h) => h,
                        Err(reason) => {
                            // Keep the file for inspection, out of the way of the log.
                            drop(file);
                            let aside = path.with_extension("seg.corrupt");
                            fs::rename(&path, &aside).map_err(|e| Error::io("rename", &path, e))?;
                            report.issues.push(RecoveryIssue { segment: aside, kind: RecoveryIssueKind::BadHeader { reason } });
                            continue;
                        }
                    };
                    if newest {
                        // A shortened newest segment is preallocated again so appends can continue it.
                        let len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
                        if len < opts.segment_bytes_max {
                            // SAFETY: fallocate on a descriptor we own; failure leaves the file as it was.
                            unsafe {
                                libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, opts.segment_bytes_max as libc::off_t);
                            }
                        }
                    }
                    let mut seg = Segment::new_mapped(path.clone(), header, &file)?;
                    let bounds = ScanBounds {
                        seq_floor: last_seq,
                        seq_ceiling: bases.get(i + 1).copied().unwrap_or(u64::MAX),
                        newest,
                        data_len: segment::data_end(&file, seg.file_len),
                    };
                    let sealed_at = bases.get(i + 1).map(|_| now);
                    let in_dedup_window = sealed_at.is_none() || header.created_ms + opts.segment_age_max_ms >= dedup_cutoff;
                    seg.ids_in_dedup.store(in_dedup_window, Ordering::Relaxed);
                    let outcome = segment::scan(&mut seg, &bounds, &mut interner, &mut |seg, offset, ev| {
                        let seq_delta = seg.note_position(offset, &ev);
                        entries.push(SegmentIndex::entry(seq_delta, &ev));
                        if entries.len() >= REBUILD_CHUNK_EVENTS {
                            let _ = to_indexer.send(IndexWork::Entries(std::mem::replace(&mut entries, Vec::with_capacity(REBUILD_CHUNK_EVENTS))));
                        }
                        if in_dedup_window && let Some(id) = &ev.event_id {
                            dedup.seen.insert(Dedup::hash(id), ev.seq);
                        }
                        pending.push(ev);
                        if pending.len() >= REBUILD_CHUNK_EVENTS {
                            let next = recycled.try_recv().unwrap_or_else(|_| Vec::with_capacity(REBUILD_CHUNK_EVENTS));
                            // The views thread only stops early if it panicked; join reports that.
                            let _ = to_views.send(std::mem::replace(&mut pending, next));
                        }
                    });
                    if let Some(first) = seg.first_seq
                        && first > last_seq + 1 {
                            report.issues.push(RecoveryIssue { segment: path.clone(), kind: RecoveryIssueKind::SequenceGap { from: last_seq + 1, to: first - 1 } });
                        }
                    // The segment's bitmaps, built on the index thread.
                    let _ = to_indexer.send(IndexWork::Entries(std::mem::take(&mut entries)));
                    let _ = to_indexer.send(IndexWork::Finish);
                    let mut index = built_indexes.recv().expect("the index thread does not panic");
                    if newest {
                        // A sealed one is compacted when it is sealed, below.
                        index.flush();
                    }
                    seg.set_index(LazyIndex::loaded(index));
                    for issue in outcome.issues {
                        report.issues.push(RecoveryIssue { segment: path.clone(), kind: RecoveryIssueKind::Scan(issue) });
                    }
                    if let Some((from, to)) = outcome.cut {
                        segment::zero_range(&file, &path, from, to)?;
                    }
                    last_seq = last_seq.max(seg.last_seq.unwrap_or(0));
                    report.events += seg.n_events;
                    if newest {
                        seg.dict.enable_writing();
                        live_file = Some(Arc::new(file));
                    }
                    loaded.push(seg);
                }
                if !pending.is_empty() {
                    let _ = to_views.send(pending);
                }
                drop(to_views);
                drop(to_indexer);
                indexer.join().expect("the index thread does not panic");
                Ok(folder.join().expect("the views thread does not panic"))
            })?;
            // Sealed-at times: a segment stopped taking appends when the next one was created.
            for i in 0..loaded.len().saturating_sub(1) {
                let next_created = loaded[i + 1].header.created_ms;
                loaded[i].seal(next_created);
            }
            (loaded, live_file, interner, dedup, last_seq, views)
        };
        report.segments = loaded.len();
        let next_seq = last_seq + 1;

        let (live, live_file) = match live_file {
            Some(file) => (loaded.pop().expect("the newest segment was loaded"), file),
            None => {
                // No segment yet, or the newest one has an unreadable header.
                if let Some(last) = loaded.last_mut() {
                    last.seal(now);
                }
                let (seg, file) = create_segment(&opts, next_seq, now)?;
                (seg, Arc::new(file))
            }
        };
        // The newest segment may have lost every event (a cut or corrupt tail): its sequence
        // numbers still start at its base.
        let next_seq = next_seq.max(live.header.base_seq);
        let sealed: Vec<Arc<Segment>> = loaded.into_iter().map(Arc::new).collect();
        let to_load = report.restored.then(|| sealed.clone());
        let mut live = live;
        let path = live.path.clone();
        // The live segment's bitmaps are kept with the views (loaded when first needed).
        let (fold, fold_queue) = Fold::start(views, live.detach_index(), last_seq).map_err(|e| Error::io("spawn fold thread", PathBuf::new(), e))?;
        let state = State {
            sealed,
            live,
            live_file: live_file.clone(),
            fold_queue,
            interner,
            dedup,
            rollups: Arc::new(rollups),
            next_seq,
            buf: Vec::new(),
            event_frames: Vec::new(),
            dims_scratch: Vec::new(),
            stored_scratch: Vec::new(),
            compactor: None,
        };
        let durable = Arc::new(Durable {
            sync: Mutex::new(SyncState { durable_seq: last_seq, syncing: false, file: live_file, path }),
            sync_cv: Condvar::new(),
            written_seq: AtomicU64::new(last_seq),
            fenced: Mutex::new(None),
            is_fenced: AtomicBool::new(false),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            faults: opts.faults.clone(),
        });
        if let Some(segments) = to_load {
            // The sealed segments' bitmaps are still in the saved file (unlinked, mapped): load
            // them in the background, so that file's space is freed without waiting for queries.
            // A moment later, not during the first queries: tens of MB of bitmaps allocated
            // at once make the page faults of the whole process queue up (an open plus first
            // totals at 10M events took 33-39 ms with the load running beside it, 17-23 without).
            // The views' minute slots still in that file are decoded then too.
            let durable = durable.clone();
            let fold = fold.clone();
            let _ = std::thread::Builder::new().name("tokenboard-load-saved".into()).spawn(move || {
                // An engine closed or dropped meanwhile needs none of them.
                if durable.sleep_unless_stopped(INDEX_LOAD_DELAY) {
                    return;
                }
                fold.load_saved(&|| durable.stopped());
                for seg in segments {
                    if durable.stopped() {
                        return;
                    }
                    seg.index();
                }
            });
        }
        if let Durability::Interval { every_ms } = opts.durability {
            let durable = durable.clone();
            std::thread::Builder::new()
                .name("tokenboard-sync".into())
                .spawn(move || interval_syncer(durable, every_ms))
                .map_err(|e| Error::io("spawn sync thread", PathBuf::new(), e))?;
        }
        let shared = Arc::new(Shared {
            durable,
            workers: Mutex::new(None),
            retention_turn: Mutex::new(()),
            fold,
            state: Arc::new(RwLock::new(state)),
            opts,
            _lock: lock,
        });
        if let Some(every_ms) = shared.opts.retention_interval_ms {
            let weak = Arc::downgrade(&shared);
            let durable = shared.durable.clone();
            let handle = std::thread::Builder::new()
                .name("tokenboard-retention".into())
                .spawn(move || retention_worker(weak, durable, every_ms))
                .map_err(|e| Error::io("spawn retention thread", PathBuf::new(), e))?;
            *shared.workers.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        }
        Ok((Engine { shared }, report))
    }

    pub fn options(&self) -> &EngineOptions {
        &self.shared.opts
    }

    /// Appends a batch. Events are validated first; one invalid event rejects the whole batch and
    /// nothing of it is stored. Returns once the batch is as durable as the policy promises.
    pub fn append(&self, events: &[NewEvent]) -> Result<AppendOutcome> {
        for (index, ev) in events.iter().enumerate() {
            ev.validate().map_err(|error| Error::InvalidEvent { index, error })?;
        }
        if events.len() > self.shared.opts.batch_events_max {
            return Err(Error::InvalidOption { name: "batch", reason: format!("{} events, at most {} per append", events.len(), self.shared.opts.batch_events_max) });
        }
        self.shared.durable.check_fenced()?;
        let outcome = {
            let mut st = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            let (outcome, mut stored, now) = self.append_locked(&mut st, events)?;
            // Handed over under the lock, so the views and subscribers get batches in sequence order.
            if !stored.is_empty() {
                self.shared.fold.submit(&mut st.fold_queue, &mut stored, outcome.last_seq, now);
            }
            // A small batch's vector comes back emptied, for the next one.
            keep_scratch(&mut st.stored_scratch, stored, 2 * fold::ASYNC_MIN_EVENTS);
            outcome
        };
        if self.shared.opts.durability == Durability::Always && outcome.accepted > 0 {
            self.shared.durable.sync_through(outcome.last_seq)?;
        }
        Ok(outcome)
    }

    /// Appends under the write lock; returns the outcome, the events stored and the clock's time.
    fn append_locked(&self, st: &mut State, events: &[NewEvent]) -> Result<(AppendOutcome, Vec<StoredEvent>, i64)> {
        let opts = &self.shared.opts;
        let now = (opts.clock)();
        if now - st.live.header.created_ms >= opts.segment_age_max_ms && st.live.n_events > 0 {
            self.roll(st, now)?;
        }
        // Intern and deduplicate first; neither touches the disk.
        let mut dims_of = std::mem::take(&mut st.dims_scratch);
        dims_of.clear();
        let mut batch_ids: rustc_hash::FxHashSet<u128> = Default::default();
        let mut duplicates = 0;
        // The event before and its symbols: neighbours in a batch often share a value, and
        // comparing with its string (in the cache) is cheaper than a lookup. (Comparing a
        // one-event append with the last append's strings did not pay: the interner's copy of
        // them is seldom in the cache, and a copy kept here cost more than it saved.)
        let mut previous: Option<(&NewEvent, [Sym; Dim::COUNT])> = None;
        for (n, ev) in events.iter().enumerate() {
            // The strings of an event a few ahead, then (once they have come) the interner's
            // slot for its key, the dimension with most values.
            if let Some(ahead) = events.get(n + 2 * PREFETCH_EVENTS_AHEAD) {
                for d in &ahead.dims {
                    crate::cpu::prefetch_read(d.as_ptr());
                }
            }
            if let Some(ahead) = events.get(n + PREFETCH_EVENTS_AHEAD) {
                st.interner.prefetch(&ahead.dims[Dim::Key as usize]);
            }
            let is_new = match &ev.event_id {
                Some(id) => {
                    let h = Dedup::hash(id);
                    // (A one-event append cannot repeat an id of its own: no set to build.)
                    !st.dedup.seen.contains_key(&h) && (events.len() == 1 || batch_ids.insert(h))
                }
                None => true,
            };
            if !is_new {
                duplicates += 1;
                dims_of.push(None);
                continue;
            }
            let mut dims = [Sym::EMPTY; Dim::COUNT];
            // The key first, then the other dimensions in order: the order in which a segment's
            // dictionary defines them, so a rebuild interns every string to the same symbol.
            for i in KEY_FIRST_ORDER {
                let value = ev.dims[i].as_str();
                dims[i] = if value.is_empty() {
                    Sym::EMPTY
                } else if let Some((p, p_dims)) = &previous
                    && same_str(&p.dims[i], value)
                {
                    p_dims[i]
                } else {
                    match st.interner.intern(value) {
                        Some(sym) => sym,
                        None => {
                            keep_scratch(&mut st.dims_scratch, dims_of, DIMS_SCRATCH_MAX);
                            return Err(Error::InternerFull { max: STRINGS_MAX });
                        }
                    }
                };
            }
            previous = Some((ev, dims));
            dims_of.push(Some(dims));
        }
        let accepted = events.len() - duplicates;
        if accepted == 0 {
            keep_scratch(&mut st.dims_scratch, dims_of, DIMS_SCRATCH_MAX);
            let last_seq = st.next_seq - 1;
            return Ok((AppendOutcome { accepted: 0, duplicates, last_seq, first_seq: None }, Vec::new(), now));
        }

        // A large batch's events go to the fold thread in a vector of their own (a recycled
        // one: `Fold::batch_vec`); a small one's are moved out of a reused one.
        let mut stored = if accepted < fold::ASYNC_MIN_EVENTS { std::mem::take(&mut st.stored_scratch) } else { self.shared.fold.batch_vec(accepted) };
        let result = self.write_batch(st, events, &dims_of, now, &mut stored);
        keep_scratch(&mut st.dims_scratch, dims_of, DIMS_SCRATCH_MAX);
        let (first_seq, last_seq) = result?;
        Ok((AppendOutcome { accepted, duplicates, last_seq, first_seq: Some(first_seq) }, stored, now))
    }

    /// Encodes and writes the batch's new events (`dims_of` holds their symbols, `None` for a
    /// duplicate), filling `stored`; returns the first and last sequence numbers.
    fn write_batch(&self, st: &mut State, events: &[NewEvent], dims_of: &[Option<[Sym; Dim::COUNT]>], now: i64, stored: &mut Vec<StoredEvent>) -> Result<(u64, u64)> {
        let opts = &self.shared.opts;
        let mut attempt = 0;
        let (mut n_strings, mut n_shapes);
        loop {
            n_strings = st.live.dict.strings.len();
            n_shapes = st.live.dict.shapes.len();
            stored.clear();
            self.encode_batch(st, events, dims_of, now, stored);
            let capacity = st.live.file_len.min(opts.segment_bytes_max.max(st.live.committed_len));
            let fits = st.live.committed_len + st.buf.len() as u64 <= capacity;
            if fits {
                break;
            }
            st.live.dict.truncate(n_strings, n_shapes);
            if attempt > 0 || st.live.n_events == 0 {
                return Err(Error::BatchTooLarge { events: stored.len(), bytes: st.buf.len(), max: (opts.segment_bytes_max as usize).saturating_sub(SEGMENT_HEADER_BYTES) });
            }
            self.roll(st, now)?;
            attempt += 1;
        }

        // Write.
        let offset = st.live.committed_len;
        if let Some(f) = &opts.faults
            && f.fail_write.load(Ordering::Relaxed) {
                st.live.dict.truncate(n_strings, n_shapes);
                return Err(Error::io("write", &st.live.path, std::io::Error::from_raw_os_error(libc::ENOSPC)));
            }
        if let Err(e) = write_all_at(&st.live_file, &st.buf, offset) {
            st.live.dict.truncate(n_strings, n_shapes);
            let err = Error::io("write", &st.live.path, e);
            if !matches!(err, Error::DiskFull { .. }) {
                self.shared.durable.fence("write", &st.live.path.clone());
            }
            return Err(err);
        }

        // Apply: where each event's frame went (its bitmap entries are added with the views,
        // by `fold`).
        debug_assert_eq!(stored.len(), st.event_frames.len());
        for (ev, &at) in stored.iter().zip(&st.event_frames) {
            st.live.note_position(offset + u64::from(at), ev);
        }
        st.live.committed_len += st.buf.len() as u64;
        st.live.bytes_used = st.live.committed_len;
        for ev in stored.iter() {
            if let Some(id) = &ev.event_id {
                st.dedup.seen.insert(Dedup::hash(id), ev.seq);
            }
        }
        let first_seq = stored.first().expect("a new event").seq;
        let last_seq = stored.last().expect("a new event").seq;
        st.next_seq = last_seq + 1;
        self.shared.durable.written_seq.store(last_seq, Ordering::Release);
        Ok((first_seq, last_seq))
    }

    /// Encodes the kept events into `st.buf` for the live segment, filling `stored`.
    fn encode_batch(&self, st: &mut State, events: &[NewEvent], dims_of: &[Option<[Sym; Dim::COUNT]>], now: i64, stored: &mut Vec<StoredEvent>) {
        let opts = &self.shared.opts;
        let State { live, interner, buf, event_frames, next_seq, .. } = st;
        buf.clear();
        event_frames.clear();
        let header = live.header;
        let mut seq = *next_seq;
        let last_new = dims_of.iter().rposition(Option::is_some);
        let mut dict_payloads = Vec::new();
        let max_ts = now.saturating_add(opts.future_skew_max_ms);
        for (i, ev) in events.iter().enumerate() {
            // What the dictionary will read for an event a few ahead.
            if let (Some(Some(dims)), Some(ahead)) = (dims_of.get(i + PREFETCH_EVENTS_AHEAD), events.get(i + PREFETCH_EVENTS_AHEAD)) {
                live.dict.prefetch(&Shape::of(dims, ahead, ahead.ts_ms > max_ts), dims[Dim::Key as usize]);
            }
            let Some(dims) = &dims_of[i] else { continue };
            let (ts_ms, clamped) = if ev.ts_ms > max_ts { (max_ts, true) } else { (ev.ts_ms, false) };
            let shape = Shape::of(dims, ev, clamped);
            let mut delta = segment::DictDelta::default();
            let (shape_id, key_id) = live.dict.local_ids(&shape, dims[Dim::Key as usize], &mut delta);
            let seq_delta = (seq - header.base_seq) as u32;
            if !delta.is_empty() {
                dict_payloads.clear();
                segment::encode_dict(&delta, interner, &mut dict_payloads);
                for p in &dict_payloads {
                    format::write_frame(buf, header.salt, KIND_DICT, seq_delta, p);
                }
            }
            // The batch's last frame is its last event's: it carries the batch-end flag.
            let kind = if Some(i) == last_new { KIND_EVENT | format::KIND_FLAG_BATCH_END } else { KIND_EVENT };
            event_frames.push(buf.len() as u32);
            format::write_frame_with(buf, header.salt, kind, seq_delta, |out| segment::encode_event(&header, shape_id, key_id, ts_ms, ev, out));
            stored.push(StoredEvent {
                seq,
                ts_ms,
                dims: *dims,
                status: ev.status,
                success: ev.success,
                stream: ev.stream,
                quality: ev.quality,
                ts_clamped: clamped,
                tokens: ev.tokens,
                latency_ms: ev.latency_ms,
                ttft_ms: ev.ttft_ms,
                event_id: ev.event_id.as_deref().map(Box::from),
                request_id: ev.request_id.as_deref().map(Box::from),
                error_message: ev.error_message.as_deref().map(Box::from),
            });
            seq += 1;
        }
    }

    /// Seals the live segment and starts a new one.
    fn roll(&self, st: &mut State, now: i64) -> Result<()> {
        // The old segment is synced whole before the new one exists, so recovery only ever
        // meets a torn tail in the newest segment (a sealed one that ends mid-batch is damage).
        // Deferring this sync to the next group commit removed a stall of the appender at each
        // roll but broke that rule for a crash in between; the stall is the write-back of at
        // most one sync interval's data.
        let old_path = st.live.path.clone();
        self.shared.durable.sync_file(&st.live_file, &old_path)?;
        let written = self.shared.durable.written_seq.load(Ordering::Acquire);
        let (mut seg, file) = create_segment(&self.shared.opts, st.next_seq, now)?;
        let file = Arc::new(file);
        {
            let mut s = self.shared.durable.sync.lock().unwrap_or_else(|e| e.into_inner());
            s.durable_seq = s.durable_seq.max(written);
            s.file = file.clone();
            s.path = seg.path.clone();
        }
        self.shared.durable.sync_cv.notify_all();
        let old_index = self.shared.fold.write_through(&st.fold_queue).start_segment(seg.detach_index());
        let mut old = std::mem::replace(&mut st.live, seg);
        let old_file = std::mem::replace(&mut st.live_file, file);
        release_tail(&old_file, old.committed_len, old.file_len);
        old.set_index(LazyIndex::loaded(old_index));
        old.seal_uncompacted(now);
        st.sealed.push(Arc::new(old));
        self.compact_later(st);
        Ok(())
    }

    /// Hands the segment a roll just sealed to the compactor thread (started by the first
    /// roll), which swaps in a copy with compacted bitmaps (`Segment::compacted`): done here it
    /// was about half of a roll's stall of the appender (6 ms of 10–12 at 64 MiB). Done here
    /// anyway if that thread cannot be started.
    fn compact_later(&self, st: &mut State) {
        let seg = st.sealed.last().expect("a segment just sealed").clone();
        if st.compactor.is_none() {
            let (tx, rx) = std::sync::mpsc::channel();
            let state = Arc::downgrade(&self.shared.state);
            if std::thread::Builder::new().name("tokenboard-compact".into()).spawn(move || compactor(state, rx)).is_ok() {
                st.compactor = Some(tx);
            }
        }
        let job = Compaction::Segment(seg);
        let unsent = match &st.compactor {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(Compaction::Segment(seg)) = unsent {
            let _ = swap_compacted(st, &seg, seg.compacted());
        }
    }

    /// Returns once the segments sealed so far have their bitmaps compacted (for tests and
    /// measurements).
    #[doc(hidden)]
    pub fn wait_for_compaction(&self) {
        let Some(tx) = self.read().compactor.clone() else { return };
        let (done, finished) = std::sync::mpsc::channel();
        if tx.send(Compaction::Barrier(done)).is_ok() {
            let _ = finished.recv();
        }
    }

    /// Sealed segments whose bitmaps are not compacted yet (for tests).
    #[doc(hidden)]
    pub fn uncompacted_segments(&self) -> usize {
        self.read().sealed.iter().filter(|s| !s.bitmaps_compacted()).count()
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<u64> {
        let seq = self.shared.durable.written_seq.load(Ordering::Acquire);
        self.shared.durable.sync_through(seq)?;
        Ok(seq)
    }

    pub fn last_seq(&self) -> u64 {
        self.shared.durable.written_seq.load(Ordering::Acquire)
    }

    /// The highest sequence number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable.sync.lock().unwrap_or_else(|e| e.into_inner()).durable_seq
    }

    /// New events, in batches, in sequence order, once they are in the views. An append's events
    /// may come a moment after it returned (at most about a millisecond once appends stop), and
    /// small appends' events may come merged into one batch.
    pub fn subscribe(&self) -> Receiver<Arc<[StoredEvent]>> {
        self.shared.fold.subscribe(self.shared.opts.subscriber_queue_max)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The views and the live segment's bitmaps as of `st`: holding every event written before
    /// the state lock was taken.
    fn folded(&self, st: &State) -> RwLockReadGuard<'_, Folded> {
        self.shared.fold.read_through(&st.fold_queue)
    }

    pub fn resolve(&self, sym: Sym) -> Arc<str> {
        self.read().interner.resolve_arc(sym)
    }

    /// The symbol of a string the engine has seen, if any.
    pub fn lookup(&self, s: &str) -> Option<Sym> {
        self.read().interner.get(s)
    }

    /// Calls `f` with the interner, to resolve many symbols under one lock.
    pub fn with_interner<R>(&self, f: impl FnOnce(&Interner) -> R) -> R {
        f(&self.read().interner)
    }

    pub fn summary(&self, range: TimeRange) -> Summary {
        let st = self.read();
        self.folded(&st).views.summary(range, &mut SegmentScan { st: &st })
    }

    pub fn breakdown(&self, group: Group, range: TimeRange) -> Vec<(u32, crate::views::Agg)> {
        let st = self.read();
        self.folded(&st).views.breakdown(group, range, &mut SegmentScan { st: &st })
    }

    /// The `limit` groups with the most calls (or tokens), largest first, and everything else summed.
    pub fn top(&self, group: Group, range: TimeRange, limit: usize, by: TopBy) -> (Vec<(u32, crate::views::Agg)>, crate::views::Agg) {
        let st = self.read();
        self.folded(&st).views.top_n(group, range, limit, by == TopBy::Tokens, &mut SegmentScan { st: &st })
    }

    pub fn trend(&self, range: TimeRange, granularity: Granularity, tz: chrono_tz::Tz) -> Result<Vec<TrendBucket>> {
        let st = self.read();
        Ok(self.folded(&st).views.trend(range, granularity, tz, &mut SegmentScan { st: &st })?)
    }

    /// The newest events matching `filter` with sequence numbers below `before_seq`.
    pub fn logs(&self, filter: &LogFilter, before_seq: Option<u64>, limit: usize) -> LogPage {
        let limit = limit.clamp(1, 1000);
        let st = self.read();
        let before = before_seq.unwrap_or(u64::MAX);
        let mut events = Vec::with_capacity(limit);
        let folded = self.folded(&st);
        for (seg, ix) in st.indexed_segments(&folded).rev() {
            if events.len() >= limit {
                break;
            }
            index::query_segment(seg, ix, filter, before, limit, &mut events);
        }
        let next_cursor = if events.len() == limit { events.last().map(|e| e.seq) } else { None };
        LogPage { events, next_cursor }
    }

    pub fn get(&self, seq: u64) -> Option<StoredEvent> {
        let st = self.read();
        let seg = st.segments().rev().find(|s| s.base_seq() <= seq)?;
        seg.get(seq)
    }

    /// Calls `f` for each event matching `filter`, oldest first, over the log as it was when the
    /// call started; appends and retention go on meanwhile. Returns the number visited.
    pub fn scan(&self, filter: &LogFilter, f: &mut dyn FnMut(&StoredEvent) -> bool) -> u64 {
        // A snapshot: the sealed segments as they are and a read-only copy of the live segment's
        // committed part. No lock is held while events are visited, so a long export never
        // stalls appends or retention.
        let snapshot = self.snapshot();
        let mut n = 0;
        for (seg, ix) in snapshot.segments() {
            let go = index::scan_segment_filtered(seg, ix, filter, &mut |ev| {
                n += 1;
                f(ev)
            });
            if !go {
                break;
            }
        }
        n
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::of(&self.read())
    }

    /// Materialises private views of the events that match `filter` within `range`, over a
    /// snapshot of the log, to answer filtered summaries, breakdowns and trends with the same
    /// exact logic as the engine's own views. Costs one indexed scan of the matching events.
    ///
    /// The scan runs on a thread of its own and hands the events over in batches, while this
    /// one adds them to the views: reading the events and folding them cost about the same, so
    /// over millions of events the two cores take about half the time one would.
    pub fn slice(&self, filter: &LogFilter, range: TimeRange) -> Slice {
        let mut filter = filter.clone();
        filter.from_ms = Some(filter.from_ms.map_or(range.from_ms, |f| f.max(range.from_ms)));
        filter.to_ms = Some(filter.to_ms.map_or(range.to_ms, |t| t.min(range.to_ms)));
        let snapshot = self.snapshot();
        let mut views = Views::new();
        let (snap, filt) = (&snapshot, &filter);
        pipelined(
            "tokenboard-slice",
            &|to: &mut dyn FnMut(StoredEvent) -> bool| {
                for (seg, ix) in snap.segments() {
                    if !index::scan_segment_filtered_owned(seg, ix, filt, to) {
                        return;
                    }
                }
            },
            &mut |batch| batch.iter().for_each(|ev| views.apply(ev, crate::views::Sign::Add)),
        );
        Slice { views, snapshot, filter }
    }

    pub fn status(&self) -> EngineStatus {
        let st = self.read();
        let bytes_on_disk = st.segments().map(|s| s.bytes_used).sum();
        let events = st.segments().map(|s| s.n_events).sum();
        let folded = self.folded(&st);
        let time_bounds = folded.views.time_bounds();
        let bitmaps: usize = st.sealed.iter().map(|s| s.index_heap_bytes()).sum::<usize>() + folded.live().index_heap_bytes();
        let mut heap = HeapBreakdown {
            views: folded.views.heap_bytes(),
            bitmaps,
            blocks_and_dicts: st.segments().map(Segment::heap_bytes).sum(),
            interner: st.interner.heap_bytes(),
            dedup: st.dedup.seen.capacity() * 32,
            rollups: 0,
        };
        let rollups = Arc::clone(&st.rollups);
        let (last_seq, segments) = (st.next_seq - 1, st.sealed.len() + 1);
        drop(folded);
        drop(st);
        // Counted without the lock: the rollups of years of keys are hundreds of thousands of cells.
        heap.rollups = rollups.heap_bytes();
        EngineStatus {
            last_seq,
            durable_seq: self.durable_seq(),
            segments,
            events,
            bytes_on_disk,
            heap_bytes: heap.views + heap.bitmaps + heap.blocks_and_dicts + heap.interner + heap.dedup + heap.rollups,
            heap,
            fenced: self.shared.durable.is_fenced.load(Ordering::Acquire),
            oldest_ts_ms: time_bounds.map(|b| b.0),
            newest_ts_ms: time_bounds.map(|b| b.1),
        }
    }

    /// Calls `f` with the materialised views (for tests that compare live and rebuilt views).
    #[doc(hidden)]
    pub fn with_views<R>(&self, f: impl FnOnce(&Views) -> R) -> R {
        let st = self.read();
        f(&self.folded(&st).views)
    }

    /// The long-term daily rollups of the segments retention deleted.
    pub fn rollups(&self) -> Rollups {
        Rollups::clone(&self.read().rollups)
    }

    /// What the log and the rollups hold per UTC day (or month, `monthly`) over the UTC days
    /// `[from_day, to_day)` (days since the epoch), and per name of `group` over the whole
    /// range: the history that outlives the raw log's retention. Both parts come from one state
    /// of the engine, so an event is in exactly one of them.
    pub fn history(&self, from_day: i64, to_day: i64, monthly: bool, group: RollupGroup) -> Result<History> {
        let day_ms = rollup::MS_PER_DAY;
        let limit = i64::MAX / 4 / day_ms;
        let (from_day, to_day) = (from_day.clamp(-limit, limit), to_day.clamp(-limit, limit));
        if from_day >= to_day {
            return Ok(History::default());
        }
        let range = TimeRange::new(from_day * day_ms, to_day * day_ms);
        let granularity = if monthly { Granularity::Month } else { Granularity::Day };
        // The log's part under the lock; the rollups as of the same state after it.
        let (trend, log_rows, rollups) = {
            let st = self.read();
            let folded = self.folded(&st);
            let trend = folded.views.trend(range, granularity, chrono_tz::UTC, &mut SegmentScan { st: &st })?;
            let rows = view_group(group).map_or_else(Vec::new, |g| {
                let rows = folded.views.breakdown(g, range, &mut SegmentScan { st: &st });
                let name = |k: u32| if g == Group::StatusClass { k.to_string() } else { st.interner.resolve(Sym(k)).to_string() };
                rows.into_iter().map(|(k, agg)| (name(k), RollupAgg::of_agg(&agg))).collect()
            });
            (trend, rows, Arc::clone(&st.rollups))
        };
        let mut buckets: Vec<HistoryBucket> = trend
            .iter()
            .map(|b| HistoryBucket { start_ms: b.start_ms, end_ms: b.end_ms, log: RollupAgg::of_agg(&b.agg), rollups: RollupAgg::default() })
            .collect();
        let (mut all, mut named) = (RollupAgg::default(), RollupAgg::default());
        for (day, _, agg) in rollups.cells(from_day, to_day, RollupGroup::All) {
            let i = buckets.partition_point(|b| b.end_ms <= day * day_ms);
            if let Some(b) = buckets.get_mut(i) {
                b.rollups.merge(agg);
                all.merge(agg);
            }
        }
        let mut breakdown: Vec<HistoryRow> = log_rows.into_iter().map(|(name, log)| HistoryRow { name, log, rollups: RollupAgg::default() }).collect();
        if group != RollupGroup::All {
            let mut rolled = rollups.cells(from_day, to_day, group).peekable();
            if rolled.peek().is_some() {
                let mut at: FxHashMap<String, usize> = breakdown.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
                for (day, name, agg) in rolled {
                    if buckets.last().is_none_or(|b| day * day_ms >= b.end_ms) {
                        continue; // beyond the days the views answer for (the bucket loop's limit)
                    }
                    named.merge(agg);
                    if let Some(&i) = at.get(name) {
                        breakdown[i].rollups.merge(agg);
                    } else {
                        at.insert(name.to_string(), breakdown.len());
                        breakdown.push(HistoryRow { name: name.to_string(), rollups: agg.clone(), ..HistoryRow::default() });
                    }
                }
            }
        }
        breakdown.sort_unstable_by(|a, b| b.total_tokens().cmp(&a.total_tokens()).then_with(|| a.name.cmp(&b.name)));
        let rest = if group == RollupGroup::All { RollupAgg::default() } else { all.minus(&named) };
        Ok(History { buckets, breakdown, rest })
    }

    /// Deletes whole oldest sealed segments beyond the retention limits, folding them into the
    /// daily rollups first.
    ///
    /// A pass holds the state lock (so appends and reads wait) only to copy the views, and then
    /// to add to the copy what was appended since and swap it in as it takes the segment out of
    /// the log. The rollups, the event ids and the subtraction from the copy are done outside
    /// it, and the file is deleted after. Passes take turns.
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        let _turn = self.shared.retention_turn.lock().unwrap_or_else(|e| e.into_inner());
        let opts = &self.shared.opts;
        let now = (opts.clock)();
        let mut report = RetentionReport { segments_deleted: 0, events_deleted: 0, bytes_deleted: 0 };
        {
            let mut st = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            // A live segment past its age is sealed here too, so an idle log still ages out.
            if now - st.live.header.created_ms >= opts.segment_age_max_ms && st.live.n_events > 0 {
                self.shared.durable.check_fenced()?;
                self.roll(&mut st, now)?;
            }
        }
        // Only a pass takes segments out of the log, so the oldest stays the oldest (the
        // compactor may swap in a copy of it) and goes on exceeding the limits: appends only add.
        while let Some(oldest) = self.oldest_beyond_retention(now) {
            // Outside the lock: its contribution to the rollups, and its event ids.
            let mut builder = rollup::RollupBuilder::default();
            let mut ids = Vec::new();
            let with_ids = oldest.ids_in_dedup.load(Ordering::Relaxed);
            oldest.for_each(&mut |ev| {
                builder.add(&ev);
                if with_ids && let Some(id) = &ev.event_id {
                    ids.push(Dedup::hash(id));
                }
                true
            });
            // The rollups with the segment, and the views without it: a copy of the views as
            // of the events handed to them so far (appends wait only while it is made), the
            // segment subtracted from it outside the lock, then, under the lock, the events
            // appended meanwhile added. Only a pass changes the rollups.
            let (mut views, through, rollups, names) = {
                let st = self.read();
                let views = self.shared.fold.read_through(&st.fold_queue).views.clone();
                let names: rustc_hash::FxHashMap<u32, String> =
                    builder.symbols().map(|s| (s.0, st.interner.resolve(s).to_string())).collect();
                (views, st.fold_queue.through, st.rollups.clone(), names)
            };
            let mut rollups = Rollups::clone(&rollups);
            rollups.absorb(builder, |s| &names[&s.0]);
            if let Some(last) = oldest.last_seq {
                rollups.folded_through_seq = rollups.folded_through_seq.max(last);
            }
            // Persist the rollups, then take the segment out of the views and the log, then
            // delete it: a crash in between never counts twice (an open removes a segment the
            // rollups already hold). If they cannot be saved, nothing changes.
            rollups.save(&opts.dir)?;
            pipelined(
                "tokenboard-retire",
                &|to: &mut dyn FnMut(StoredEvent) -> bool| oldest.for_each(to),
                &mut |batch| batch.iter().for_each(|ev| views.apply(ev, Sign::Sub)),
            );
            // A copy made while the saved state was still being decoded keeps the parts it had
            // not reached; the loader may be done with the views it saw, so decode them here.
            if views.holds_saved() {
                views.load_all_saved();
            }
            // What was appended meanwhile: added from a snapshot without the lock, then under it
            // only what came after the snapshot.
            let (snapshot, caught_up) = {
                let st = self.read();
                (Snapshot::of(&st), st.fold_queue.through)
            };
            add_events_after(snapshot.segments().map(|(seg, _)| seg), through, &mut views);
            drop(snapshot);
            let mut st = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            debug_assert_eq!(st.sealed.first().map(|s| s.base_seq()), Some(oldest.base_seq()));
            let mut folded = self.shared.fold.write_through(&st.fold_queue);
            add_events_after(st.segments(), caught_up, &mut views);
            std::mem::swap(&mut folded.views, &mut views);
            drop(folded);
            st.rollups = Arc::new(rollups);
            // The rollups hold the segment now: it leaves the log here even if its file cannot
            // be removed at once (the next open removes it), or it would be counted twice.
            for h in ids {
                st.dedup.seen.remove(&h);
            }
            // Its memory, and the views before, are freed after the lock (the segment's once the
            // last reader lets go of it).
            let removed = st.sealed.remove(0);
            drop(st);
            drop(removed);
            drop(views);
            report.segments_deleted += 1;
            report.events_deleted += oldest.n_events;
            report.bytes_deleted += oldest.bytes_used;
            // Readers still holding the segment keep its map (an unlinked file stays readable).
            let deleted = oldest.path.with_extension("deleted");
            fs::rename(&oldest.path, &deleted).map_err(|e| Error::io("rename", &oldest.path, e))?;
            fs::remove_file(&deleted).map_err(|e| Error::io("remove", &deleted, e))?;
            rollup::sync_dir(&opts.dir)?;
        }
        // Event ids older than the window, once per segment: read outside the lock, removed
        // under it (from the segment as the log now holds it, whose flag says whether they are
        // still in the set).
        let cutoff = now - opts.dedup_window_ms;
        let expired: Vec<Arc<Segment>> = self
            .read()
            .sealed
            .iter()
            .filter(|s| s.sealed_at_ms.is_some_and(|t| t < cutoff) && s.ids_in_dedup.load(Ordering::Relaxed))
            .cloned()
            .collect();
        for seg in expired {
            let ids = collect_ids(&seg);
            let mut st = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            let st = &mut *st;
            if let Some(held) = st.sealed.iter().find(|s| s.base_seq() == seg.base_seq())
                && held.ids_in_dedup.swap(false, Ordering::Relaxed)
            {
                for h in ids {
                    st.dedup.seen.remove(&h);
                }
            }
        }
        Ok(report)
    }

    /// The oldest sealed segment if the retention limits drop it as of `now`.
    fn oldest_beyond_retention(&self, now: i64) -> Option<Arc<Segment>> {
        let st = self.read();
        let oldest = st.sealed.first()?;
        let total_bytes: u64 = st.segments().map(|s| s.bytes_used).sum();
        let total_events: u64 = st.segments().map(|s| s.n_events).sum();
        let r = &self.shared.opts.retention;
        // A segment ages out when its newest event is older than the limit (as in Kafka, so
        // backfilled history goes too), or when it was sealed longer ago than that (so clamped
        // future timestamps cannot pin it).
        let too_old = r.max_age_ms.is_some_and(|age| (oldest.n_events > 0 && oldest.max_ts < now - age) || oldest.sealed_at_ms.is_some_and(|t| t < now - age));
        let too_big = r.max_bytes.is_some_and(|max| total_bytes > max);
        let too_many = r.max_events.is_some_and(|max| max > 0 && total_events - oldest.n_events >= max);
        (too_old || too_big || too_many).then(|| oldest.clone())
    }

    /// Syncs, marks a clean shutdown and stops the background syncer. Appends after this fail.
    pub fn close(&self) -> Result<()> {
        self.shared.durable.stop();
        let worker = self.shared.workers.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = worker {
            // A retention pass in progress finishes first; it only ever runs between appends.
            let _ = worker.join();
        }
        self.sync()?;
        self.shared.durable.fence("close", &self.shared.opts.dir.clone());
        if self.shared.opts.save_state {
            // A cache: if it cannot be written there is none, and the next open rebuilds.
            let _ = self.save_state();
        }
        let marker = self.shared.opts.dir.join(CLEAN_MARKER);
        fs::write(&marker, self.last_seq().to_string()).map_err(|e| Error::io("write", &marker, e))?;
        rollup::sync_dir(&self.shared.opts.dir)
    }
}

impl Engine {
    /// Writes the state `open` would otherwise rebuild (see `saved`).
    fn save_state(&self) -> std::io::Result<()> {
        let st = self.read();
        let folded = self.folded(&st);
        let mut blobs: Vec<Vec<u8>> = st.sealed.iter().map(|s| s.saved_index()).collect();
        blobs.push(folded.live().saved_index());
        let mut refs = saved::blob_refs(&blobs).into_iter();
        let segments = st
            .segments()
            .map(|seg| saved::SavedSegment {
                header: seg.header,
                file_len: seg.file_len,
                committed_len: seg.committed_len,
                n_events: seg.n_events,
                first_seq: seg.first_seq,
                last_seq: seg.last_seq,
                min_ts: seg.min_ts,
                max_ts: seg.max_ts,
                blocks: seg.blocks.clone(),
                dict: &seg.dict,
                index: refs.next().expect("one index per segment"),
                sealed: seg.sealed,
                sealed_at_ms: seg.sealed_at_ms,
                bytes_used: seg.bytes_used,
                skips: seg.skips.clone(),
                ids_in_dedup: seg.ids_in_dedup.load(Ordering::Relaxed),
            })
            .collect();
        let state = saved::Saved {
            folded_through_seq: st.rollups.folded_through_seq,
            last_seq: st.next_seq - 1,
            strings: (0..st.interner.len()).map(|i| st.interner.resolve(Sym(i as u32))).collect::<Vec<&str>>(),
            dedup: &st.dedup.seen,
            segments,
        };
        let (older_days, rest) = folded.views.saved_parts();
        saved::write(&self.shared.opts.dir, &state, &older_days, &rest, &blobs)
    }
}

/// What `open` takes from a saved state instead of rebuilding it.
struct Restored {
    loaded: Vec<Segment>,
    live_file: Arc<File>,
    views: Views,
    interner: Interner,
    dedup: Dedup,
    last_seq: u64,
}

/// The saved state as read: each segment's index stays bytes in the file until first used.
type ReadSaved = saved::Saved<String, FxHashMap<u128, u64>, saved::SavedSegment<segment::SegmentDict, saved::BlobRef>>;

/// The saved state, if it describes exactly the segments `bases` and the rollups on disk.
fn restore(opts: &EngineOptions, bases: &[u64], rollups: &Rollups, saved_file: &saved::SavedFile) -> Option<Restored> {
    let (saved, older_days, rest): (ReadSaved, LoadedDays, LoadedRest) = saved_file.decode()?;
    let views = Views::from_saved_parts(older_days, rest);
    if saved.segments.len() != bases.len()
        || bases.is_empty()
        || saved.folded_through_seq != rollups.folded_through_seq
        || saved.segments.iter().map(|s| s.n_events).sum::<u64>() != views.event_count()
    {
        return None;
    }
    let mut interner = Interner::new();
    for (i, s) in saved.strings.iter().enumerate() {
        if interner.intern(s) != Some(Sym(i as u32)) {
            return None;
        }
    }
    let mut loaded = Vec::with_capacity(bases.len());
    let mut live_file = None;
    for (i, (ss, &base)) in saved.segments.into_iter().zip(bases).enumerate() {
        let newest = i + 1 == bases.len();
        let path = opts.dir.join(segment::segment_file_name(base));
        let file = OpenOptions::new().read(true).write(newest).open(&path).ok()?;
        let len = file.metadata().ok()?.len();
        let header = segment::read_header(&file, base).ok()?;
        if len != ss.file_len || header != ss.header || ss.sealed == newest || ss.committed_len > len {
            return None;
        }
        let mut seg = Segment::new_mapped(path, header, &file).ok()?;
        seg.committed_len = ss.committed_len;
        seg.n_events = ss.n_events;
        seg.first_seq = ss.first_seq;
        seg.last_seq = ss.last_seq;
        seg.min_ts = ss.min_ts;
        seg.max_ts = ss.max_ts;
        seg.blocks = ss.blocks;
        // A dictionary naming a symbol the interner does not hold is not this log's state (and
        // the writer's symbol-indexed map would be sized by it): rebuild instead.
        let n_syms = interner.len();
        if ss.dict.strings.iter().chain(ss.dict.shapes.iter().flat_map(|s| &s.dims)).any(|s| s.0 as usize >= n_syms) {
            return None;
        }
        seg.dict = ss.dict;
        // The index stays in the saved file (kept mapped) until first used.
        seg.set_index(LazyIndex::saved(saved_file.blob(&ss.index)?, ss.index.crc));
        seg.sealed = ss.sealed;
        seg.sealed_at_ms = ss.sealed_at_ms;
        seg.bytes_used = ss.bytes_used;
        seg.skips = ss.skips;
        seg.ids_in_dedup.store(ss.ids_in_dedup, Ordering::Relaxed);
        if newest {
            seg.dict.enable_writing();
            live_file = Some(Arc::new(file));
        }
        loaded.push(seg);
    }
    Some(Restored {
        loaded,
        live_file: live_file?,
        views,
        interner,
        dedup: Dedup { seen: saved.dedup },
        last_seq: saved.last_seq,
    })
}

/// A scan that hands events to its callback until that returns false (see `pipelined`).
type Producer<'a> = dyn Fn(&mut dyn FnMut(StoredEvent) -> bool) + Sync + 'a;

/// Runs `produce`, which hands events to its callback until that returns false, on a thread of
/// its own (named `name`), and `consume` here on batches of them, so that decoding and folding
/// share the two cores (a slice's scan, a retention pass's subtraction); both here, an event at a
/// time, if no thread can be had. A panic of either goes on as itself.
fn pipelined(name: &str, produce: &Producer<'_>, consume: &mut dyn FnMut(&[StoredEvent])) {
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<StoredEvent>>(PIPELINE_BATCHES);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<StoredEvent>>();
    let threaded = std::thread::scope(|scope| {
        let producer = std::thread::Builder::new().name(name.into()).spawn_scoped(scope, move || {
            let mut batch = Vec::with_capacity(PIPELINE_BATCH_EVENTS);
            let mut go = true;
            produce(&mut |ev| {
                batch.push(ev);
                if batch.len() < PIPELINE_BATCH_EVENTS {
                    return true;
                }
                let next = empty_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(PIPELINE_BATCH_EVENTS));
                go = full_tx.send(std::mem::replace(&mut batch, next)).is_ok();
                go
            });
            if go {
                let _ = full_tx.send(batch);
            }
        });
        match producer {
            Ok(producer) => {
                // By value: were `consume` to panic, the receiver goes with the unwinding and the
                // producer stops at its next send, so the scope can end.
                for mut batch in full_rx {
                    consume(&batch);
                    batch.clear();
                    let _ = empty_tx.send(batch);
                }
                // A panic of the producer goes on as itself (the scope would report only that a
                // thread panicked).
                if let Err(panic) = producer.join() {
                    std::panic::resume_unwind(panic);
                }
                true
            }
            // No thread to be had: both here instead.
            Err(_) => false,
        }
    });
    if !threaded {
        produce(&mut |ev| {
            consume(std::slice::from_ref(&ev));
            true
        });
    }
}

fn collect_ids(seg: &Segment) -> Vec<u128> {
    let mut ids = Vec::new();
    seg.for_each(&mut |ev| {
        if let Some(id) = &ev.event_id {
            ids.push(Dedup::hash(id));
        }
        true
    });
    ids
}

/// The segments of the log at one instant; the live one as a read-only copy.
struct Snapshot {
    sealed: Vec<Arc<Segment>>,
    live: Segment,
}

impl Snapshot {
    fn of(st: &State) -> Snapshot {
        Snapshot { sealed: st.sealed.clone(), live: st.live.reader_copy() }
    }

    /// Each segment, with its bitmaps if it has them (the live copy does not).
    fn segments(&self) -> impl Iterator<Item = (&Segment, Option<&SegmentIndex>)> {
        self.sealed.iter().map(|s| (&**s, Some(s.index()))).chain(std::iter::once((&self.live, None)))
    }
}

/// Views of the events matching a filter; see [`Engine::slice`].
pub struct Slice {
    views: Views,
    snapshot: Snapshot,
    filter: LogFilter,
}

struct SliceScan<'a> {
    snapshot: &'a Snapshot,
    filter: &'a LogFilter,
}

impl EdgeScan for SliceScan<'_> {
    fn scan(&mut self, range: TimeRange, f: &mut dyn FnMut(&StoredEvent)) {
        let mut filter = self.filter.clone();
        filter.from_ms = Some(filter.from_ms.map_or(range.from_ms, |v| v.max(range.from_ms)));
        filter.to_ms = Some(filter.to_ms.map_or(range.to_ms, |v| v.min(range.to_ms)));
        for (seg, ix) in self.snapshot.segments() {
            index::scan_segment_filtered(seg, ix, &filter, &mut |ev| {
                f(ev);
                true
            });
        }
    }
}

impl Slice {
    pub fn summary(&self, range: TimeRange) -> Summary {
        self.views.summary(range, &mut SliceScan { snapshot: &self.snapshot, filter: &self.filter })
    }

    pub fn top(&self, group: Group, range: TimeRange, limit: usize, by: TopBy) -> (Vec<(u32, crate::views::Agg)>, crate::views::Agg) {
        self.views.top_n(group, range, limit, by == TopBy::Tokens, &mut SliceScan { snapshot: &self.snapshot, filter: &self.filter })
    }

    pub fn trend(&self, range: TimeRange, granularity: Granularity, tz: chrono_tz::Tz) -> Result<Vec<TrendBucket>> {
        Ok(self.views.trend(range, granularity, tz, &mut SliceScan { snapshot: &self.snapshot, filter: &self.filter })?)
    }

    /// Events in the slice.
    pub fn event_count(&self) -> u64 {
        self.views.event_count()
    }
}

struct SegmentScan<'a> {
    st: &'a State,
}

impl EdgeScan for SegmentScan<'_> {
    fn scan(&mut self, range: TimeRange, f: &mut dyn FnMut(&StoredEvent)) {
        for seg in self.st.segments() {
            index::scan_segment_range(seg, range.from_ms, range.to_ms, f);
        }
    }
}

fn interval_syncer(durable: Arc<Durable>, every_ms: u64) {
    let every = Duration::from_millis(every_ms);
    let mut next_sync = Instant::now() + every;
    let mut kicked = 0;
    loop {
        let wait = WRITE_BEHIND.min(next_sync.saturating_duration_since(Instant::now()));
        if durable.sleep_unless_stopped(wait) {
            return;
        }
        if durable.is_fenced.load(Ordering::Acquire) {
            return;
        }
        let seq = durable.written_seq.load(Ordering::Acquire);
        if Instant::now() >= next_sync {
            let _ = durable.sync_through(seq);
            next_sync = Instant::now() + every;
            kicked = seq;
        } else if seq > kicked {
            durable.write_behind();
            kicked = seq;
        }
    }
}

/// Work for the compactor thread.
enum Compaction {
    /// A sealed segment whose bitmaps still have their growth's spare capacity.
    Segment(Arc<Segment>),
    /// Answered once the jobs before it are done.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// The compactor thread: compacts a copy of each segment sent (outside the state lock), then
/// swaps it in. It holds the state only weakly: once the engine is gone it stops.
fn compactor(state: std::sync::Weak<RwLock<State>>, jobs: std::sync::mpsc::Receiver<Compaction>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Compaction::Segment(seg) => {
                let lean = seg.compacted();
                let Some(state) = state.upgrade() else { return };
                let replaced = swap_compacted(&mut state.write().unwrap_or_else(|e| e.into_inner()), &seg, lean);
                // Freed here, after the lock: the bitmaps of a 64 MiB segment are thousands of
                // allocations.
                drop(replaced);
            }
            Compaction::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Puts `lean`, a compacted copy of `seg`, in its place, unless retention deleted it meanwhile;
/// returns what it replaced. Readers holding `seg` keep reading it (the same events and bitmaps).
fn swap_compacted(st: &mut State, seg: &Arc<Segment>, lean: Segment) -> Option<Arc<Segment>> {
    let slot = st.sealed.iter_mut().find(|s| Arc::ptr_eq(s, seg))?;
    // Retention clears the flag under the lock this holds.
    lean.ids_in_dedup.store(slot.ids_in_dedup.load(Ordering::Relaxed), Ordering::Relaxed);
    Some(std::mem::replace(slot, Arc::new(lean)))
}

/// Enforces retention every `every_ms`. Holds the engine only while a pass runs, so dropping the
/// last handle releases the directory.
fn retention_worker(weak: std::sync::Weak<Shared>, durable: Arc<Durable>, every_ms: u64) {
    loop {
        if durable.sleep_unless_stopped(Duration::from_millis(every_ms)) {
            return;
        }
        let Some(shared) = weak.upgrade() else { return };
        // Errors are reported by the next explicit call; a pass that fails leaves everything in place.
        let _ = Engine { shared }.enforce_retention();
    }
}

fn lock_dir(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    // A lock held a moment longer than its engine is given up to `LOCK_WAIT` to go: a process
    // restarting on the same directory, or a child forked elsewhere in this process that still
    // shares the lock's open file until it execs (seen in the tests).
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Locked { path: dir.to_path_buf() });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long `open` waits for another holder of the directory lock to let go.
const LOCK_WAIT: Duration = Duration::from_secs(1);

fn random_salt() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most the given length into the buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n == 4 {
        u32::from_le_bytes(b)
    } else {
        (system_clock_ms() as u32) ^ std::process::id().rotate_left(16)
    }
}

/// `FileExt::write_all_at` through the `pwrite64` system call itself. glibc's `pwrite` is a
/// cancellation point: it wraps the call in two bookkeeping calls that cost about 25 ns, 4 % of
/// a one-event append, and this engine never cancels a thread.
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        // SAFETY: a descriptor we own, and a pointer and length of a live buffer.
        let n = unsafe { libc::syscall(libc::SYS_pwrite64, file.as_raw_fd(), buf.as_ptr(), buf.len(), offset as libc::off_t) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
        }
        buf = &buf[n as usize..];
        offset += n as u64;
    }
    Ok(())
}

/// Creates a segment as a temporary file, preallocates it, then renames it into place.
fn create_segment(opts: &EngineOptions, base_seq: u64, now: i64) -> Result<(Segment, File)> {
    use std::os::fd::AsRawFd;
    let name = segment::segment_file_name(base_seq);
    let path = opts.dir.join(&name);
    let tmp = opts.dir.join(format!("{name}.tmp"));
    if path.exists() {
        // An unreadable segment of the same name: keep it for inspection, out of the way.
        let aside = opts.dir.join(format!("{name}.corrupt"));
        fs::rename(&path, &aside).map_err(|e| Error::io("rename", &path, e))?;
    }
    let header = SegmentHeader { version: FORMAT_VERSION, salt: random_salt(), base_seq, created_ms: now };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    let fail = |op, e| {
        let _ = fs::remove_file(&tmp);
        Error::io(op, &tmp, e)
    };
    if opts.faults.as_ref().is_some_and(|f| f.fail_fallocate.load(Ordering::Relaxed)) {
        return Err(fail("fallocate", std::io::Error::from_raw_os_error(libc::ENOSPC)));
    }
    // SAFETY: fallocate on a descriptor we own.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, opts.segment_bytes_max as libc::off_t) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            file.set_len(opts.segment_bytes_max).map_err(|e| fail("set_len", e))?;
        } else {
            return Err(fail("fallocate", e));
        }
    }
    file.write_all_at(&header.encode(), 0).map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("fsync", e))?;
    fs::rename(&tmp, &path).map_err(|e| fail("rename", e))?;
    rollup::sync_dir(&opts.dir)?;
    let mut seg = Segment::new_mapped(path, header, &file)?;
    seg.dict.enable_writing();
    Ok((seg, file))
}

/// Gives the unused preallocated tail of a sealed segment back to the file system. The file keeps
/// its size, so maps over it stay valid; the hole reads as zeros.
fn release_tail(file: &File, committed_len: u64, file_len: u64) {
    use std::os::fd::AsRawFd;
    let from = committed_len.div_ceil(4096) * 4096;
    if from < file_len {
        // SAFETY: fallocate on a descriptor we own. Failure only costs disk space.
        unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                (file_len - from) as libc::off_t,
            );
        }
    }
}

/// Adds to `views` the events of `segments` after sequence number `seq`.
fn add_events_after<'a>(segments: impl Iterator<Item = &'a Segment>, seq: u64, views: &mut Views) {
    for seg in segments.filter(|s| s.last_seq.is_some_and(|last| last > seq)) {
        seg.for_each_after(seq, &mut |ev| {
            views.apply(&ev, Sign::Add);
            true
        });
    }
}

/// The views' group that a rollup group names; `None` for all calls.
fn view_group(group: RollupGroup) -> Option<Group> {
    match group {
        RollupGroup::All => None,
        RollupGroup::Model => Some(Group::Model),
        RollupGroup::Key => Some(Group::Key),
        RollupGroup::Provider => Some(Group::Provider),
        RollupGroup::Credential => Some(Group::Credential),
        RollupGroup::StatusClass => Some(Group::StatusClass),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::StatusFilter;

    #[test]
    fn the_coarse_clock_keeps_up_with_the_precise_one() {
        // It lags by at most a timer tick (4 ms at 250 Hz); a second allows for a stalled machine.
        for _ in 0..100 {
            let before = system_clock_ms();
            let coarse = coarse_clock_ms();
            let after = system_clock_ms();
            assert!(coarse > before - 1000 && coarse <= after, "coarse {coarse}, precise {before}..{after}");
        }
    }

    fn event(i: u64) -> NewEvent {
        let mut e = NewEvent { ts_ms: 1_767_225_600_000 + i as i64 * 1000, status: if i.is_multiple_of(7) { 500 } else { 200 }, latency_ms: 100, ..NewEvent::default() };
        e.success = e.status == 200;
        e.dims[Dim::Model as usize] = format!("model-{}", i % 5);
        e.dims[Dim::Key as usize] = format!("key-{}", i % 11);
        e.dims[Dim::Credential as usize] = format!("cred-{}", i % 3);
        e
    }

    /// Under `interval` the syncer makes what was written durable on its own, between its
    /// write-behind kicks, and across rolls.
    #[test]
    fn the_interval_syncer_makes_appends_durable_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = EngineOptions::new(dir.path());
        opts.durability = Durability::Interval { every_ms: 50 };
        opts.segment_bytes_max = 64 * 1024;
        opts.retention = Retention::none();
        opts.retention_interval_ms = None;
        opts.clock = Arc::new(|| 1_767_225_600_000 + 86_400_000);
        let (engine, _) = Engine::open(opts).unwrap();
        let wait_durable = |last: u64| {
            let start = Instant::now();
            while engine.durable_seq() < last {
                assert!(start.elapsed() < Duration::from_secs(10), "seq {last} not durable after 10 s");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let events: Vec<NewEvent> = (0..12_000).map(event).collect();
        for (round, chunk) in events.chunks(500).enumerate() {
            let last = engine.append(chunk).unwrap().last_seq;
            if round % 3 == 0 {
                // Sometimes wait for it: within a few sync intervals it is durable.
                wait_durable(last);
            }
        }
        assert!(engine.status().segments >= 3, "the appends rolled segments: {}", engine.status().segments);
        wait_durable(engine.last_seq());
    }

    /// A saved index that fails its CRC or does not decode is built again from the segment's
    /// events, to the same answers.
    #[test]
    fn a_saved_index_that_does_not_decode_is_rebuilt_from_the_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = EngineOptions::new(dir.path());
        opts.segment_bytes_max = 64 * 1024;
        opts.retention = Retention::none();
        opts.retention_interval_ms = None;
        opts.clock = Arc::new(|| 1_767_225_600_000 + 86_400_000);
        let (engine, _) = Engine::open(opts.clone()).unwrap();
        let events: Vec<NewEvent> = (0..12_000).map(event).collect();
        for chunk in events.chunks(100) {
            engine.append(chunk).unwrap();
        }
        engine.close().unwrap();
        drop(engine);

        let file = saved::open(&dir.path().join(saved::FILE)).unwrap();
        let bases: Vec<u64> = {
            let mut b: Vec<u64> = fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| segment::parse_segment_file_name(&e.unwrap().file_name().to_string_lossy()))
                .collect();
            b.sort_unstable();
            b
        };
        assert!(bases.len() > 2);
        let rollups = Rollups::load(dir.path()).unwrap();
        let good = restore(&opts, &bases, &rollups, &file).unwrap();
        let mut bad = restore(&opts, &bases, &rollups, &file).unwrap();
        for (i, seg) in bad.loaded.iter_mut().enumerate() {
            // Bytes that pass their CRC but are not an index, or that fail it.
            let crc = if i % 2 == 0 { crc32fast::hash(&file.map()[..16]) } else { 0 };
            seg.set_index(LazyIndex::saved(saved::SavedBytes::new(file.map().clone(), 0..16), crc));
        }
        let model = good.interner.get("model-3").unwrap();
        let filters = [
            LogFilter::default(),
            LogFilter { model: Some(model), ..LogFilter::default() },
            LogFilter { status: Some(StatusFilter::Errors), ..LogFilter::default() },
        ];
        for (g, b) in good.loaded.iter().zip(&bad.loaded) {
            for filter in &filters {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                index::query_segment(g, g.index(), filter, u64::MAX, 1000, &mut x);
                index::query_segment(b, b.index(), filter, u64::MAX, 1000, &mut y);
                assert!(!x.is_empty() || filter.model.is_some());
                assert_eq!(x, y);
            }
        }
    }
}
