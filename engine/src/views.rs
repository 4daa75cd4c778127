//! Materialised views over usage events: totals, latency and TTFT histograms, per-group
//! breakdowns and time-zone-aware trends, kept in memory, updated on every append
//! (`Sign::Add`) and when retention drops whole old segments (`Sign::Sub` of exactly the events
//! that were added).
//!
//! # Layout
//! - Per UTC day with data, a `DayBlock`:
//!   - 1440 minute slots, allocated only for minutes with events, each an aggregate plus the
//!     minute's latency + TTFT histogram (sorted runs of packed bin counts; dense while the
//!     minute is among the last few appended to);
//!   - 96 quarter-hour slots with the same totals (all zone offsets since 1972 are multiples
//!     of 15 minutes, so local hours and days start on quarter hours);
//!   - 24 hour slots with the breakdown cells of Model, Endpoint, Provider, Credential and
//!     StatusClass, and the hour's Key cells: every key while the hour is hot, only the
//!     heaviest once it is frozen (see "Top-N" below);
//!   - the day's Key cells, and once frozen its heaviest keys;
//!   - once an hour (day) freezes, the sum of its quarters with their histograms (any write
//!     drops it): an hourly trend bucket is then a copy, a long range reads days and hours.
//!
//!   Days live in a `Vec` sorted by day number; the last-touched position is cached, so
//!   in-order appends do no search.
//! - All-time cells: per hourly group, the sum of the frozen hours (hot hours are added at
//!   query time); for Key, every key's all-time cell, next to which the key's latest-hour
//!   cells sit "inline", so an in-order append touches one small Key entry
//!   (`cells::KeyTotals`).
//! - Hot and frozen: the cells of periods being written are hash maps or append logs; a
//!   period nothing was applied to for a while is frozen into sorted `Vec`s (hours) or
//!   varint-packed bytes (Key days), about a half and a quarter of the memory. Frozen cells
//!   still take writes.
//!
//! # Exactness and [`EdgeScan`]
//! Summaries and trends are exact from the cells for any minute-aligned range (whole
//! quarters are read from the quarter slots), in any zone whose offsets are whole minutes.
//! Breakdowns are exact from the cells for whole UTC hours (whole UTC days for Key). The rest
//! comes from the `EdgeScan`, which is asked only for:
//! - summary / trend: the UTC minutes holding events that contain the range ends or a bucket
//!   boundary not on a minute (adjacent ones in one call), clipped to the range;
//! - breakdown: the partial UTC hours (days for Key) at both ends of the range, narrowed to the
//!   minutes holding events and clipped to the range; nothing when `from ≤ min ts` and
//!   `to > max ts` (the all-time cells answer);
//! - top-N of Key ([`Views::top_n`]): the partial UTC hours at both ends, likewise narrowed;
//!   and when the heavy keys cannot prove the answer, what the Key breakdown asks for.
//!
//! # Top-N
//! A frozen hour or day keeps the exact cells of its `HEAVY_KEYS` heaviest keys (half by
//! tokens, half by calls) and, for every other key, an upper bound of its tokens and of its
//! calls there (`cells::HeavyKeys`). A Key top-N over a range sums those lists over the whole
//! days and the hours of the partial days it covers (hot periods give all their keys), plus
//! a scan of the partial hours. The answer is proven, and returned without the breakdown, when
//! each of the N keys is listed wherever its period has unlisted calls (so its cells are
//! exact), and no other key, listed or not, can reach the N-th by the bounds; the rest ("other")
//! is the range total less the N. Usage is skewed in practice (a few keys make most calls),
//! so this mostly holds; otherwise `top_n` falls back to the Key breakdown. After removals or
//! late additions a frozen list keeps exact cells for its keys and valid (looser) bounds for
//! the others.
//!
//! # Histograms
//! Values below 16 ms have a bin each; above, each power of two is split into 8 equal bins, so
//! the `u32` range takes 240 bins. A quantile reports the middle of its bin, within 6.25 % of
//! the true value (`histogram.rs` has the arithmetic).
//!
//! # Invariants
//! - Cells, slots and days whose counts return to zero are removed, and equality compares
//!   content only: views that saw the same multiset of events are equal whatever the order and
//!   whether or not other events were added and removed in between. Caches (the day cursor,
//!   hot or frozen or inline forms, dense minutes, the offsets behind
//!   [`Views::time_bounds`]), the heavy-key lists and bounds (an index whose exact content
//!   depends on when periods froze) and capacities take no part.
//! - Internal sums are modulo 2^64, so adding and removing are exact inverses in any order.
//!   Removing an event that was never added is a caller bug: `debug_assert!` catches it; in
//!   release it is absorbed without a panic (the views are then wrong, not broken).
//!
//! # Limits
//! - Key breakdowns and top-Ns carry calls, errors, tokens and latency sum only; the TTFT,
//!   stream and quality counters of their `Agg`s are zero.
//! - A Key breakdown over a range with partial UTC days scans those partial days (Key has
//!   ~10k values: hourly cells of every key would take about as much memory as all the rest).
//!   `top_n` avoids that scan when the heavy keys prove the answer (see "Top-N").
//! - [`Views::time_bounds`] is exact while nothing was removed. Removing the first (last) event
//!   of a minute that keeps other events leaves that bound where it was, up to a minute too
//!   wide, never too narrow.
//! - Trends cover at most ±3·10^15 ms around the epoch (about ±95 000 years) and at most
//!   [`MAX_TREND_BUCKETS`] buckets. Sums beyond 2^64 wrap.

#[path = "views/calendar.rs"]
mod calendar;
#[path = "views/cells.rs"]
pub(crate) mod cells;
#[path = "views/histogram.rs"]
mod histogram;

pub use histogram::{BINS as HISTOGRAM_BINS, Histogram, bin_of as histogram_bin_of, bin_value as histogram_bin_value};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::event::{Dim, StoredEvent, status_class};
use cells::{
    AggCell, Cell, CellMap, DayMove, HeavyKeys, HotCells, HourKeys, KeyCell, KeyMap, KeyTotals, OrderedMap, SortedAcc,
    cell_calls,
};
use histogram::{BINS, DenseKeys, KEYS, SlotHist, bin_of};

/// The most buckets one trend returns.
pub const MAX_TREND_BUCKETS: u64 = 10_000;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const MINUTES_PER_DAY: usize = 1440;
const MINUTES_PER_QUARTER: usize = 15;
const QUARTERS_PER_HOUR: usize = 4;
const QUARTERS_PER_DAY: usize = 96;
const HOURS_PER_DAY: usize = 24;

/// Whether an event enters or leaves the views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sign {
    Add,
    Sub,
}

/// Half-open UTC millisecond range [from_ms, to_ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl TimeRange {
    /// Every representable instant but `i64::MAX`.
    pub const ALL: TimeRange = TimeRange { from_ms: i64::MIN, to_ms: i64::MAX };

    pub fn new(from_ms: i64, to_ms: i64) -> TimeRange {
        TimeRange { from_ms, to_ms }
    }

    pub fn contains(&self, ts_ms: i64) -> bool {
        self.from_ms <= ts_ms && ts_ms < self.to_ms
    }

    pub fn is_empty(&self) -> bool {
        self.from_ms >= self.to_ms
    }
}

/// Additive aggregate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agg {
    pub calls: u64,
    /// Calls with `success == false`.
    pub errors: u64,
    /// In [`crate::event::Tokens::to_array`] order.
    pub tokens: [u64; 6],
    pub latency_sum_ms: u64,
    pub ttft_sum_ms: u64,
    /// Calls that reported a TTFT.
    pub ttft_calls: u64,
    pub stream_calls: u64,
    /// Indexed by `Quality as u8`.
    pub quality_calls: [u64; 4],
}

impl Agg {
    /// The aggregate of one event.
    pub fn of_event(ev: &StoredEvent) -> Agg {
        let mut quality_calls = [0; 4];
        quality_calls[(ev.quality as usize).min(3)] = 1;
        Agg {
            calls: 1,
            errors: u64::from(!ev.success),
            tokens: ev.tokens.to_array(),
            latency_sum_ms: u64::from(ev.latency_ms),
            ttft_sum_ms: u64::from(ev.ttft_ms.unwrap_or(0)),
            ttft_calls: u64::from(ev.ttft_ms.is_some()),
            stream_calls: u64::from(ev.stream),
            quality_calls,
        }
    }

    pub fn add_event(&mut self, ev: &StoredEvent, sign: Sign) {
        let delta = Agg::of_event(ev);
        match sign {
            Sign::Add => self.merge(&delta),
            Sign::Sub => self.unmerge(&delta),
        }
    }

    #[inline]
    pub fn merge(&mut self, o: &Agg) {
        self.calls = self.calls.saturating_add(o.calls);
        self.errors = self.errors.saturating_add(o.errors);
        for (a, b) in self.tokens.iter_mut().zip(o.tokens) {
            *a = a.saturating_add(b);
        }
        self.latency_sum_ms = self.latency_sum_ms.saturating_add(o.latency_sum_ms);
        self.ttft_sum_ms = self.ttft_sum_ms.saturating_add(o.ttft_sum_ms);
        self.ttft_calls = self.ttft_calls.saturating_add(o.ttft_calls);
        self.stream_calls = self.stream_calls.saturating_add(o.stream_calls);
        for (a, b) in self.quality_calls.iter_mut().zip(o.quality_calls) {
            *a = a.saturating_add(b);
        }
    }

    /// Removes what `o` added; removing more than was added is a caller bug.
    #[inline]
    pub(crate) fn unmerge(&mut self, o: &Agg) {
        debug_assert!(
            self.calls >= o.calls && self.errors >= o.errors && self.ttft_calls >= o.ttft_calls,
            "agg: removing more than was added"
        );
        self.calls = self.calls.saturating_sub(o.calls);
        self.errors = self.errors.saturating_sub(o.errors);
        for (a, b) in self.tokens.iter_mut().zip(o.tokens) {
            *a = a.saturating_sub(b);
        }
        self.latency_sum_ms = self.latency_sum_ms.saturating_sub(o.latency_sum_ms);
        self.ttft_sum_ms = self.ttft_sum_ms.saturating_sub(o.ttft_sum_ms);
        self.ttft_calls = self.ttft_calls.saturating_sub(o.ttft_calls);
        self.stream_calls = self.stream_calls.saturating_sub(o.stream_calls);
        for (a, b) in self.quality_calls.iter_mut().zip(o.quality_calls) {
            *a = a.saturating_sub(b);
        }
    }

    pub fn total_tokens(&self) -> u64 {
        self.tokens.iter().fold(0u64, |a, &t| a.saturating_add(t))
    }

    /// Share of calls that succeeded; `None` without calls.
    pub fn success_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.calls.saturating_sub(self.errors) as f64 / self.calls as f64)
    }

    pub fn avg_latency_ms(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.latency_sum_ms as f64 / self.calls as f64)
    }

    /// Mean TTFT over the calls that reported one.
    pub fn avg_ttft_ms(&self) -> Option<f64> {
        (self.ttft_calls > 0).then(|| self.ttft_sum_ms as f64 / self.ttft_calls as f64)
    }

    pub fn is_zero(&self) -> bool {
        *self == Agg::default()
    }
}

/// What a breakdown groups by. For Sym dims the group key is `Sym.0`; for StatusClass it is
/// 0..=5 ([`crate::event::status_class`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    Model,
    Endpoint,
    Provider,
    Credential,
    Key,
    StatusClass,
}

impl Group {
    pub const ALL: [Group; 6] =
        [Group::Model, Group::Endpoint, Group::Provider, Group::Credential, Group::Key, Group::StatusClass];

    /// The group key of an event.
    pub fn key_of(self, ev: &StoredEvent) -> u32 {
        match self {
            Group::Model => ev.dim(Dim::Model).0,
            Group::Endpoint => ev.dim(Dim::Endpoint).0,
            Group::Provider => ev.dim(Dim::Provider).0,
            Group::Credential => ev.dim(Dim::Credential).0,
            Group::Key => ev.dim(Dim::Key).0,
            Group::StatusClass => u32::from(status_class(ev.status)),
        }
    }

    /// Index into the hourly cells; `None` for Key, which has daily cells.
    fn hourly_index(self) -> Option<usize> {
        HOURLY_GROUPS.iter().position(|g| *g == self)
    }
}

/// The groups with hourly cells, in cell order.
const HOURLY_GROUPS: [Group; 5] =
    [Group::Model, Group::Endpoint, Group::Provider, Group::Credential, Group::StatusClass];

/// Trend bucket size, in local time of the trend's zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
    /// ISO weeks: start Monday 00:00 local time.
    Week,
    Month,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub agg: Agg,
    pub latency: Histogram,
    /// Only calls that reported a TTFT.
    pub ttft: Histogram,
}

impl Summary {
    fn add_event(&mut self, ev: &StoredEvent) {
        self.agg.add_event(ev, Sign::Add);
        self.latency.record(ev.latency_ms, Sign::Add);
        if let Some(ttft) = ev.ttft_ms {
            self.ttft.record(ttft, Sign::Add);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrendBucket {
    /// UTC start, inclusive; the first bucket starts at the range start.
    pub start_ms: i64,
    /// UTC end, exclusive; the last bucket ends at the range end.
    pub end_ms: i64,
    pub agg: Agg,
    pub latency: Histogram,
    pub ttft: Histogram,
}

/// Supplies raw events for the parts of a range the cells cannot answer exactly.
pub trait EdgeScan {
    /// Calls `f` once with every held event whose ts lies in `range`. It may also pass events
    /// outside `range` (whole blocks, say); the views filter by ts themselves.
    fn scan(&mut self, range: TimeRange, f: &mut dyn FnMut(&StoredEvent));
}

impl<F: FnMut(TimeRange, &mut dyn FnMut(&StoredEvent))> EdgeScan for F {
    fn scan(&mut self, range: TimeRange, f: &mut dyn FnMut(&StoredEvent)) {
        self(range, f)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    #[error("too many buckets: {requested} requested, at most {max} allowed")]
    TooManyBuckets { requested: u64, max: u64 },
    #[error("empty time range")]
    EmptyRange,
}

#[derive(Clone, Serialize, Deserialize)]
struct MinuteSlot {
    agg: AggCell,
    hist: SlotHist<u16>,
    /// Offsets within the minute of the first and last event; a cache (see `time_bounds`).
    first_offset_ms: u16,
    last_offset_ms: u16,
}

impl PartialEq for MinuteSlot {
    fn eq(&self, other: &MinuteSlot) -> bool {
        self.agg == other.agg && self.hist == other.hist
    }
}

/// A part of a day (its minute slots, quarter slots, hour slots, Key cells), reached through
/// `Deref`. After an open from the saved state it stays undecoded in that mapped file until first
/// used: most queries read whole days, and only the newest days change, so an open and its first
/// answers skip most of the views (their decode and the page faults of their hundreds of
/// thousands of allocations). A background thread decodes the rest soon after the open
/// (`Views::load_saved_day`), which lets the file go.
#[derive(Clone)]
struct Lazy<T: DayPart>(crate::saved::Lazy<T>);

/// What a [`Lazy`] can hold.
trait DayPart: Serialize + serde::de::DeserializeOwned + Clone {
    /// Whether a decoded value has the right shape (a slot array its length).
    fn is_whole(&self) -> bool {
        true
    }
}

type MinuteSlots = Box<[Option<Box<MinuteSlot>>]>;

impl DayPart for MinuteSlots {
    fn is_whole(&self) -> bool {
        self.len() == MINUTES_PER_DAY
    }
}

/// The quarter slots of a day.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct Quarters(#[serde(with = "crate::saved::arrays")] [Option<Box<QuarterSlot>>; QUARTERS_PER_DAY]);

impl DayPart for Quarters {}
impl DayPart for [Option<Box<HourSlot>>; HOURS_PER_DAY] {}
impl DayPart for KeyMap {}

impl std::ops::Deref for Quarters {
    type Target = [Option<Box<QuarterSlot>>; QUARTERS_PER_DAY];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Quarters {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<T: DayPart> Lazy<T> {
    fn new(value: T) -> Lazy<T> {
        Lazy(crate::saved::Lazy::new(value))
    }

    /// The value, decoded from the saved state first if it still is there.
    fn get(&self) -> &T {
        // The part holding it passed its CRC at the open, and we wrote it: a failure here is a
        // bug in this file's encoding, not damage.
        self.0.get_or_load(|b| Lazy::<T>::decode(b).expect("a saved part of a day decodes"))
    }

    fn get_mut(&mut self) -> &mut T {
        self.get();
        self.0.get_mut().expect("decoded just above")
    }

    /// The value, if decoded.
    fn loaded(&self) -> Option<&T> {
        self.0.loaded()
    }

    fn decode(b: &[u8]) -> Option<T> {
        crate::format::decode_saved::<T>(b).filter(T::is_whole)
    }
}

impl<T: DayPart> std::ops::Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.get()
    }
}

impl<T: DayPart> std::ops::DerefMut for Lazy<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.get_mut()
    }
}

impl<T: DayPart + PartialEq> PartialEq for Lazy<T> {
    fn eq(&self, other: &Lazy<T>) -> bool {
        self.get() == other.get()
    }
}

/// Saved as one byte string holding the bincode of the value, so a load can keep it undecoded.
impl<T: DayPart> Serialize for Lazy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.with_saved(|saved| match saved {
            Ok(value) => {
                let mut out = Vec::new();
                crate::format::encode_saved(value, &mut out).map_err(serde::ser::Error::custom)?;
                s.serialize_bytes(&out)
            }
            Err(bytes) => s.serialize_bytes(bytes),
        })
    }
}

impl<'de, T: DayPart> Deserialize<'de> for Lazy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lazy<T>, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: DayPart> serde::de::Visitor<'de> for Visit<T> {
            type Value = Lazy<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a saved part of a day")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, b: &'de [u8]) -> Result<Lazy<T>, E> {
                match crate::saved::keep(b) {
                    Some(saved) => Ok(Lazy(crate::saved::Lazy::saved(saved))),
                    None => self.visit_bytes(b),
                }
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Lazy<T>, E> {
                let value = Lazy::<T>::decode(b).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Bytes(&[]), &self))?;
                Ok(Lazy::new(value))
            }
        }
        d.deserialize_bytes(Visit(std::marker::PhantomData))
    }
}

/// A cold minute's histogram turns dense past this many entries (it is then 3840 bytes).
const MINUTE_RUNS_MAX: usize = 512;
/// A quarter's histogram stays dense once it needs more entries than this.
const QUARTER_RUNS_MAX: usize = 128;
/// A day total's histogram is kept dense above this many entries.
const DAY_RUNS_MAX: usize = 256;

/// A frozen hour's totals, with its histograms as a trend bucket returns them.
#[derive(Clone, Serialize, Deserialize)]
struct HourTotal {
    agg: AggCell,
    latency: Histogram,
    ttft: Histogram,
}

/// The totals of a UTC quarter hour.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct QuarterSlot {
    agg: AggCell,
    hist: SlotHist<u32>,
}

#[derive(Clone, Serialize, Deserialize)]
struct HourSlot {
    /// Events held; the slot goes when it returns to zero.
    calls: u64,
    /// Indexed like `HOURLY_GROUPS`.
    groups: [CellMap<AggCell>; 5],
    /// Frozen: the group cells are sorted and counted in `Views::frozen_totals`.
    frozen: bool,
    /// The hour's Key cells: all while hot, the heaviest once frozen (an index for `top_n`,
    /// so not compared: what a frozen hour keeps depends on its history).
    keys: HourKeys,
    /// `Views::applies` when last touched (a cache).
    last_touch: u64,
    /// The sum of the hour's quarters, computed when the hour freezes and dropped by any write
    /// (a cache: an hourly trend bucket is then a copy of it, not a merge of four quarters).
    total: Option<Box<HourTotal>>,
}

impl PartialEq for HourSlot {
    fn eq(&self, other: &HourSlot) -> bool {
        self.calls == other.calls && self.groups == other.groups
    }
}

/// Everything kept for one UTC day.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct DayBlock {
    day: i64,
    /// Events held; the block goes when it returns to zero.
    calls: u64,
    /// `MINUTES_PER_DAY` slots.
    minutes: Lazy<MinuteSlots>,
    quarters: Lazy<Quarters>,
    hours: Lazy<[Option<Box<HourSlot>>; HOURS_PER_DAY]>,
    keys: Lazy<KeyMap>,
    /// The heaviest keys of the day: set while `keys` is packed (the day is frozen and has no
    /// inline cells), computed when it was packed.
    heavy: Option<HeavyKeys>,
    /// The sum of the quarters, computed when the day freezes and dropped by any write (a
    /// cache: long summaries and trends then read 30 days, not 2880 quarters).
    total: Option<Box<QuarterSlot>>,
    /// `Views::applies` when last touched (a cache).
    last_touch: u64,
}

/// Key cells are compared by `Views`, since some may be inline in `Views::key_totals`.
impl PartialEq for DayBlock {
    fn eq(&self, other: &DayBlock) -> bool {
        self.day == other.day
            && self.calls == other.calls
            && self.minutes == other.minutes
            && self.quarters == other.quarters
            && self.hours == other.hours
    }
}

impl DayBlock {
    fn new(day: i64) -> DayBlock {
        DayBlock {
            day,
            calls: 0,
            minutes: Lazy::new((0..MINUTES_PER_DAY).map(|_| None).collect()),
            quarters: Lazy::new(Quarters(std::array::from_fn(|_| None))),
            hours: Lazy::new(std::array::from_fn(|_| None)),
            keys: Lazy::new(KeyMap::default()),
            heavy: None,
            total: None,
            last_touch: 0,
        }
    }

    /// Adds the minutes `a..b` of this day (0 ≤ a ≤ b ≤ 1440), taking whole quarters from the
    /// quarter slots.
    fn add_minutes(&self, a: usize, b: usize, agg: &mut AggCell, hist: &mut [u64; KEYS]) {
        if let Some(total) = self.total.as_ref().filter(|_| a == 0 && b == MINUTES_PER_DAY) {
            agg.merge(&total.agg);
            total.hist.add_to(hist);
            return;
        }
        let (q_a, q_b) = (a.div_ceil(MINUTES_PER_QUARTER), b / MINUTES_PER_QUARTER);
        if q_a >= q_b {
            self.add_minute_slots(a, b, agg, hist);
            return;
        }
        self.add_minute_slots(a, q_a * MINUTES_PER_QUARTER, agg, hist);
        let mut q = q_a;
        while q < q_b {
            // A whole frozen hour: its total.
            if q.is_multiple_of(QUARTERS_PER_HOUR)
                && q + QUARTERS_PER_HOUR <= q_b
                && let Some(total) = self.hours[q / QUARTERS_PER_HOUR].as_ref().and_then(|h| h.total.as_ref())
            {
                agg.merge(&total.agg);
                total.latency.add_to(&mut hist[..BINS]);
                total.ttft.add_to(&mut hist[BINS..]);
                q += QUARTERS_PER_HOUR;
                continue;
            }
            if let Some(slot) = &self.quarters[q] {
                agg.merge(&slot.agg);
                slot.hist.add_to(hist);
            }
            q += 1;
        }
        self.add_minute_slots(q_b * MINUTES_PER_QUARTER, b, agg, hist);
    }

    fn add_minute_slots(&self, a: usize, b: usize, agg: &mut AggCell, hist: &mut [u64; KEYS]) {
        for slot in self.minutes[a..b].iter().flatten() {
            agg.merge(&slot.agg);
            slot.hist.add_to(hist);
        }
    }

    /// The totals of the hours `a..b` of this day.
    fn hours_agg(&self, a: usize, b: usize) -> AggCell {
        let mut agg = AggCell::default();
        for slot in self.quarters[a * QUARTERS_PER_HOUR..b * QUARTERS_PER_HOUR].iter().flatten() {
            agg.merge(&slot.agg);
        }
        agg
    }

    /// Applies a Key cell to the day's map; true when the map was packed and turned hot (its
    /// heavy keys are then gone).
    fn apply_key(&mut self, key: u32, cell: &KeyCell, sign: Sign) -> bool {
        let thawed = self.keys.apply(key, cell, sign);
        if thawed {
            self.heavy = None;
        }
        thawed
    }

    /// Makes the Key map hot before inline cells are added for this day; true if it was packed.
    #[inline]
    fn thaw_keys(&mut self) -> bool {
        if self.heavy.is_none() {
            return false;
        }
        let thawed = self.keys.thaw();
        if thawed {
            self.heavy = None;
        }
        thawed
    }

    fn heap_bytes(&self) -> usize {
        // Parts still in the saved state are in its mapped file, not the heap.
        let minutes: &[Option<Box<MinuteSlot>>] = self.minutes.loaded().map_or(&[], |m| m);
        let mut bytes = std::mem::size_of_val(minutes) + self.keys.loaded().map_or(0, KeyMap::heap_bytes);
        for slot in minutes.iter().flatten() {
            bytes += size_of::<MinuteSlot>() + slot.hist.heap_bytes();
        }
        for slot in self.quarters.loaded().map_or(&[][..], |q| &q.0[..]).iter().flatten() {
            bytes += size_of::<QuarterSlot>() + slot.hist.heap_bytes();
        }
        for slot in self.hours.loaded().map_or(&[][..], |h| &h[..]).iter().flatten() {
            bytes += size_of::<HourSlot>() + slot.keys.heap_bytes();
            bytes += slot.total.as_ref().map_or(0, |t| size_of::<HourTotal>() + t.latency.heap_bytes() + t.ttft.heap_bytes());
            bytes += slot.groups.iter().map(|g| g.heap_bytes()).sum::<usize>();
        }
        bytes += self.total.as_ref().map_or(0, |t| size_of::<QuarterSlot>() + t.hist.heap_bytes());
        bytes + self.heavy.as_ref().map_or(0, HeavyKeys::heap_bytes)
    }

    /// Decodes whatever of this day is still in the saved state.
    fn load_saved(&self) {
        self.minutes.get();
        self.quarters.get();
        self.hours.get();
        self.keys.get();
    }

    fn holds_saved(&self) -> bool {
        self.minutes.loaded().is_none() || self.quarters.loaded().is_none() || self.hours.loaded().is_none() || self.keys.loaded().is_none()
    }

    /// Sums the quarters into `total`.
    fn compute_total(&mut self) {
        self.total = Some(sum_quarters(&self.quarters[..], DAY_RUNS_MAX));
    }
}

/// The sum of an hour's quarters.
fn hour_total(quarters: &[Option<Box<QuarterSlot>>]) -> Box<HourTotal> {
    let (agg, mut dense) = add_quarters(quarters);
    let (latency, ttft) = dense.take();
    Box::new(HourTotal { agg, latency, ttft })
}

/// The sum of some quarters, its histogram compacted to at most `runs_max` entries.
fn sum_quarters(quarters: &[Option<Box<QuarterSlot>>], runs_max: usize) -> Box<QuarterSlot> {
    let (agg, dense) = add_quarters(quarters);
    let mut total = SlotHist::Dense(dense.0);
    total.compact(runs_max);
    Box::new(QuarterSlot { agg, hist: total })
}

/// The totals and dense histogram counters of some quarters.
fn add_quarters(quarters: &[Option<Box<QuarterSlot>>]) -> (AggCell, DenseKeys) {
    let mut agg = AggCell::default();
    let mut dense = DenseKeys::new();
    for slot in quarters.iter().flatten() {
        agg.merge(&slot.agg);
        slot.hist.add_to(&mut dense.0);
    }
    (agg, dense)
}

/// Removals from a frozen hour with more cells than this in some group thaw it first.
const SORTED_REMOVE_MAX: usize = 64;

/// Sorts the group cells of an hour and counts them in `totals`.
fn freeze_hour(slot: &mut HourSlot, totals: &mut [OrderedMap<AggCell>; 5]) {
    if slot.frozen {
        return;
    }
    for (cells, totals) in slot.groups.iter_mut().zip(totals) {
        cells.freeze();
        for (key, cell) in cells.sorted().iter() {
            totals.apply(*key, cell, Sign::Add);
        }
    }
    slot.frozen = true;
}

/// Undoes `freeze_hour`.
fn thaw_hour(slot: &mut HourSlot, totals: &mut [OrderedMap<AggCell>; 5]) {
    if !slot.frozen {
        return;
    }
    for (cells, totals) in slot.groups.iter_mut().zip(totals) {
        for (key, cell) in cells.sorted().iter() {
            totals.apply(*key, cell, Sign::Sub);
        }
        cells.thaw();
    }
    slot.frozen = false;
}

/// A period whose cells are hot, to be frozen once it is old.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HotPeriod {
    /// Hour index: UTC hours since the epoch.
    Hour(i64),
    Day(i64),
}

/// Hot periods untouched for this many `apply` calls are frozen. Recency of use, not of time,
/// decides, so one far-future event cannot make the current hour look old.
const IDLE_APPLIES: u64 = if cfg!(test) { 40 } else { 16_384 };
/// How often (in `apply` calls) idle hot periods are looked for.
const FREEZE_CHECK_EVERY: u64 = if cfg!(test) { 16 } else { 1024 };
/// Past this many hot periods the check runs at once.
const HOT_PERIODS_MAX: usize = 32;
/// Minutes whose histogram is kept dense: the most recently added-to ones.
const DENSE_MINUTES: usize = 4;
/// Keys a frozen hour or day keeps exactly for `top_n`: half the heaviest by tokens, half by
/// calls. A top-N query over a range with partial days is answered from these when the N
/// keys are among them wherever they had calls, and nothing else can reach them.
const HEAVY_KEYS: usize = if cfg!(test) { 4 } else { 32 };

/// Periods an `apply` turned hot.
#[derive(Default)]
struct TurnedHot([Option<HotPeriod>; 6]);

impl TurnedHot {
    fn push(&mut self, period: HotPeriod) {
        if let Some(free) = self.0.iter_mut().find(|p| p.is_none()) {
            *free = Some(period);
        }
    }
}

/// The materialised views.
#[derive(Clone)]
pub struct Views {
    /// Sorted by day; only days holding events.
    days: Vec<DayBlock>,
    /// Index in `days` of the last-touched day (a cache, possibly stale).
    cursor: usize,
    /// Per hourly group, the sum of the cells of every frozen hour. The all-time breakdown is
    /// this plus the hot hours (every hot hour is in `hot`), so appends to hot hours, the usual
    /// case, pay for no all-time update.
    frozen_totals: [OrderedMap<AggCell>; 5],
    /// All-time Key cells, kept eagerly (Key has too many keys to sum hot days per query),
    /// with each key's latest day's cells inline.
    key_totals: KeyTotals,
    /// `apply` calls so far: the clock of "recently touched".
    applies: u64,
    /// Minute indices (UTC minutes since the epoch) most recently added to, most recent first;
    /// their slots keep dense histograms, where appends cost no search.
    dense_minutes: [i64; DENSE_MINUTES],
    /// Every hour with unfrozen cells, and every day with a hot Key map.
    hot: Vec<HotPeriod>,
}

/// The views as saved at a clean close, in two parts decoded on two threads: the older half of
/// the days, and the rest (see `saved`).
/// Generic so that `close` saves borrowed parts and `open` reads owned ones in one layout.
#[derive(Serialize, Deserialize)]
pub(crate) struct ViewsDays<Days>(Days);

#[derive(Serialize, Deserialize)]
pub(crate) struct ViewsRest<Days, Totals, Keys, Hot> {
    days: Days,
    cursor: usize,
    frozen_totals: Totals,
    key_totals: Keys,
    applies: u64,
    dense_minutes: [i64; DENSE_MINUTES],
    hot: Hot,
}

type SavedDays<'a> = ViewsDays<&'a [DayBlock]>;
type SavedRest<'a> = ViewsRest<&'a [DayBlock], &'a [OrderedMap<AggCell>; 5], &'a KeyTotals, &'a [HotPeriod]>;
pub(crate) type LoadedDays = ViewsDays<Vec<DayBlock>>;
pub(crate) type LoadedRest = ViewsRest<Vec<DayBlock>, [OrderedMap<AggCell>; 5], KeyTotals, Vec<HotPeriod>>;

impl Views {
    pub(crate) fn saved_parts(&self) -> (SavedDays<'_>, SavedRest<'_>) {
        let (older, newer) = self.days.split_at(self.days.len() / 2);
        let rest = SavedRest {
            days: newer,
            cursor: self.cursor,
            frozen_totals: &self.frozen_totals,
            key_totals: &self.key_totals,
            applies: self.applies,
            dense_minutes: self.dense_minutes,
            hot: &self.hot,
        };
        (ViewsDays(older), rest)
    }

    /// Decodes what day `i` still keeps in the saved state; false past the last day.
    pub(crate) fn load_saved_day(&self, i: usize) -> bool {
        self.days.get(i).map(DayBlock::load_saved).is_some()
    }

    /// Decodes everything the days still keep in the saved state.
    pub(crate) fn load_all_saved(&self) {
        self.days.iter().for_each(DayBlock::load_saved);
    }

    /// Whether any day still keeps something in the saved state.
    pub(crate) fn holds_saved(&self) -> bool {
        self.days.iter().any(DayBlock::holds_saved)
    }

    pub(crate) fn from_saved_parts(older: LoadedDays, rest: LoadedRest) -> Views {
        let mut days = older.0;
        days.extend(rest.days);
        Views {
            days,
            cursor: rest.cursor,
            frozen_totals: rest.frozen_totals,
            key_totals: rest.key_totals,
            applies: rest.applies,
            dense_minutes: rest.dense_minutes,
            hot: rest.hot,
        }
    }
}

impl Default for Views {
    fn default() -> Views {
        Views::new()
    }
}

/// Equal when the held events are; caches and the hot/frozen/inline forms do not count.
impl PartialEq for Views {
    fn eq(&self, other: &Views) -> bool {
        self.days == other.days && self.key_totals == other.key_totals && self.day_keys() == other.day_keys()
    }
}

impl Eq for Views {}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views")
            .field("days", &self.days.len())
            .field("events", &self.event_count())
            .field("time_bounds", &self.time_bounds())
            .finish_non_exhaustive()
    }
}

/// The ts of a millisecond of a day; `day * DAY_MS` alone overflows for the earliest day.
fn ts_of(day: i64, ms_of_day: i64) -> i64 {
    let ts = i128::from(day) * i128::from(DAY_MS) + i128::from(ms_of_day);
    ts.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b) + i64::from(a.rem_euclid(b) != 0)
}

impl Views {
    pub fn new() -> Views {
        Views {
            days: Vec::new(),
            cursor: 0,
            frozen_totals: Default::default(),
            key_totals: KeyTotals::default(),
            applies: 0,
            dense_minutes: [i64::MIN; DENSE_MINUTES],
            hot: Vec::new(),
        }
    }

    /// Adds or removes one event.
    pub fn apply(&mut self, ev: &StoredEvent, sign: Sign) {
        let delta = AggCell::of_event(ev);
        let key_delta = KeyCell::from_agg_cell(&delta);
        let day = ev.ts_ms.div_euclid(DAY_MS);
        let ms_of_day = ev.ts_ms.rem_euclid(DAY_MS);
        let minute = (ms_of_day / MINUTE_MS) as usize;
        let offset_ms = (ms_of_day % MINUTE_MS) as u16;
        let quarter = minute / MINUTES_PER_QUARTER;
        let hour = minute / 60;
        let minute_index = day * MINUTES_PER_DAY as i64 + minute as i64;
        let hour_index = day * HOURS_PER_DAY as i64 + hour as i64;
        let latency_key = bin_of(ev.latency_ms);
        let ttft_key = ev.ttft_ms.map(|t| BINS + bin_of(t));
        let group_keys = HOURLY_GROUPS.map(|g| g.key_of(ev));
        let key = ev.dim(Dim::Key).0;

        self.applies = self.applies.wrapping_add(1);
        if self.applies.is_multiple_of(FREEZE_CHECK_EVERY) && !self.hot.is_empty() {
            self.freeze_idle();
        }
        if sign == Sign::Add && self.dense_minutes[0] != minute_index {
            self.touch_dense_minute(minute_index);
        }
        let now = self.applies;

        let mut turned_hot = TurnedHot::default();
        let pos = match sign {
            Sign::Add => {
                let (pos, created) = self.day_position_or_insert(day);
                if created {
                    turned_hot.push(HotPeriod::Day(day));
                }
                let block = &mut self.days[pos];
                if block.hours[hour].is_none() {
                    block.hours[hour] = Some(Box::new(HourSlot {
                        calls: 0,
                        groups: std::array::from_fn(|_| CellMap::new(true)),
                        frozen: false,
                        keys: HourKeys::default(),
                        last_touch: now,
                        total: None,
                    }));
                    turned_hot.push(HotPeriod::Hour(hour_index));
                }
                pos
            }
            Sign::Sub => match self.day_position(day) {
                Some(pos) if self.days[pos].hours[hour].is_some() => pos,
                _ => {
                    debug_assert!(false, "views: removing an event never added");
                    return;
                }
            },
        };

        // Key cells first: a removal settles inline cells into the hour and day it removes
        // from, which must still be there.
        let outcome = match sign {
            Sign::Add => {
                let hour_hot = self.days[pos].hours[hour].as_ref().is_some_and(|s| s.keys.is_hot());
                self.key_totals.add(key, day, hour, hour_hot, &key_delta)
            }
            Sign::Sub => self.key_totals.sub(key, day, &key_delta),
        };
        self.apply_day_move(outcome.to_day, &mut turned_hot);
        let block = &mut self.days[pos];
        block.total = None;
        if let Some(slot) = &mut block.hours[hour] {
            slot.total = None;
        }
        if outcome.direct || sign == Sign::Sub {
            if block.apply_key(key, &key_delta, sign) {
                turned_hot.push(HotPeriod::Day(day));
            }
            if let Some(slot) = &mut block.hours[hour] {
                slot.keys.apply(key, &key_delta, sign);
            }
        } else if block.thaw_keys() {
            // Inline cells of a frozen day: its packed map and heavy keys would be stale.
            turned_hot.push(HotPeriod::Day(day));
        }

        // Minute slot.
        match (&mut block.minutes[minute], sign) {
            (Some(slot), Sign::Add) => {
                slot.agg.merge(&delta);
                slot.first_offset_ms = slot.first_offset_ms.min(offset_ms);
                slot.last_offset_ms = slot.last_offset_ms.max(offset_ms);
            }
            (empty @ None, Sign::Add) => {
                let dense = self.dense_minutes.contains(&minute_index);
                *empty = Some(Box::new(MinuteSlot {
                    agg: delta,
                    hist: if dense { SlotHist::dense() } else { SlotHist::default() },
                    first_offset_ms: offset_ms,
                    last_offset_ms: offset_ms,
                }));
            }
            (Some(slot), Sign::Sub) => slot.agg.unmerge(&delta),
            (None, Sign::Sub) => debug_assert!(false, "views: removing an event never added"),
        }
        if let Some(slot) = &mut block.minutes[minute] {
            slot.hist.add(latency_key, sign, MINUTE_RUNS_MAX);
            if let Some(k) = ttft_key {
                slot.hist.add(k, sign, MINUTE_RUNS_MAX);
            }
            if sign == Sign::Sub && slot.agg.is_zero() && slot.hist.is_empty() {
                block.minutes[minute] = None;
            }
        }

        // Quarter slot: dense while its hour is hot, compacted when the hour freezes.
        let hour_frozen = block.hours[hour].as_ref().is_some_and(|s| s.frozen);
        match (&mut block.quarters[quarter], sign) {
            (Some(slot), Sign::Add) => slot.agg.merge(&delta),
            (empty @ None, Sign::Add) => {
                *empty = Some(Box::new(QuarterSlot {
                    agg: delta,
                    hist: if hour_frozen { SlotHist::default() } else { SlotHist::dense() },
                }));
            }
            (Some(slot), Sign::Sub) => slot.agg.unmerge(&delta),
            (None, Sign::Sub) => debug_assert!(false, "views: removing an event never added"),
        }
        if let Some(slot) = &mut block.quarters[quarter] {
            slot.hist.add(latency_key, sign, QUARTER_RUNS_MAX);
            if let Some(k) = ttft_key {
                slot.hist.add(k, sign, QUARTER_RUNS_MAX);
            }
            if sign == Sign::Sub && slot.agg.is_zero() && slot.hist.is_empty() {
                block.quarters[quarter] = None;
            }
        }

        // Hour slot.
        block.last_touch = now;
        if let Some(slot) = &mut block.hours[hour] {
            slot.last_touch = now;
            if slot.frozen && sign == Sign::Sub && slot.groups.iter().any(|g| g.len() > SORTED_REMOVE_MAX) {
                // Many removals are coming (retention drops whole segments): thaw rather than
                // shift the sorted cells once per removal.
                thaw_hour(slot, &mut self.frozen_totals);
                turned_hot.push(HotPeriod::Hour(hour_index));
            }
            // The keys by reference: zipping the array by value copies it through the stack in
            // a way that stalls store forwarding, a measurable share of an append.
            for (cells, group_key) in slot.groups.iter_mut().zip(&group_keys) {
                cells.apply(*group_key, &delta, sign);
            }
            if slot.frozen {
                for (totals, group_key) in self.frozen_totals.iter_mut().zip(&group_keys) {
                    totals.apply(*group_key, &delta, sign);
                }
            }
            match sign {
                Sign::Add => slot.calls = slot.calls.wrapping_add(1),
                Sign::Sub => {
                    slot.calls = slot.calls.saturating_sub(1);
                    if slot.calls == 0 {
                        block.hours[hour] = None;
                        self.key_totals.drop_hour(day, hour);
                    }
                }
            }
        }

        match sign {
            Sign::Add => block.calls = block.calls.wrapping_add(1),
            Sign::Sub => {
                debug_assert!(block.calls > 0, "views: removing an event never added");
                block.calls = block.calls.saturating_sub(1);
            }
        }
        if block.calls == 0 {
            self.days.remove(pos);
            self.cursor = pos.saturating_sub(1);
        }

        for period in turned_hot.0.into_iter().flatten() {
            self.mark_hot(period);
        }
    }

    /// Adds inline Key cells that `KeyTotals` moves out to their day's map.
    fn apply_day_move(&mut self, to_day: Option<DayMove>, turned_hot: &mut TurnedHot) {
        if let Some(m) = to_day {
            match self.day_position(m.day) {
                Some(pos) => {
                    if self.days[pos].apply_key(m.key, &m.cell, Sign::Add) {
                        turned_hot.push(HotPeriod::Day(m.day));
                    }
                }
                None => debug_assert!(false, "views: inline key cells of a day that is gone"),
            }
        }
    }

    fn day_position(&self, day: i64) -> Option<usize> {
        if self.days.get(self.cursor).is_some_and(|b| b.day == day) {
            return Some(self.cursor);
        }
        self.days.binary_search_by_key(&day, |b| b.day).ok()
    }

    /// The position of `day`, inserting an empty block if needed; true when inserted.
    fn day_position_or_insert(&mut self, day: i64) -> (usize, bool) {
        if self.days.get(self.cursor).is_some_and(|b| b.day == day) {
            return (self.cursor, false);
        }
        let (pos, created) = match self.days.binary_search_by_key(&day, |b| b.day) {
            Ok(pos) => (pos, false),
            Err(pos) => {
                self.days.insert(pos, DayBlock::new(day));
                (pos, true)
            }
        };
        self.cursor = pos;
        (pos, created)
    }

    fn mark_hot(&mut self, period: HotPeriod) {
        if !self.hot.contains(&period) {
            self.hot.push(period);
        }
        if self.hot.len() > HOT_PERIODS_MAX {
            self.freeze_idle();
        }
    }

    /// Makes `minute_index` the most recent dense minute, compacting the one that drops out.
    /// A minute older than all dense ones is left alone: late events then cost a search in the
    /// runs, not a compaction and a densification.
    fn touch_dense_minute(&mut self, minute_index: i64) {
        let position = self.dense_minutes.iter().position(|m| *m == minute_index);
        if position.is_none() && self.dense_minutes.iter().all(|m| *m > minute_index) {
            return;
        }
        let at = position.unwrap_or(DENSE_MINUTES - 1);
        let evicted = self.dense_minutes[at];
        self.dense_minutes.copy_within(0..at, 1);
        self.dense_minutes[0] = minute_index;
        if evicted != minute_index
            && let Some(slot) = self.minute_slot_mut(evicted)
        {
            slot.hist.compact(MINUTE_RUNS_MAX);
        }
        if let Some(slot) = self.minute_slot_mut(minute_index) {
            slot.hist.make_dense();
        }
    }

    fn minute_slot_mut(&mut self, minute_index: i64) -> Option<&mut MinuteSlot> {
        let pos = self.day_position(minute_index.div_euclid(MINUTES_PER_DAY as i64))?;
        let minute = minute_index.rem_euclid(MINUTES_PER_DAY as i64) as usize;
        self.days[pos].minutes[minute].as_deref_mut()
    }

    /// Freezes the hot periods nothing was applied to in the last `IDLE_APPLIES` calls.
    fn freeze_idle(&mut self) {
        let idle_since = self.applies.saturating_sub(IDLE_APPLIES);
        let hot = std::mem::take(&mut self.hot);
        for period in hot {
            let day = match period {
                HotPeriod::Hour(hour_index) => hour_index.div_euclid(HOURS_PER_DAY as i64),
                HotPeriod::Day(day) => day,
            };
            let Some(pos) = self.day_position(day) else { continue };
            let block = &mut self.days[pos];
            match period {
                HotPeriod::Hour(hour_index) => {
                    let hour = hour_index.rem_euclid(HOURS_PER_DAY as i64) as usize;
                    let Some(slot) = &mut block.hours[hour] else { continue };
                    if slot.last_touch > idle_since {
                        self.hot.push(period);
                        continue;
                    }
                    freeze_hour(slot, &mut self.frozen_totals);
                    if slot.keys.is_hot() {
                        let (cells, to_day) = self.key_totals.take_hour(day, hour);
                        slot.keys.freeze(cells, HEAVY_KEYS);
                        for m in to_day {
                            if block.apply_key(m.key, &m.cell, Sign::Add) && !self.hot.contains(&HotPeriod::Day(day)) {
                                self.hot.push(HotPeriod::Day(day));
                            }
                        }
                    }
                    let quarters = hour * QUARTERS_PER_HOUR..(hour + 1) * QUARTERS_PER_HOUR;
                    for slot in block.quarters[quarters.clone()].iter_mut().flatten() {
                        slot.hist.compact(QUARTER_RUNS_MAX);
                    }
                    let total = hour_total(&block.quarters[quarters]);
                    if let Some(slot) = &mut block.hours[hour] {
                        slot.total = Some(total);
                    }
                    for slot in block.minutes[hour * 60..(hour + 1) * 60].iter_mut().flatten() {
                        slot.hist.shrink_to_fit();
                    }
                }
                HotPeriod::Day(day) => {
                    if block.last_touch > idle_since {
                        self.hot.push(period);
                        continue;
                    }
                    for m in self.key_totals.take_inline_day(day) {
                        block.keys.apply(m.key, &m.cell, Sign::Add);
                    }
                    if let KeyMap::Hot(map) = &*block.keys {
                        block.heavy = Some(HeavyKeys::select(map.iter().map(|(k, c)| (*k, *c)).collect(), HEAVY_KEYS));
                    }
                    block.keys.freeze();
                    block.compute_total();
                }
            }
        }
    }

    fn hour_slot(&self, hour_index: i64) -> Option<&HourSlot> {
        let pos = self.day_position(hour_index.div_euclid(HOURS_PER_DAY as i64))?;
        self.days[pos].hours[hour_index.rem_euclid(HOURS_PER_DAY as i64) as usize].as_deref()
    }

    /// The slot of a minute index (UTC minutes since the epoch), if it holds events.
    fn minute_slot(&self, minute_index: i64) -> Option<&MinuteSlot> {
        let pos = self.day_position(minute_index.div_euclid(MINUTES_PER_DAY as i64))?;
        self.days[pos].minutes[minute_index.rem_euclid(MINUTES_PER_DAY as i64) as usize].as_deref()
    }

    /// Adds the cells of minute indices `[m_from, m_to)`.
    fn add_minute_range(&self, m_from: i64, m_to: i64, agg: &mut AggCell, hist: &mut [u64; KEYS]) {
        if m_from >= m_to {
            return;
        }
        let per_day = MINUTES_PER_DAY as i64;
        let (day_from, day_last) = (m_from.div_euclid(per_day), (m_to - 1).div_euclid(per_day));
        let start = self.days.partition_point(|b| b.day < day_from);
        for block in self.days[start..].iter().take_while(|b| b.day <= day_last) {
            let base = block.day * per_day;
            let a = (m_from - base).max(0) as usize;
            let b = (m_to - base).min(per_day) as usize;
            block.add_minutes(a, b, agg, hist);
        }
    }

    /// The first and last occupied minute index within `[m_from, m_to)`.
    fn occupied_span(&self, m_from: i64, m_to: i64) -> Option<(i64, i64)> {
        if m_from >= m_to {
            return None;
        }
        let per_day = MINUTES_PER_DAY as i64;
        let (day_from, day_last) = (m_from.div_euclid(per_day), (m_to - 1).div_euclid(per_day));
        let start = self.days.partition_point(|b| b.day < day_from);
        let end = self.days.partition_point(|b| b.day <= day_last);
        let blocks = &self.days[start..end];
        let bounds = |b: &DayBlock| {
            let base = b.day * per_day;
            ((m_from - base).max(0) as usize, (m_to - base).min(per_day) as usize, base)
        };
        let first = blocks.iter().find_map(|b| {
            let (lo, hi, base) = bounds(b);
            b.minutes[lo..hi].iter().position(Option::is_some).map(|i| base + (lo + i) as i64)
        })?;
        let last = blocks.iter().rev().find_map(|b| {
            let (lo, hi, base) = bounds(b);
            b.minutes[lo..hi].iter().rposition(Option::is_some).map(|i| base + (lo + i) as i64)
        })?;
        Some((first, last))
    }

    /// `range` shrunk to the minutes holding events; `None` when it holds none.
    fn narrow_to_occupied(&self, range: TimeRange) -> Option<TimeRange> {
        if range.is_empty() {
            return None;
        }
        let (first, last) =
            self.occupied_span(floor_div(range.from_ms, MINUTE_MS), ceil_div(range.to_ms, MINUTE_MS))?;
        let narrowed = TimeRange {
            from_ms: range.from_ms.max(first.saturating_mul(MINUTE_MS)),
            to_ms: range.to_ms.min((last + 1).saturating_mul(MINUTE_MS)),
        };
        (!narrowed.is_empty()).then_some(narrowed)
    }

    /// The totals of the UTC hour `[m_lo, m_hi)` (minute indices) if it is exactly one frozen hour.
    fn whole_frozen_hour(&self, m_lo: i64, m_hi: i64) -> Option<&HourTotal> {
        if m_hi - m_lo != 60 || m_lo.rem_euclid(60) != 0 {
            return None;
        }
        self.hour_slot(m_lo.div_euclid(60))?.total.as_deref()
    }

    /// Sums of the consecutive ranges `[cuts[i], cuts[i + 1])`, exact for any cuts.
    fn accumulate(&self, cuts: &[i64], scan: &mut dyn EdgeScan) -> Vec<Summary> {
        let buckets = cuts.len().saturating_sub(1);
        let mut out = Vec::with_capacity(buckets);
        let mut dense = DenseKeys::new();
        for w in cuts.windows(2) {
            let (m_lo, m_hi) = (ceil_div(w[0], MINUTE_MS), floor_div(w[1], MINUTE_MS));
            let mut summary = Summary::default();
            if let Some(total) = self.whole_frozen_hour(m_lo, m_hi) {
                // The usual bucket of an hourly trend: a copy of the hour's totals.
                if total.agg.calls() > 0 {
                    summary.agg = total.agg.to_agg();
                    summary.latency = total.latency.clone();
                    summary.ttft = total.ttft.clone();
                }
            } else if m_lo < m_hi {
                let mut agg = AggCell::default();
                self.add_minute_range(m_lo, m_hi, &mut agg, &mut dense.0);
                let (latency, ttft) = dense.take();
                if agg.calls() > 0 {
                    summary.agg = agg.to_agg();
                    summary.latency = latency;
                    summary.ttft = ttft;
                }
            }
            out.push(summary);
        }
        if buckets == 0 {
            return out;
        }

        // Minutes cut by a boundary that is not minute-aligned come from the scan; cuts are
        // increasing, so these minutes are too (after dedup).
        let mut partial: Vec<i64> =
            cuts.iter().filter(|c| c.rem_euclid(MINUTE_MS) != 0).map(|c| c.div_euclid(MINUTE_MS)).collect();
        partial.dedup();
        partial.retain(|m| self.minute_slot(*m).is_some());
        let (from, to) = (cuts[0], cuts[buckets]);
        let mut i = 0;
        while i < partial.len() {
            let first = partial[i];
            let mut last = first;
            while partial.get(i + 1) == Some(&(last + 1)) {
                last += 1;
                i += 1;
            }
            i += 1;
            let range = TimeRange {
                from_ms: from.max(first.saturating_mul(MINUTE_MS)),
                to_ms: to.min((last + 1).saturating_mul(MINUTE_MS)),
            };
            if range.is_empty() {
                continue;
            }
            scan.scan(range, &mut |ev: &StoredEvent| {
                if range.contains(ev.ts_ms) {
                    let bucket = cuts.partition_point(|c| *c <= ev.ts_ms) - 1;
                    out[bucket].add_event(ev);
                }
            });
        }
        out
    }

    /// Totals and histograms of the events in `range`.
    pub fn summary(&self, range: TimeRange, scan: &mut dyn EdgeScan) -> Summary {
        if range.is_empty() || self.days.is_empty() {
            return Summary::default();
        }
        self.accumulate(&[range.from_ms, range.to_ms], scan).pop().unwrap_or_default()
    }

    /// Every group key with calls in `range`, sorted by key. For [`Group::Key`] only calls,
    /// errors, tokens and latency sum are kept (see the module doc).
    pub fn breakdown(&self, group: Group, range: TimeRange, scan: &mut dyn EdgeScan) -> Vec<(u32, Agg)> {
        let Some((min_ts, max_ts)) = self.time_bounds() else { return Vec::new() };
        if range.is_empty() {
            return Vec::new();
        }
        let covers_all = range.from_ms <= min_ts && range.to_ms > max_ts;
        match group.hourly_index() {
            Some(g) if covers_all => {
                let mut acc = SortedAcc::new();
                acc.merge_sorted(self.frozen_totals[g].sorted());
                for period in &self.hot {
                    if let HotPeriod::Hour(hour_index) = *period
                        && let Some(slot) = self.hour_slot(hour_index).filter(|s| !s.frozen)
                    {
                        slot.groups[g].merge_into(&mut acc);
                    }
                }
                acc.into_aggs()
            }
            None if covers_all => {
                let mut out = Vec::with_capacity(self.key_totals.len());
                out.extend(self.key_totals.sorted().map(|(k, c)| (k, c.to_agg())).filter(|(_, a)| a.calls > 0));
                out
            }
            Some(g) => self.breakdown_from_cells(
                range,
                HOUR_MS,
                scan,
                |views, units, acc| {
                    let per_day = HOURS_PER_DAY as i64;
                    let start = views.days.partition_point(|b| b.day < units.0.div_euclid(per_day));
                    for block in views.days[start..].iter().take_while(|b| b.day <= (units.1 - 1).div_euclid(per_day)) {
                        let base = block.day * per_day;
                        let a = (units.0 - base).max(0) as usize;
                        let b = (units.1 - base).min(per_day) as usize;
                        for slot in block.hours[a..b].iter().flatten() {
                            slot.groups[g].merge_into(acc);
                        }
                    }
                },
                |ev| (group.key_of(ev), AggCell::of_event(ev)),
            ),
            None => self.breakdown_from_cells(
                range,
                DAY_MS,
                scan,
                |views, units, acc| {
                    let start = views.days.partition_point(|b| b.day < units.0);
                    for block in views.days[start..].iter().take_while(|b| b.day < units.1) {
                        block.keys.merge_into(acc);
                    }
                    let mut inline: FxHashMap<u32, KeyCell> = FxHashMap::default();
                    for (day, key, cell) in views.key_totals.inline() {
                        if (units.0..units.1).contains(&day) {
                            inline.entry(key).or_default().merge(&cell);
                        }
                    }
                    acc.merge_map(inline);
                },
                |ev| (group.key_of(ev), KeyCell::from_agg_cell(&AggCell::of_event(ev))),
            ),
        }
    }

    /// The `n` groups with the most tokens (`by_tokens`) or calls in `range`, heaviest first
    /// (ties go to the other measure, then to the smaller key), and the sum of all the others:
    /// what selecting from [`Views::breakdown`] gives (for Key, likewise only calls, errors,
    /// tokens and latency sum), but for Key without building every key's [`Agg`], and over
    /// ranges with partial days mostly without the scan (see the module doc).
    pub fn top_n(
        &self,
        group: Group,
        range: TimeRange,
        n: usize,
        by_tokens: bool,
        scan: &mut dyn EdgeScan,
    ) -> (Vec<(u32, Agg)>, Agg) {
        let Some((min_ts, max_ts)) = self.time_bounds() else { return (Vec::new(), Agg::default()) };
        if range.is_empty() {
            return (Vec::new(), Agg::default());
        }
        if group != Group::Key {
            return select_top(self.breakdown(group, range, scan), n, by_tokens);
        }
        if range.from_ms <= min_ts && range.to_ms > max_ts {
            let mut total = KeyCell::default();
            let mut ranked: Vec<(Rank, u32)> = Vec::with_capacity(self.key_totals.len());
            for (key, cell) in self.key_totals.sorted() {
                if cell_calls(&cell) > 0 {
                    total.merge(&cell);
                    ranked.push((Rank::of(&cell, by_tokens), key));
                }
            }
            let top =
                top_of(&mut ranked, n).iter().map(|(_, key)| (*key, self.key_totals.cell_of(*key).unwrap_or_default()));
            return finish_top(top.collect(), total);
        }
        match self.top_keys_from_heavy(range, n, by_tokens, scan) {
            Some(found) => found,
            None => select_top(self.breakdown(group, range, scan), n, by_tokens),
        }
    }

    /// The Key top-N of `range` from the heavy keys of the frozen hours and days it covers,
    /// every key of the hot ones, and the scan of the partial hours at its ends; `None` when
    /// those cannot prove the answer (see `HEAVY_KEYS`).
    fn top_keys_from_heavy(
        &self,
        range: TimeRange,
        n: usize,
        by_tokens: bool,
        scan: &mut dyn EdgeScan,
    ) -> Option<(Vec<(u32, Agg)>, Agg)> {
        /// Some periods' Key cells: all of them when `rest` is (0, 0), else those of the keys
        /// listed, no other key having more than `rest` (tokens, calls).
        struct Block<'a> {
            cells: std::borrow::Cow<'a, [(u32, KeyCell)]>,
            rest: (u64, u64),
        }
        enum Period {
            Day(usize),
            Hour(usize, usize),
        }
        let per_day = HOURS_PER_DAY as i64;
        let (h_lo, h_hi) = (ceil_div(range.from_ms, HOUR_MS), floor_div(range.to_ms, HOUR_MS));
        let mut periods = Vec::new();
        let hours = |views: &Views, from: i64, to: i64, periods: &mut Vec<Period>| {
            let start = views.days.partition_point(|b| b.day < from.div_euclid(per_day));
            for (pos, block) in views.days.iter().enumerate().skip(start).take_while(|(_, b)| b.day * per_day < to) {
                let (a, b) =
                    ((from - block.day * per_day).max(0) as usize, (to - block.day * per_day).min(per_day) as usize);
                periods.extend((a..b).filter(|h| block.hours[*h].is_some()).map(|h| Period::Hour(pos, h)));
            }
        };
        let edges = if h_lo < h_hi {
            let (d_lo, d_hi) = (ceil_div(h_lo, per_day), floor_div(h_hi, per_day));
            if d_lo < d_hi {
                hours(self, h_lo, d_lo * per_day, &mut periods);
                let start = self.days.partition_point(|b| b.day < d_lo);
                periods.extend((start..self.days.len()).take_while(|p| self.days[*p].day < d_hi).map(Period::Day));
                hours(self, d_hi * per_day, h_hi, &mut periods);
            } else {
                hours(self, h_lo, h_hi, &mut periods);
            }
            [
                TimeRange::new(range.from_ms, h_lo.saturating_mul(HOUR_MS)),
                TimeRange::new(h_hi.saturating_mul(HOUR_MS), range.to_ms),
            ]
        } else {
            [range, TimeRange::new(0, 0)]
        };

        // Hot periods have every key: their cells plus the inline ones.
        let is_hot = |p: &Period| match *p {
            Period::Day(pos) => self.days[pos].heavy.is_none(),
            Period::Hour(pos, h) => self.days[pos].hours[h].as_ref().is_some_and(|s| s.keys.is_hot()),
        };
        let mut inline_days: FxHashMap<i64, Vec<(u32, KeyCell)>> = FxHashMap::default();
        let mut inline_hours: FxHashMap<(i64, usize), Vec<(u32, KeyCell)>> = FxHashMap::default();
        if periods.iter().any(is_hot) {
            for (day, key, cell) in self.key_totals.inline() {
                inline_days.entry(day).or_default().push((key, cell));
            }
            for (day, hour, key, cell) in self.key_totals.hot_hour_cells() {
                inline_hours.entry((day, hour)).or_default().push((key, cell));
            }
        }
        let complete = |cells: &mut dyn Iterator<Item = (u32, KeyCell)>| {
            let mut map: FxHashMap<u32, KeyCell> = FxHashMap::default();
            for (key, cell) in cells {
                map.entry(key).or_default().merge(&cell);
            }
            Block { cells: std::borrow::Cow::Owned(map.into_iter().collect()), rest: (0, 0) }
        };
        let mut total = KeyCell::default();
        let mut blocks = Vec::with_capacity(periods.len() + 1);
        for period in &periods {
            let block = match *period {
                Period::Day(pos) => {
                    let day = &self.days[pos];
                    total.merge(&KeyCell::from_agg_cell(&day.hours_agg(0, HOURS_PER_DAY)));
                    match &day.heavy {
                        Some(heavy) => Block { cells: std::borrow::Cow::Owned(heavy.cells()), rest: heavy.rest() },
                        None => {
                            let inline = inline_days.get(&day.day).map_or(&[][..], |v| &v[..]);
                            complete(&mut day.keys.sorted().into_iter().chain(inline.iter().copied()))
                        }
                    }
                }
                Period::Hour(pos, h) => {
                    let day = &self.days[pos];
                    total.merge(&KeyCell::from_agg_cell(&day.hours_agg(h, h + 1)));
                    match day.hours[h].as_ref().map(|s| &s.keys) {
                        Some(HourKeys::Frozen(heavy)) => {
                            Block { cells: std::borrow::Cow::Owned(heavy.cells()), rest: heavy.rest() }
                        }
                        Some(keys @ HourKeys::Hot { .. }) => {
                            let inline = inline_hours.get(&(day.day, h)).map_or(&[][..], |v| &v[..]);
                            complete(&mut keys.hot_cells(inline.iter().copied()).unwrap_or_default().into_iter())
                        }
                        None => continue,
                    }
                }
            };
            blocks.push(block);
        }
        let mut edge_cells: FxHashMap<u32, KeyCell> = FxHashMap::default();
        for edge in edges.into_iter().filter_map(|e| self.narrow_to_occupied(e)) {
            scan.scan(edge, &mut |ev: &StoredEvent| {
                if edge.contains(ev.ts_ms) {
                    let cell = KeyCell::from_agg_cell(&AggCell::of_event(ev));
                    total.merge(&cell);
                    edge_cells.entry(Group::Key.key_of(ev)).or_default().merge(&cell);
                }
            });
        }
        blocks.push(Block { cells: std::borrow::Cow::Owned(edge_cells.into_iter().collect()), rest: (0, 0) });

        // Every key listed somewhere, with its listed cells and the rest bounds of the blocks
        // that list it; u128 sums cannot overflow.
        let mut listed: FxHashMap<u32, (KeyCell, u128, u128)> = FxHashMap::default();
        let (mut rest_tokens, mut rest_calls) = (0u128, 0u128);
        for block in &blocks {
            let (tokens, calls) = (u128::from(block.rest.0), u128::from(block.rest.1));
            rest_tokens += tokens;
            rest_calls += calls;
            for (key, cell) in block.cells.iter() {
                let entry = listed.entry(*key).or_default();
                entry.0.merge(cell);
                entry.1 += tokens;
                entry.2 += calls;
            }
        }
        // A key's cells are exact when every block not listing it has no unlisted calls.
        struct Candidate {
            key: u32,
            rank: Rank,
            cell: KeyCell,
            /// Upper bounds of what the blocks not listing the key may add.
            unknown_primary: u128,
            unknown_calls: u128,
        }
        let mut candidates: Vec<Candidate> = listed
            .into_iter()
            .filter(|(_, (cell, _, _))| cell_calls(cell) > 0)
            .map(|(key, (cell, tokens, calls))| {
                let unknown_calls = rest_calls - calls;
                let unknown_primary = if by_tokens { rest_tokens - tokens } else { unknown_calls };
                Candidate { key, rank: Rank::of(&cell, by_tokens), cell, unknown_primary, unknown_calls }
            })
            .collect();
        let order = |a: &Candidate, b: &Candidate| b.rank.cmp(&a.rank).then(a.key.cmp(&b.key));
        if candidates.len() > n && n > 0 {
            candidates.select_nth_unstable_by(n - 1, order);
        }
        let cut = n.min(candidates.len());
        candidates[..cut].sort_unstable_by(order);
        let (top, others) = candidates.split_at(cut);
        if n == 0 {
            return Some(finish_top(Vec::new(), total));
        }
        let Some(last) = top.last().filter(|_| top.len() == n || rest_calls == 0) else {
            // Fewer than n keys listed and some not listed: those may make the top.
            return None;
        };
        let threshold = u128::from(last.rank.0);
        let unlisted_primary = if by_tokens { rest_tokens } else { rest_calls };
        let proven = top.iter().all(|c| c.unknown_calls == 0)
            && others.iter().all(|c| c.unknown_calls == 0 || u128::from(c.rank.0) + c.unknown_primary < threshold)
            && (rest_calls == 0 || unlisted_primary < threshold);
        proven.then(|| finish_top(top.iter().map(|c| (c.key, c.cell)).collect(), total))
    }

    /// A breakdown from the cells of the whole `unit_ms` periods inside `range` plus a scan of
    /// the partial periods at its ends.
    fn breakdown_from_cells<C: Cell>(
        &self,
        range: TimeRange,
        unit_ms: i64,
        scan: &mut dyn EdgeScan,
        add_cells: impl Fn(&Views, (i64, i64), &mut SortedAcc<C>),
        cell_of: impl Fn(&StoredEvent) -> (u32, C),
    ) -> Vec<(u32, Agg)> {
        let mut acc = SortedAcc::new();
        let (unit_lo, unit_hi) = (ceil_div(range.from_ms, unit_ms), floor_div(range.to_ms, unit_ms));
        let edges = if unit_lo < unit_hi {
            add_cells(self, (unit_lo, unit_hi), &mut acc);
            [
                TimeRange::new(range.from_ms, unit_lo.saturating_mul(unit_ms)),
                TimeRange::new(unit_hi.saturating_mul(unit_ms), range.to_ms),
            ]
        } else {
            [range, TimeRange::new(0, 0)]
        };
        let mut edge_cells: HotCells<C> = HotCells::default();
        for edge in edges.into_iter().filter_map(|e| self.narrow_to_occupied(e)) {
            scan.scan(edge, &mut |ev: &StoredEvent| {
                if edge.contains(ev.ts_ms) {
                    let (key, cell) = cell_of(ev);
                    edge_cells.apply(key, &cell, Sign::Add);
                }
            });
        }
        acc.merge_sorted(edge_cells.sorted().iter().map(|(k, c)| (*k, c)));
        acc.into_aggs()
    }

    /// One bucket per local `granularity` unit of `tz` overlapping `range`; the first and last
    /// are clipped to `range`. Empty buckets are included.
    pub fn trend(
        &self,
        range: TimeRange,
        granularity: Granularity,
        tz: chrono_tz::Tz,
        scan: &mut dyn EdgeScan,
    ) -> Result<Vec<TrendBucket>, ViewError> {
        if range.is_empty() {
            return Err(ViewError::EmptyRange);
        }
        let from = range.from_ms.clamp(-calendar::LIMIT_MS, calendar::LIMIT_MS);
        let to = range.to_ms.clamp(-calendar::LIMIT_MS, calendar::LIMIT_MS);
        if from >= to {
            return Ok(Vec::new());
        }
        let cuts = calendar::cuts(from, to, granularity, tz, MAX_TREND_BUCKETS as usize).map_err(|()| {
            let estimate = (to as i128 - from as i128) / calendar::nominal_ms(granularity) as i128 + 1;
            ViewError::TooManyBuckets {
                requested: u64::try_from(estimate).unwrap_or(u64::MAX).max(MAX_TREND_BUCKETS + 1),
                max: MAX_TREND_BUCKETS,
            }
        })?;
        let sums = self.accumulate(&cuts, scan);
        Ok(cuts
            .windows(2)
            .zip(sums)
            .map(|(w, s)| TrendBucket { start_ms: w[0], end_ms: w[1], agg: s.agg, latency: s.latency, ttft: s.ttft })
            .collect())
    }

    /// The smallest and largest ts_ms of the events held (see the module doc for the caveat
    /// after removals).
    pub fn time_bounds(&self) -> Option<(i64, i64)> {
        let first = self.days.first()?;
        let last = self.days.last()?;
        let min = first.minutes.iter().enumerate().find_map(|(m, s)| {
            let s = s.as_ref()?;
            Some(ts_of(first.day, m as i64 * MINUTE_MS + i64::from(s.first_offset_ms)))
        })?;
        let max = last.minutes.iter().enumerate().rev().find_map(|(m, s)| {
            let s = s.as_ref()?;
            Some(ts_of(last.day, m as i64 * MINUTE_MS + i64::from(s.last_offset_ms)))
        })?;
        Some((min, max))
    }

    /// Every day's Key cells, inline ones included.
    fn day_keys(&self) -> FxHashMap<(i64, u32), KeyCell> {
        let mut all: FxHashMap<(i64, u32), KeyCell> = FxHashMap::default();
        for block in &self.days {
            for (key, cell) in block.keys.sorted() {
                all.entry((block.day, key)).or_default().merge(&cell);
            }
        }
        for (day, key, cell) in self.key_totals.inline() {
            all.entry((day, key)).or_default().merge(&cell);
        }
        all.retain(|_, c| !c.is_zero());
        all
    }

    /// Events held.
    pub fn event_count(&self) -> u64 {
        self.days.iter().map(|d| d.calls).sum()
    }

    /// Approximate heap use in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.days.capacity() * size_of::<DayBlock>()
            + self.days.iter().map(DayBlock::heap_bytes).sum::<usize>()
            + self.frozen_totals.iter().map(OrderedMap::heap_bytes).sum::<usize>()
            + self.key_totals.heap_bytes()
            + self.hot.capacity() * size_of::<HotPeriod>()
    }
}

/// What a top-N ranks by: (tokens, calls) or (calls, tokens), larger first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank(u64, u64);

impl Rank {
    fn of(cell: &KeyCell, by_tokens: bool) -> Rank {
        let (tokens, calls) = (cells::cell_tokens(cell), cell_calls(cell));
        if by_tokens { Rank(tokens, calls) } else { Rank(calls, tokens) }
    }

    fn of_agg(agg: &Agg, by_tokens: bool) -> Rank {
        if by_tokens { Rank(agg.total_tokens(), agg.calls) } else { Rank(agg.calls, agg.total_tokens()) }
    }
}

/// Moves the `n` best of `ranked` (larger rank first, then smaller key) to its front, in
/// order, and returns them.
fn top_of<T: Ord + Copy>(ranked: &mut [(Rank, T)], n: usize) -> &[(Rank, T)] {
    let order = |a: &(Rank, T), b: &(Rank, T)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
    if ranked.len() > n && n > 0 {
        ranked.select_nth_unstable_by(n - 1, order);
    }
    let cut = n.min(ranked.len());
    ranked[..cut].sort_unstable_by(order);
    &ranked[..cut]
}

/// The top-N of a breakdown and the sum of the rest.
fn select_top(mut all: Vec<(u32, Agg)>, n: usize, by_tokens: bool) -> (Vec<(u32, Agg)>, Agg) {
    let order = |(ka, a): &(u32, Agg), (kb, b): &(u32, Agg)| {
        Rank::of_agg(b, by_tokens).cmp(&Rank::of_agg(a, by_tokens)).then(ka.cmp(kb))
    };
    let mut other = Agg::default();
    if all.len() > n {
        if n > 0 {
            all.select_nth_unstable_by(n - 1, order);
        }
        for (_, agg) in all.drain(n..) {
            other.merge(&agg);
        }
    }
    all.sort_unstable_by(order);
    (all, other)
}

/// The top-N Key cells as [`Agg`]s, and `total` less them as the rest.
fn finish_top(top: Vec<(u32, KeyCell)>, mut total: KeyCell) -> (Vec<(u32, Agg)>, Agg) {
    for (_, cell) in &top {
        total.unmerge(cell);
    }
    (top.into_iter().map(|(k, c)| (k, c.to_agg())).collect(), total.to_agg())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
    use chrono_tz::Tz;
    use proptest::prelude::*;

    use super::*;
    use crate::event::{Quality, Sym, Tokens};

    const MIN: i64 = MINUTE_MS;
    const HOUR: i64 = HOUR_MS;
    const DAY: i64 = DAY_MS;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, s).unwrap().and_utc().timestamp_millis()
    }

    fn tz(name: &str) -> Tz {
        name.parse().unwrap()
    }

    #[derive(Clone, Debug)]
    struct Spec {
        ts_ms: i64,
        model: u32,
        endpoint: u32,
        provider: u32,
        credential: u32,
        key: u32,
        status: u16,
        success: bool,
        stream: bool,
        quality: u8,
        tokens: [u64; 6],
        latency_ms: u32,
        ttft_ms: Option<u32>,
    }

    fn event(seq: u64, s: &Spec) -> StoredEvent {
        let mut dims = [Sym::EMPTY; Dim::COUNT];
        dims[Dim::Model as usize] = Sym(s.model);
        dims[Dim::Endpoint as usize] = Sym(s.endpoint);
        dims[Dim::Provider as usize] = Sym(s.provider);
        dims[Dim::Credential as usize] = Sym(s.credential);
        dims[Dim::Key as usize] = Sym(s.key);
        StoredEvent {
            seq,
            ts_ms: s.ts_ms,
            dims,
            status: s.status,
            success: s.success,
            stream: s.stream,
            quality: Quality::from_u8(s.quality).unwrap(),
            ts_clamped: false,
            tokens: Tokens::from_array(s.tokens),
            latency_ms: s.latency_ms,
            ttft_ms: s.ttft_ms,
            event_id: None,
            request_id: None,
            error_message: None,
        }
    }

    /// A plain event at `ts_ms`.
    fn simple(seq: u64, ts_ms: i64, key: u32, latency_ms: u32) -> StoredEvent {
        event(
            seq,
            &Spec {
                ts_ms,
                model: 7 + key % 3,
                endpoint: 1,
                provider: 2,
                credential: 40 + key % 5,
                key,
                status: if key.is_multiple_of(4) { 500 } else { 200 },
                success: !key.is_multiple_of(4),
                stream: key.is_multiple_of(2),
                quality: (key % 4) as u8,
                tokens: [key as u64, 2, 3, 4, 5, 6],
                latency_ms,
                ttft_ms: (key.is_multiple_of(2)).then_some(latency_ms / 3),
            },
        )
    }

    /// The test scan: the events of a Vec. It hands out everything within two minutes of the
    /// range too, as a block-based scan would, so the views must filter.
    struct VecScan<'a> {
        events: &'a [StoredEvent],
        ranges: Vec<TimeRange>,
    }

    impl<'a> VecScan<'a> {
        fn new(events: &'a [StoredEvent]) -> VecScan<'a> {
            VecScan { events, ranges: Vec::new() }
        }
    }

    impl EdgeScan for VecScan<'_> {
        fn scan(&mut self, range: TimeRange, f: &mut dyn FnMut(&StoredEvent)) {
            assert!(!range.is_empty(), "scan of an empty range {range:?}");
            self.ranges.push(range);
            let wide = TimeRange::new(range.from_ms.saturating_sub(2 * MIN), range.to_ms.saturating_add(2 * MIN));
            for ev in self.events.iter().filter(|e| wide.contains(e.ts_ms)) {
                f(ev);
            }
        }
    }

    fn naive_summary(events: &[StoredEvent], range: TimeRange) -> Summary {
        let mut s = Summary::default();
        for ev in events.iter().filter(|e| range.contains(e.ts_ms)) {
            s.add_event(ev);
        }
        s
    }

    fn naive_breakdown(events: &[StoredEvent], group: Group, range: TimeRange) -> Vec<(u32, Agg)> {
        let mut out: BTreeMap<u32, Agg> = BTreeMap::new();
        for ev in events.iter().filter(|e| range.contains(e.ts_ms)) {
            let mut a = Agg::of_event(ev);
            if group == Group::Key {
                a = Agg {
                    calls: a.calls,
                    errors: a.errors,
                    tokens: a.tokens,
                    latency_sum_ms: a.latency_sum_ms,
                    ..Agg::default()
                };
            }
            out.entry(group.key_of(ev)).or_default().merge(&a);
        }
        out.into_iter().collect()
    }

    /// The top-N the way a caller would pick it from a breakdown.
    fn naive_top(
        events: &[StoredEvent],
        group: Group,
        range: TimeRange,
        n: usize,
        by_tokens: bool,
    ) -> (Vec<(u32, Agg)>, Agg) {
        let mut all = naive_breakdown(events, group, range);
        let rank = |a: &Agg| if by_tokens { (a.total_tokens(), a.calls) } else { (a.calls, a.total_tokens()) };
        all.sort_by(|(ka, a), (kb, b)| rank(b).cmp(&rank(a)).then(ka.cmp(kb)));
        let mut other = Agg::default();
        for (_, a) in all.iter().skip(n) {
            other.merge(a);
        }
        all.truncate(n);
        (all, other)
    }

    /// The local time of an instant, from the offset chrono reports.
    fn local_at(tz: Tz, ms: i64) -> NaiveDateTime {
        tz.timestamp_millis_opt(ms).unwrap().naive_local()
    }

    /// Resolves a local time by a forward scan rather than chrono's local mapping: the first
    /// instant whose local time reaches it, which is the earliest instant with that local time,
    /// or the end of the gap it falls in. Zone transitions fall on whole seconds.
    fn naive_resolve(tz: Tz, local: NaiveDateTime) -> i64 {
        let target = local.and_utc().timestamp_millis();
        let local_ms = |u: i64| local_at(tz, u).and_utc().timestamp_millis();
        let mut u = target - 17 * HOUR;
        assert!(local_ms(u) < target);
        for step in [HOUR, MIN, 1000] {
            while local_ms(u + step) < target {
                u += step;
            }
        }
        u + 1000
    }

    fn naive_truncate(l: NaiveDateTime, g: Granularity) -> NaiveDateTime {
        let d = l.date();
        match g {
            Granularity::Minute => d.and_hms_opt(l.hour(), l.minute(), 0).unwrap(),
            Granularity::Hour => d.and_hms_opt(l.hour(), 0, 0).unwrap(),
            Granularity::Day => d.and_hms_opt(0, 0, 0).unwrap(),
            Granularity::Week => {
                let mut d = d;
                while d.weekday() != chrono::Weekday::Mon {
                    d = d.pred_opt().unwrap();
                }
                d.and_hms_opt(0, 0, 0).unwrap()
            }
            Granularity::Month => {
                NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap().and_hms_opt(0, 0, 0).unwrap()
            }
        }
    }

    fn naive_next(l: NaiveDateTime, g: Granularity) -> NaiveDateTime {
        match g {
            Granularity::Minute => l + chrono::TimeDelta::minutes(1),
            Granularity::Hour => l + chrono::TimeDelta::hours(1),
            Granularity::Day => l + chrono::TimeDelta::days(1),
            Granularity::Week => l + chrono::TimeDelta::days(7),
            Granularity::Month => {
                let (y, m) = if l.month() == 12 { (l.year() + 1, 1) } else { (l.year(), l.month() + 1) };
                NaiveDate::from_ymd_opt(y, m, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()
            }
        }
    }

    /// Bucket cuts of `[from, to)`; `None` past the bucket limit.
    fn naive_cuts(from: i64, to: i64, g: Granularity, tz: Tz) -> Option<Vec<i64>> {
        let mut cuts = vec![from];
        let mut l = naive_truncate(local_at(tz, from), g);
        loop {
            l = naive_next(l, g);
            let b = naive_resolve(tz, l);
            if b >= to {
                break;
            }
            if b > *cuts.last().unwrap() {
                cuts.push(b);
            }
            if cuts.len() > MAX_TREND_BUCKETS as usize {
                return None;
            }
        }
        cuts.push(to);
        Some(cuts)
    }

    fn naive_trend(events: &[StoredEvent], range: TimeRange, g: Granularity, tz: Tz) -> Option<Vec<TrendBucket>> {
        let cuts = naive_cuts(range.from_ms, range.to_ms, g, tz)?;
        Some(
            cuts.windows(2)
                .map(|w| {
                    let s = naive_summary(events, TimeRange::new(w[0], w[1]));
                    TrendBucket { start_ms: w[0], end_ms: w[1], agg: s.agg, latency: s.latency, ttft: s.ttft }
                })
                .collect(),
        )
    }

    fn build(events: &[StoredEvent]) -> Views {
        let mut v = Views::new();
        for ev in events {
            v.apply(ev, Sign::Add);
        }
        v
    }

    fn check_queries(views: &Views, events: &[StoredEvent], range: TimeRange, g: Granularity, zone: Tz) {
        let mut scan = VecScan::new(events);
        assert_eq!(views.summary(range, &mut scan), naive_summary(events, range), "summary {range:?}");
        for group in Group::ALL {
            assert_eq!(
                views.breakdown(group, range, &mut scan),
                naive_breakdown(events, group, range),
                "breakdown {group:?} {range:?}"
            );
        }
        for (group, n, by_tokens) in [
            (Group::Key, 0, true),
            (Group::Key, 1, true),
            (Group::Key, 2, false),
            (Group::Key, 5, true),
            (Group::Model, 2, true),
        ] {
            assert_eq!(
                views.top_n(group, range, n, by_tokens, &mut scan),
                naive_top(events, group, range, n, by_tokens),
                "top {n} {group:?} by tokens {by_tokens} {range:?}"
            );
            // Whenever the heavy keys claim an answer, it is the right one.
            if group == Group::Key
                && !range.is_empty()
                && let Some(fast) = views.top_keys_from_heavy(range, n, by_tokens, &mut scan)
            {
                assert_eq!(fast, naive_top(events, group, range, n, by_tokens), "heavy top {n} {range:?}");
            }
        }
        if range.is_empty() {
            assert!(matches!(views.trend(range, g, zone, &mut scan), Err(ViewError::EmptyRange)));
            return;
        }
        if range == TimeRange::ALL {
            assert!(matches!(views.trend(range, g, zone, &mut scan), Err(ViewError::TooManyBuckets { .. })));
            return;
        }
        // The naive resolver is slow; keep minute trends short.
        let g = if g == Granularity::Minute && range.to_ms - range.from_ms > 6 * HOUR { Granularity::Hour } else { g };
        match (views.trend(range, g, zone, &mut scan), naive_trend(events, range, g, zone)) {
            (Ok(got), Some(want)) => {
                assert_eq!(got.len(), want.len(), "trend bucket count {range:?} {g:?} {zone}");
                for (a, b) in got.iter().zip(&want) {
                    assert_eq!(a, b, "trend {range:?} {g:?} {zone}");
                }
            }
            (Err(ViewError::TooManyBuckets { requested, max }), None) => {
                assert_eq!(max, MAX_TREND_BUCKETS);
                assert!(requested > max);
            }
            (got, want) => panic!(
                "trend {range:?} {g:?} {zone}: got {:?} buckets, want {:?}",
                got.map(|v| v.len()),
                want.map(|v| v.len())
            ),
        }
    }

    const ZONES: [&str; 9] = [
        "UTC",
        "Asia/Shanghai",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Eucla",
        "America/New_York",
        "Europe/London",
        "Africa/Monrovia",
        "Australia/Lord_Howe",
    ];

    /// Starts of the event windows: DST changes (New York, London, Lord Howe), Kathmandu's
    /// 1986 move from +05:30 to +05:45 at local midnight, Monrovia's -00:44:30 (until 1972),
    /// a leap day, and a plain week.
    const BASES: [(i32, u32, u32); 7] =
        [(2024, 3, 9), (2024, 10, 26), (2024, 11, 2), (1985, 12, 30), (1971, 12, 30), (2024, 2, 27), (2024, 4, 6)];

    fn spec_strategy(base: i64) -> impl Strategy<Value = Spec> {
        let ts = prop_oneof![
            (0..3 * DAY),
            (0..3 * 24 * 60i64, -2..3i64).prop_map(|(m, d)| m * MIN + d),
            (0..3 * 24 * 4i64, -1..2i64).prop_map(|(q, d)| q * 15 * MIN + d),
        ];
        (
            ts,
            (0..5u32, 0..3u32, 0..3u32, 0..70u32, 0..9u32),
            prop::sample::select(vec![0u16, 99, 100, 200, 204, 301, 404, 429, 500, 503, 600]),
            (any::<bool>(), any::<bool>(), 0..4u8),
            prop::array::uniform6(0..1_000_000_000u64),
            prop_oneof![0..20u32, 0..5000u32, 0..200_000u32, Just(u32::MAX)],
            prop::option::of(0..100_000u32),
        )
            .prop_map(
                move |(t, (m, e, p, c, k), status, (success, stream, quality), tokens, latency_ms, ttft_ms)| Spec {
                    ts_ms: base + t,
                    model: m * 1_000_003,
                    endpoint: e,
                    provider: 100 + p,
                    // Up to 70 credentials: more than a frozen hour removes from in place.
                    credential: c,
                    key: k * 7919,
                    status,
                    success,
                    stream,
                    quality,
                    tokens,
                    latency_ms,
                    ttft_ms,
                },
            )
    }

    #[derive(Clone, Debug)]
    struct Case {
        events: Vec<Spec>,
        /// Per step: add the next event (true) or remove a random present one (false, index).
        removals: Vec<(bool, prop::sample::Index)>,
        ranges: Vec<(i64, i64, u8)>,
        zone: usize,
        granularity: u8,
        rebuild_seed: u64,
    }

    fn case_strategy() -> impl Strategy<Value = Case> {
        (0..BASES.len()).prop_flat_map(|b| {
            let (y, m, d) = BASES[b];
            let base = utc(y, m, d, 0, 0, 0);
            let edge = prop_oneof![
                (-DAY..4 * DAY),
                (-24 * 60..4 * 24 * 60i64).prop_map(|m| m * MIN),
                (-24..4 * 24i64).prop_map(|h| h * HOUR),
            ];
            (
                prop::collection::vec(spec_strategy(base), 0..120),
                prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 0..60),
                prop::collection::vec((edge.clone(), edge, 0..10u8), 1..5),
                0..ZONES.len(),
                0..5u8,
                any::<u64>(),
                // Event order: 0 as generated, 1 by ts, 2 by ts with every seventh event late.
                0..3u8,
            )
                .prop_map(move |(mut events, removals, edges, zone, granularity, rebuild_seed, order)| {
                    if order > 0 {
                        events.sort_by_key(|e| e.ts_ms);
                    }
                    if order == 2 {
                        // Every seventh event arrives after the next six.
                        for chunk in events.chunks_mut(7) {
                            chunk.rotate_left(1);
                        }
                    }
                    Case {
                        events,
                        removals,
                        ranges: edges.into_iter().map(|(a, b, k)| (base + a, base + b, k)).collect(),
                        zone,
                        granularity,
                        rebuild_seed,
                    }
                })
        })
    }

    fn granularity_of(i: u8) -> Granularity {
        [Granularity::Minute, Granularity::Hour, Granularity::Day, Granularity::Week, Granularity::Month]
            [i as usize % 5]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn views_match_a_naive_model(case in case_strategy()) {
            use rand::{SeedableRng, seq::SliceRandom};
            let all: Vec<StoredEvent> = case.events.iter().enumerate().map(|(i, s)| event(i as u64, s)).collect();
            let mut views = Views::new();
            let mut present: Vec<StoredEvent> = Vec::new();
            let mut next = 0;
            let mut removals = case.removals.iter();
            while next < all.len() {
                views.apply(&all[next], Sign::Add);
                present.push(all[next].clone());
                next += 1;
                if let Some((true, index)) = removals.next()
                    && !present.is_empty()
                {
                    let gone = present.swap_remove(index.index(present.len()));
                    views.apply(&gone, Sign::Sub);
                }
            }
            prop_assert_eq!(views.event_count(), present.len() as u64);

            let zone = tz(ZONES[case.zone]);
            for &(a, b, kind) in &case.ranges {
                let range = match kind {
                    0 => TimeRange::ALL,
                    1 => TimeRange::new(b, a),
                    _ => TimeRange::new(a.min(b), a.max(b)),
                };
                let g = granularity_of(case.granularity.wrapping_add(kind));
                check_queries(&views, &present, range, g, zone);
            }

            // Time bounds: exact while nothing was removed, else never narrower, within a minute.
            let exact = present.iter().map(|e| e.ts_ms).min().zip(present.iter().map(|e| e.ts_ms).max());
            match (views.time_bounds(), exact) {
                (None, None) => {}
                (Some((lo, hi)), Some((min, max))) => {
                    prop_assert!(lo <= min && min - lo < MIN && hi >= max && hi - max < MIN);
                    if present.len() == all.len() {
                        prop_assert_eq!((lo, hi), (min, max));
                    }
                }
                (got, want) => prop_assert!(false, "time bounds {:?}, want {:?}", got, want),
            }

            // Views rebuilt from the remaining events, in another order, are equal.
            let mut shuffled = present.clone();
            shuffled.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(case.rebuild_seed));
            let rebuilt = build(&shuffled);
            prop_assert_eq!(&views, &rebuilt);
            prop_assert_eq!(views.time_bounds().is_some(), rebuilt.time_bounds().is_some());

            // Removing everything leaves empty views.
            for ev in &present {
                views.apply(ev, Sign::Sub);
            }
            prop_assert_eq!(&views, &Views::new());
            prop_assert_eq!(views.time_bounds(), None);
            // Only spare capacity of the all-time maps is left.
            prop_assert!(views.heap_bytes() < 64 << 10, "heap bytes {}", views.heap_bytes());
        }
    }

    fn trend_cuts(views: &Views, range: TimeRange, g: Granularity, zone: &str) -> Vec<(i64, i64)> {
        let events: Vec<StoredEvent> = Vec::new();
        views
            .trend(range, g, tz(zone), &mut VecScan::new(&events))
            .unwrap()
            .iter()
            .map(|b| (b.start_ms, b.end_ms))
            .collect()
    }

    #[test]
    fn histogram_bins_cover_u32_in_order() {
        assert_eq!(histogram_bin_of(0), 0);
        assert_eq!(histogram_bin_of(15), 15);
        assert_eq!(histogram_bin_of(16), 16);
        assert_eq!(histogram_bin_of(u32::MAX), HISTOGRAM_BINS - 1);
        for bin in 0..HISTOGRAM_BINS {
            assert_eq!(histogram_bin_of(histogram_bin_value(bin)), bin, "bin {bin}");
        }
        // Consecutive values fall into the same or the next bin.
        for v in (1..100_000u32).chain([u32::MAX]) {
            let step = histogram_bin_of(v) - histogram_bin_of(v - 1);
            assert!(step <= 1, "bins skip at {v}");
        }
        for s in 4..32 {
            assert_eq!(histogram_bin_of(1 << s), 16 + (s as usize - 4) * 8, "2^{s}");
        }
    }

    #[test]
    fn histogram_quantiles_are_within_6_25_percent() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for round in 0..40 {
            let n = rng.random_range(1..3000);
            let values: Vec<u32> = (0..n)
                .map(|_| match round % 4 {
                    0 => rng.random_range(0..40),
                    1 => rng.random_range(0..100_000),
                    2 => (10.0 * 1e5f64.powf(rng.random::<f64>())) as u32,
                    _ => rng.random(),
                })
                .collect();
            let mut h = Histogram::new();
            for &v in &values {
                h.record(v, Sign::Add);
            }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for q in [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                let exact = sorted[rank - 1] as f64;
                let got = h.quantile(q).unwrap() as f64;
                assert!((got - exact).abs() <= exact / 16.0, "q {q}: got {got}, exact {exact}");
                if exact < 16.0 {
                    assert_eq!(got, exact);
                }
            }
        }
        assert_eq!(Histogram::new().quantile(0.5), None);
        let mut h = Histogram::new();
        h.record(100, Sign::Add);
        assert_eq!(h.quantile(f64::NAN), None);
        assert_eq!(h.quantile(-3.0), h.quantile(7.0));
    }

    #[test]
    fn histogram_merge_and_removal_match_recording() {
        let (a, b) = ([3u32, 70, 70, 5000, 4_000_000_000], [70u32, 71, 16, 0]);
        let mut merged = Histogram::new();
        let mut part = Histogram::new();
        for v in a {
            merged.record(v, Sign::Add);
        }
        for v in b {
            part.record(v, Sign::Add);
        }
        merged.merge(&part);
        let mut all = Histogram::new();
        for v in a.iter().chain(&b) {
            all.record(*v, Sign::Add);
        }
        assert_eq!(merged, all);
        assert_eq!(merged.count(), 9);
        for v in b {
            merged.record(v, Sign::Sub);
        }
        let mut only_a = Histogram::new();
        for v in a {
            only_a.record(v, Sign::Add);
        }
        assert_eq!(merged, only_a);
        assert_eq!(merged.bin_count(histogram_bin_of(70)), 2);
        for v in a {
            merged.record(v, Sign::Sub);
        }
        assert_eq!(merged, Histogram::new());
    }

    #[test]
    fn new_york_has_a_23_hour_and_a_25_hour_day() {
        let views = Views::new();
        let spring = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 3, 9, 5, 0, 0), utc(2024, 3, 12, 4, 0, 0)),
            Granularity::Day,
            "America/New_York",
        );
        let hours: Vec<i64> = spring.iter().map(|(a, b)| (b - a) / HOUR).collect();
        assert_eq!(hours, [24, 23, 24]);
        assert_eq!(spring[1].0, utc(2024, 3, 10, 5, 0, 0));
        let autumn = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 11, 2, 4, 0, 0), utc(2024, 11, 5, 5, 0, 0)),
            Granularity::Day,
            "America/New_York",
        );
        let hours: Vec<i64> = autumn.iter().map(|(a, b)| (b - a) / HOUR).collect();
        assert_eq!(hours, [24, 25, 24]);

        // Hours on the spring day: local 02:00 does not exist, so 01:00 is followed by 03:00.
        let hourly = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 3, 10, 5, 0, 0), utc(2024, 3, 10, 9, 0, 0)),
            Granularity::Hour,
            "America/New_York",
        );
        assert_eq!(hourly.len(), 4);
        assert!(hourly.iter().all(|(a, b)| b - a == HOUR));
        // On the autumn day local 01:00 occurs twice; its bucket starts at the earlier one and
        // runs until local 02:00, two real hours.
        let hourly = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 11, 3, 4, 0, 0), utc(2024, 11, 3, 8, 0, 0)),
            Granularity::Hour,
            "America/New_York",
        );
        assert_eq!(
            hourly,
            [
                (utc(2024, 11, 3, 4, 0, 0), utc(2024, 11, 3, 5, 0, 0)),
                (utc(2024, 11, 3, 5, 0, 0), utc(2024, 11, 3, 7, 0, 0)),
                (utc(2024, 11, 3, 7, 0, 0), utc(2024, 11, 3, 8, 0, 0))
            ]
        );
    }

    #[test]
    fn a_day_at_utc_plus_8_is_that_local_day() {
        let start = utc(2024, 4, 30, 16, 0, 0);
        let events = vec![
            simple(0, start - 1, 1, 10),
            simple(1, start, 2, 20),
            simple(2, start + DAY - 1, 3, 30),
            simple(3, start + DAY, 5, 40),
        ];
        let views = build(&events);
        let range = TimeRange::new(utc(2024, 4, 30, 0, 0, 0), utc(2024, 5, 2, 12, 0, 0));
        let buckets = views.trend(range, Granularity::Day, tz("Asia/Shanghai"), &mut VecScan::new(&events)).unwrap();
        let cuts: Vec<(i64, i64)> = buckets.iter().map(|b| (b.start_ms, b.end_ms)).collect();
        assert_eq!(cuts, [(range.from_ms, start), (start, start + DAY), (start + DAY, range.to_ms)]);
        let calls: Vec<u64> = buckets.iter().map(|b| b.agg.calls).collect();
        assert_eq!(calls, [1, 2, 1]);
        assert_eq!(buckets[1].latency.count(), 2);
        assert_eq!(buckets[1].agg.latency_sum_ms, 50);
    }

    #[test]
    fn quarter_hour_offsets_have_their_own_boundaries() {
        let views = Views::new();
        // Kathmandu is +05:45: local hours start at :15 UTC.
        let kathmandu = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 6, 1, 0, 0, 0), utc(2024, 6, 1, 3, 0, 0)),
            Granularity::Hour,
            "Asia/Kathmandu",
        );
        let starts: Vec<i64> = kathmandu.iter().map(|c| c.0).collect();
        assert_eq!(
            starts,
            [utc(2024, 6, 1, 0, 0, 0), utc(2024, 6, 1, 0, 15, 0), utc(2024, 6, 1, 1, 15, 0), utc(2024, 6, 1, 2, 15, 0)]
        );
        // Its local day 2024-06-01 starts at 2024-05-31 18:15 UTC.
        let days = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 5, 31, 12, 0, 0), utc(2024, 6, 1, 12, 0, 0)),
            Granularity::Day,
            "Asia/Kathmandu",
        );
        assert_eq!(days[1].0, utc(2024, 5, 31, 18, 15, 0));
        // Eucla is +08:45; Kolkata +05:30.
        let eucla = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 6, 1, 0, 0, 0), utc(2024, 6, 1, 2, 0, 0)),
            Granularity::Hour,
            "Australia/Eucla",
        );
        assert_eq!(eucla[1].0, utc(2024, 6, 1, 0, 15, 0));
        let kolkata = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 6, 1, 0, 0, 0), utc(2024, 6, 1, 2, 0, 0)),
            Granularity::Hour,
            "Asia/Kolkata",
        );
        assert_eq!(kolkata[1].0, utc(2024, 6, 1, 0, 30, 0));
    }

    #[test]
    fn a_missing_local_midnight_starts_the_day_after_the_gap() {
        // On 1986-01-01 Kathmandu moved from +05:30 to +05:45 at local midnight: 00:00-00:15
        // did not exist, so that day starts at 00:15 local, 1985-12-31 18:30 UTC.
        let views = Views::new();
        let days = trend_cuts(
            &views,
            TimeRange::new(utc(1985, 12, 31, 0, 0, 0), utc(1986, 1, 2, 0, 0, 0)),
            Granularity::Day,
            "Asia/Kathmandu",
        );
        assert_eq!(days[1], (utc(1985, 12, 31, 18, 30, 0), utc(1986, 1, 1, 18, 15, 0)));
        assert_eq!(days[1].1 - days[1].0, DAY - 15 * MIN);
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first_in_local_time() {
        let views = Views::new();
        let zone = "Asia/Kolkata";
        // 2024-12-30 is a Monday; local midnight is 18:30 UTC the day before.
        let weeks = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 12, 25, 0, 0, 0), utc(2025, 1, 15, 0, 0, 0)),
            Granularity::Week,
            zone,
        );
        let starts: Vec<i64> = weeks.iter().skip(1).map(|c| c.0).collect();
        assert_eq!(starts, [utc(2024, 12, 29, 18, 30, 0), utc(2025, 1, 5, 18, 30, 0), utc(2025, 1, 12, 18, 30, 0)]);
        assert!(weeks.iter().skip(1).all(|c| local_at(tz(zone), c.0).weekday() == chrono::Weekday::Mon));

        let months = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 1, 15, 0, 0, 0), utc(2024, 4, 15, 0, 0, 0)),
            Granularity::Month,
            zone,
        );
        let days: Vec<i64> = months.iter().map(|(a, b)| (b - a) / DAY).collect();
        // Clipped January, leap February, March, clipped April.
        assert_eq!(months.len(), 4);
        assert_eq!(&days[1..3], [29, 31]);
        assert_eq!(months[1].0, utc(2024, 1, 31, 18, 30, 0));
        // In New York, March loses an hour to DST.
        let months = trend_cuts(
            &views,
            TimeRange::new(utc(2024, 3, 1, 5, 0, 0), utc(2024, 4, 1, 4, 0, 0)),
            Granularity::Month,
            "America/New_York",
        );
        assert_eq!(months, [(utc(2024, 3, 1, 5, 0, 0), utc(2024, 4, 1, 4, 0, 0))]);
    }

    #[test]
    fn seconds_offsets_are_exact_through_the_scan() {
        // Monrovia was at -00:44:30 until 1972: local minutes start at :30 seconds UTC.
        let start = utc(1971, 6, 1, 12, 0, 0);
        let events: Vec<StoredEvent> =
            (0..400).map(|i| simple(i, start + i as i64 * 7_777, i as u32 % 9, 100 + i as u32)).collect();
        let views = build(&events);
        let range = TimeRange::new(start, start + 40 * MIN);
        let mut scan = VecScan::new(&events);
        let got = views.trend(range, Granularity::Minute, tz("Africa/Monrovia"), &mut scan).unwrap();
        assert_eq!(got[1].start_ms, start + 30_000);
        assert_eq!(got, naive_trend(&events, range, Granularity::Minute, tz("Africa/Monrovia")).unwrap());
        // Adjacent cut minutes are read in one scan.
        assert_eq!(scan.ranges.len(), 1);
        assert_eq!(got.iter().map(|b| b.agg.calls).sum::<u64>(), naive_summary(&events, range).agg.calls);
    }

    #[test]
    fn trend_limits() {
        let views = build(&[simple(0, utc(2024, 1, 1, 0, 0, 0), 1, 5)]);
        let events = Vec::new();
        let mut scan = VecScan::new(&events);
        let week = TimeRange::new(utc(2024, 1, 1, 0, 0, 0), utc(2024, 1, 8, 0, 0, 0));
        match views.trend(week, Granularity::Minute, tz("UTC"), &mut scan) {
            Err(ViewError::TooManyBuckets { requested, max }) => {
                assert_eq!(max, 10_000);
                assert_eq!(requested, 7 * 24 * 60 + 1);
            }
            other => panic!("{other:?}"),
        }
        let limit = TimeRange::new(week.from_ms, week.from_ms + 10_000 * MIN);
        assert_eq!(views.trend(limit, Granularity::Minute, tz("UTC"), &mut scan).unwrap().len(), 10_000);
        let over = TimeRange::new(week.from_ms, week.from_ms + 10_000 * MIN + 1);
        assert!(matches!(
            views.trend(over, Granularity::Minute, tz("UTC"), &mut scan),
            Err(ViewError::TooManyBuckets { .. })
        ));
        assert!(matches!(
            views.trend(TimeRange::new(5, 5), Granularity::Day, tz("UTC"), &mut scan),
            Err(ViewError::EmptyRange)
        ));
        assert_eq!(ViewError::EmptyRange.to_string(), "empty time range");
        assert!(scan.ranges.is_empty());
    }

    #[test]
    fn aligned_ranges_and_all_data_need_no_scan() {
        let start = utc(2024, 5, 1, 0, 0, 0);
        let events: Vec<StoredEvent> =
            (0..3000).map(|i| simple(i, start + i as i64 * 61_001, i as u32 % 50, i as u32)).collect();
        let views = build(&events);
        let mut scan = VecScan::new(&events);
        let minutes = TimeRange::new(start + 17 * MIN, start + 1234 * MIN);
        assert_eq!(views.summary(minutes, &mut scan), naive_summary(&events, minutes));
        let hours = TimeRange::new(start + 3 * HOUR, start + 40 * HOUR);
        for group in [Group::Model, Group::Credential, Group::StatusClass] {
            assert_eq!(views.breakdown(group, hours, &mut scan), naive_breakdown(&events, group, hours));
        }
        let days = TimeRange::new(start + DAY, start + 2 * DAY);
        assert_eq!(views.breakdown(Group::Key, days, &mut scan), naive_breakdown(&events, Group::Key, days));
        for group in Group::ALL {
            assert_eq!(
                views.breakdown(group, TimeRange::ALL, &mut scan),
                naive_breakdown(&events, group, TimeRange::ALL)
            );
            let (min, max) = views.time_bounds().unwrap();
            let exact = TimeRange::new(min, max + 1);
            assert_eq!(views.breakdown(group, exact, &mut scan), naive_breakdown(&events, group, exact));
        }
        let shanghai = views
            .trend(
                TimeRange::new(start - 8 * HOUR, start + 2 * DAY - 8 * HOUR),
                Granularity::Hour,
                tz("Asia/Shanghai"),
                &mut scan,
            )
            .unwrap();
        assert_eq!(shanghai.len(), 48);
        // Local hours at +05:30 start on quarter hours: no scan either.
        let kolkata_range = TimeRange::new(start - 5 * HOUR - 30 * MIN, start + 2 * DAY - 5 * HOUR - 30 * MIN);
        let kolkata = views.trend(kolkata_range, Granularity::Hour, tz("Asia/Kolkata"), &mut scan).unwrap();
        assert_eq!(kolkata, naive_trend(&events, kolkata_range, Granularity::Hour, tz("Asia/Kolkata")).unwrap());
        assert_eq!(scan.ranges, []);

        // A ragged range scans only the partial minutes (summary) and partial hours (breakdown).
        let ragged = TimeRange::new(start + 17 * MIN + 5, start + 1234 * MIN + 5);
        assert_eq!(views.summary(ragged, &mut scan), naive_summary(&events, ragged));
        assert!(scan.ranges.iter().all(|r| r.to_ms - r.from_ms <= MIN), "{:?}", scan.ranges);
        scan.ranges.clear();
        assert_eq!(views.breakdown(Group::Model, ragged, &mut scan), naive_breakdown(&events, Group::Model, ragged));
        assert_eq!(scan.ranges.len(), 2);
        assert!(scan.ranges.iter().all(|r| r.to_ms - r.from_ms <= HOUR && ragged.contains(r.from_ms)));
    }

    #[test]
    fn frozen_hours_answer_hourly_trends_from_their_totals_until_written_again() {
        let start = utc(2024, 5, 1, 0, 0, 0);
        let mut events: Vec<StoredEvent> =
            (0..3000).map(|i| simple(i, start + i as i64 * 61_001, i as u32 % 50, (i as u32 * 37) % 9000)).collect();
        let mut views = build(&events);
        let range = TimeRange::new(start - 8 * HOUR, start + 2 * DAY - 8 * HOUR);
        let shanghai = tz("Asia/Shanghai");
        let frozen_with_total = |v: &Views| {
            v.days.iter().flat_map(|d| d.hours.iter().flatten()).filter(|h| h.frozen && h.total.is_some()).count()
        };
        let totals_before = frozen_with_total(&views);
        assert!(totals_before > 24, "idle hours froze with totals: {totals_before}");
        let mut scan = VecScan::new(&events);
        assert_eq!(views.trend(range, Granularity::Hour, shanghai, &mut scan).unwrap(), naive_trend(&events, range, Granularity::Hour, shanghai).unwrap());

        // A late event and a removal in frozen hours drop their totals; answers stay exact.
        let late = simple(3000, start + 3 * HOUR + 5 * MIN, 7, 65_000);
        views.apply(&late, Sign::Add);
        events.push(late);
        let gone = events.swap_remove(100);
        views.apply(&gone, Sign::Sub);
        assert_eq!(frozen_with_total(&views), totals_before - 2);
        let mut scan = VecScan::new(&events);
        assert_eq!(views.trend(range, Granularity::Hour, shanghai, &mut scan).unwrap(), naive_trend(&events, range, Granularity::Hour, shanghai).unwrap());
        let day = TimeRange::new(start, start + DAY);
        assert_eq!(views.summary(day, &mut scan), naive_summary(&events, day));
    }

    /// Skewed keys, as real gateways see them: key k makes about 40 / (k + 1) calls an hour.
    fn skewed_events(start: i64, hours: i64) -> Vec<StoredEvent> {
        let mut events = Vec::new();
        for h in 0..hours {
            for key in 0..16u32 {
                let count = (40 / (key as i64 + 1)).max(1) + (h * 7 + key as i64) % 3;
                for j in 0..count {
                    let ts = start + h * HOUR + j * (HOUR / count) + key as i64 * 13;
                    events.push(simple(events.len() as u64, ts, key, 100 + key));
                }
            }
        }
        events.sort_by_key(|e| e.ts_ms);
        events
    }

    #[test]
    fn top_keys_over_partial_days_come_from_heavy_keys_without_a_scan() {
        let start = utc(2024, 5, 1, 0, 0, 0);
        let mut events = skewed_events(start, 96);
        let mut views = build(&events);
        let ranges = [
            TimeRange::new(start + 5 * HOUR, start + 2 * DAY + 7 * HOUR),
            TimeRange::new(start + 16 * HOUR, start + 3 * DAY + 16 * HOUR),
            TimeRange::new(start + 30 * HOUR, start + 33 * HOUR),
        ];
        for range in ranges {
            for (n, by_tokens) in [(1, true), (2, false), (2, true)] {
                let mut scan = VecScan::new(&events);
                let fast = views.top_keys_from_heavy(range, n, by_tokens, &mut scan);
                assert_eq!(fast, Some(naive_top(&events, Group::Key, range, n, by_tokens)), "{range:?} {n}");
                assert_eq!(scan.ranges, []);
                // The answer holds every field a Key breakdown has.
                let (top, _) = fast.unwrap();
                let full = naive_breakdown(&events, Group::Key, range);
                assert!(top.iter().all(|t| full.contains(t)));
            }
        }
        // A ragged range scans only its partial hours.
        let ragged = TimeRange::new(start + 5 * HOUR + 1234, start + 2 * DAY + 7 * HOUR - 99);
        let mut scan = VecScan::new(&events);
        assert_eq!(
            views.top_n(Group::Key, ragged, 2, true, &mut scan),
            naive_top(&events, Group::Key, ragged, 2, true)
        );
        assert_eq!(scan.ranges.len(), 2);
        assert!(scan.ranges.iter().all(|r| r.to_ms - r.from_ms < HOUR));

        // Late events and removals in frozen hours and days: listed keys stay exact, the
        // bounds of the others stay bounds.
        // Key 11, light so far, becomes the heaviest of hours 20..27 with late events.
        let late: Vec<StoredEvent> = (0..600u64)
            .map(|i| {
                simple(
                    100_000 + i,
                    start + 20 * HOUR + (i as i64 % 7) * HOUR + 99 + i as i64,
                    9 + 2 * (i % 9 / 8) as u32,
                    7,
                )
            })
            .collect();
        for ev in &late {
            views.apply(ev, Sign::Add);
        }
        events.extend(late);
        let gone: Vec<StoredEvent> =
            events.iter().filter(|e| e.seq % 5 == 0 && e.ts_ms < start + 2 * DAY).cloned().collect();
        for ev in &gone {
            views.apply(ev, Sign::Sub);
        }
        events.retain(|e| !(e.seq % 5 == 0 && e.ts_ms < start + 2 * DAY));
        for range in ranges.into_iter().chain([TimeRange::ALL, ragged]) {
            for (n, by_tokens) in [(1, true), (2, false), (3, true)] {
                let mut scan = VecScan::new(&events);
                let want = naive_top(&events, Group::Key, range, n, by_tokens);
                assert_eq!(views.top_n(Group::Key, range, n, by_tokens, &mut scan), want, "{range:?} {n}");
                if let Some(fast) = views.top_keys_from_heavy(range, n, by_tokens, &mut scan) {
                    assert_eq!(fast, want);
                }
            }
        }
        assert_eq!(views, build(&events));
    }

    #[test]
    fn top_keys_of_even_usage_fall_back_to_the_breakdown() {
        let start = utc(2024, 5, 1, 0, 0, 0);
        // Eight keys, one call each an hour: no heavy keys to tell them apart.
        let events: Vec<StoredEvent> = (0..48 * 8u64)
            .map(|i| simple(i, start + (i / 8) as i64 * HOUR + (i % 8) as i64 * MIN, (i % 8) as u32, 5))
            .collect();
        let views = build(&events);
        let range = TimeRange::new(start + 5 * HOUR, start + DAY + 7 * HOUR);
        let mut scan = VecScan::new(&events);
        assert_eq!(views.top_keys_from_heavy(range, 3, false, &mut scan), None);
        scan.ranges.clear();
        assert_eq!(
            views.top_n(Group::Key, range, 3, false, &mut scan),
            naive_top(&events, Group::Key, range, 3, false)
        );
        assert!(!scan.ranges.is_empty(), "the fallback scans the partial days");
        // Over all the data the all-time cells answer.
        scan.ranges.clear();
        assert_eq!(
            views.top_n(Group::Key, TimeRange::ALL, 3, true, &mut scan),
            naive_top(&events, Group::Key, TimeRange::ALL, 3, true)
        );
        assert_eq!(scan.ranges, []);
    }

    #[test]
    fn heavy_keys_keep_exact_cells_and_bound_the_rest() {
        let cell = |calls: u64, tokens: u64| cells::Counters([calls, 0, tokens, 0, 0, 0, 0, 0, 7]);
        // Key k: 10 - k calls; tokens favour key 9.
        let all: Vec<(u32, KeyCell)> =
            (0..10u32).map(|k| (k, cell(10 - k as u64, if k == 9 { 1000 } else { 10 * k as u64 }))).collect();
        let mut heavy = HeavyKeys::select(all.clone(), 4);
        // The two with most tokens (9, 8) and the two with most calls (0, 1).
        assert_eq!(heavy.cells().iter().map(|(k, _)| *k).collect::<Vec<_>>(), [0, 1, 8, 9]);
        assert_eq!(heavy.rest(), (70, 8));
        assert!(heavy.cells().iter().all(|c| all.contains(c)));
        // Few keys: all listed, nothing left to bound.
        assert_eq!(HeavyKeys::select(all[..4].to_vec(), 4).rest(), (0, 0));
        // Writes: listed keys stay exact; an unlisted addition raises the bounds.
        heavy.apply(9, &cell(1, 5), Sign::Add);
        assert_eq!(heavy.cells()[3], (9, cells::Counters([2, 0, 1005, 0, 0, 0, 0, 0, 14])));
        heavy.apply(4, &cell(2, 500), Sign::Add);
        assert_eq!(heavy.rest(), (570, 10));
        heavy.apply(4, &cell(2, 500), Sign::Sub);
        assert_eq!(heavy.rest(), (570, 10), "bounds stay valid, if loose");
        heavy.apply(0, &cell(10, 0), Sign::Sub);
        assert_eq!(heavy.cells().iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 8, 9]);
    }

    /// A key whose hour's 32-bit sums are full stays inline: the full cell moves on to the
    /// hour's pending cells (and the day's), and the key starts over.
    #[test]
    fn a_full_inline_cell_moves_on_and_the_key_stays_inline() {
        let mut totals = KeyTotals::default();
        let big = cells::Counters([1, 0, 3_000_000_000, 0, 0, 0, 0, 0, 5]);
        let mut to_day = Vec::new();
        for _ in 0..3 {
            let out = totals.add(7, 100, 5, true, &big);
            assert!(!out.direct, "every event stays inline");
            to_day.extend(out.to_day);
        }
        let (hour, moved) = totals.take_hour(100, 5);
        to_day.extend(moved);
        assert_eq!(hour.len(), 3, "one cell per time the sums filled up, and the last");
        let mut summed = cells::Counters::default();
        for (key, cell) in &hour {
            assert_eq!(*key, 7);
            summed.merge(cell);
        }
        assert_eq!(summed, cells::Counters([3, 0, 9_000_000_000, 0, 0, 0, 0, 0, 15]));
        let moved: u64 = to_day.iter().map(|m| cells::cell_tokens(&m.cell)).sum();
        assert!(moved >= 6_000_000_000, "the day's 32-bit sums overflowed into its map: {to_day:?}");
        assert_eq!(totals.cell_of(7), Some(cells::Counters([3, 0, 9_000_000_000, 0, 0, 0, 0, 0, 15])));
    }

    #[test]
    fn key_cells_move_from_inline_to_their_hour_and_day() {
        let mut totals = KeyTotals::default();
        let one = cells::Counters([1, 0, 3, 0, 0, 0, 0, 0, 5]);
        let out = totals.add(7, 100, 2, true, &one);
        assert!(!out.direct && out.to_day.is_none());
        totals.add(7, 100, 2, true, &one);
        assert_eq!(
            totals.hot_hour_cells().collect::<Vec<_>>(),
            [(100, 2, 7, cells::Counters([2, 0, 6, 0, 0, 0, 0, 0, 10]))]
        );
        // A later hour of the same day: the hour's cells wait for the hour to freeze.
        totals.add(7, 100, 5, true, &one);
        let (hour, to_day) = totals.take_hour(100, 2);
        assert_eq!((hour, to_day), (vec![(7, cells::Counters([2, 0, 6, 0, 0, 0, 0, 0, 10]))], vec![]));
        // An earlier hour, or a frozen one, goes direct.
        assert!(totals.add(7, 100, 3, true, &one).direct);
        assert!(totals.add(7, 100, 6, false, &one).direct);
        // The next day settles the day's inline cells.
        let out = totals.add(7, 101, 0, true, &one);
        assert_eq!(out.to_day, Some(DayMove { day: 100, key: 7, cell: cells::Counters([3, 0, 9, 0, 0, 0, 0, 0, 15]) }));
        assert_eq!(totals.cell_of(7), Some(cells::Counters([6, 0, 18, 0, 0, 0, 0, 0, 30])));
        let (hour, _) = totals.take_hour(100, 5);
        assert_eq!(hour, [(7, one)]);
        // Removing from the inline day settles it first; removing everything forgets the key.
        let out = totals.sub(7, 101, &one);
        assert_eq!(out.to_day, Some(DayMove { day: 101, key: 7, cell: one }));
        for _ in 0..5 {
            totals.sub(7, 100, &one);
        }
        assert_eq!((totals.len(), totals.cell_of(7)), (0, None));
    }

    #[test]
    fn one_bin_of_one_minute_can_hold_many_values() {
        let t = utc(2024, 7, 1, 10, 0, 0);
        let events: Vec<StoredEvent> = (0..300).map(|i| simple(i, t + i as i64, 2, 777)).collect();
        let mut views = build(&events);
        // Out of order and a later minute: the first minute's histogram is compacted to runs.
        views.apply(&simple(900, t + 5 * MIN, 2, 777), Sign::Add);
        views.apply(&simple(901, t + 70, 2, 777), Sign::Add);
        let everything = TimeRange::new(t, t + HOUR);
        let mut expected = events.clone();
        expected.push(simple(900, t + 5 * MIN, 2, 777));
        expected.push(simple(901, t + 70, 2, 777));
        let s = views.summary(TimeRange::new(t, t + MIN), &mut VecScan::new(&expected));
        assert_eq!(s.latency.count(), 301);
        assert_eq!(s.latency.bin_count(histogram_bin_of(777)), 301);
        assert_eq!(views.summary(everything, &mut VecScan::new(&expected)), naive_summary(&expected, everything));
        for ev in &events[..150] {
            views.apply(ev, Sign::Sub);
        }
        let rest: Vec<StoredEvent> = expected[150..].to_vec();
        assert_eq!(views, build(&rest));
        assert_eq!(views.summary(everything, &mut VecScan::new(&rest)), naive_summary(&rest, everything));
    }

    /// Three days in order, then late events, then retention dropping the first day: the
    /// views equal views built from what is left, and answer like the naive model.
    #[test]
    fn retention_leaves_views_equal_to_a_rebuild() {
        let start = utc(2024, 8, 1, 0, 0, 0);
        let mut events: Vec<StoredEvent> = (0..13_000u64)
            .map(|i| {
                let key = (i * 7 % 200) as u32;
                let mut ev = simple(i, start + i as i64 * 20_011, key, (i * 37 % 9000) as u32);
                ev.dims[Dim::Credential as usize] = Sym((i % 97) as u32);
                ev
            })
            .collect();
        events.extend(
            (0..500u64).map(|i| simple(20_000 + i, start + (i as i64 * 7_919_993) % (2 * DAY), 300 + i as u32 % 7, 50)),
        );
        let mut views = build(&events);
        let cutoff = start + DAY + 5 * HOUR + 17;
        let (old, rest): (Vec<StoredEvent>, Vec<StoredEvent>) = events.iter().cloned().partition(|e| e.ts_ms < cutoff);
        for ev in &old {
            views.apply(ev, Sign::Sub);
        }
        let rebuilt = build(&rest);
        assert_eq!(views, rebuilt);
        let mut scan = VecScan::new(&rest);
        for range in [
            TimeRange::ALL,
            TimeRange::new(start, start + 3 * DAY),
            TimeRange::new(cutoff + 12_345, start + 2 * DAY + 7),
        ] {
            assert_eq!(views.summary(range, &mut scan), naive_summary(&rest, range));
            for group in Group::ALL {
                assert_eq!(
                    views.breakdown(group, range, &mut scan),
                    naive_breakdown(&rest, group, range),
                    "{group:?} {range:?}"
                );
            }
        }
        // Rebuilding in reverse order gives the same views too.
        let mut reversed = rest.clone();
        reversed.reverse();
        assert_eq!(build(&reversed), views);
        assert!(views.heap_bytes() < build(&events).heap_bytes());
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let mut events = Vec::new();
        for (i, ts) in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX].into_iter().enumerate() {
            let mut ev = simple(i as u64, ts, i as u32, u32::MAX);
            ev.tokens = Tokens::from_array([u64::MAX / 2; 6]);
            ev.ttft_ms = Some(u32::MAX);
            events.push(ev);
        }
        let mut views = build(&events);
        let mut scan = VecScan::new(&events);
        for range in [
            TimeRange::ALL,
            TimeRange::new(i64::MIN, 0),
            TimeRange::new(-5, i64::MAX),
            TimeRange::new(i64::MAX - 1, i64::MAX),
        ] {
            assert_eq!(views.summary(range, &mut scan).agg.calls, naive_summary(&events, range).agg.calls);
            for group in Group::ALL {
                assert_eq!(
                    views.breakdown(group, range, &mut scan).len(),
                    naive_breakdown(&events, group, range).len()
                );
            }
            for g in [Granularity::Minute, Granularity::Month] {
                let _ = views.trend(range, g, tz("America/New_York"), &mut scan);
            }
        }
        let recent = TimeRange::new(-3 * DAY, 3 * DAY);
        let trend = views.trend(recent, Granularity::Day, tz("Pacific/Kiritimati"), &mut scan).unwrap();
        assert_eq!(trend.iter().map(|b| b.agg.calls).sum::<u64>(), 3);
        assert_eq!(views.time_bounds(), Some((i64::MIN, i64::MAX)));
        for ev in &events {
            views.apply(ev, Sign::Sub);
        }
        assert_eq!(views, Views::new());
    }

    #[test]
    fn agg_helpers() {
        let a = Agg {
            calls: 4,
            errors: 1,
            tokens: [1, 2, 3, 4, 5, 6],
            latency_sum_ms: 100,
            ttft_sum_ms: 30,
            ttft_calls: 2,
            ..Agg::default()
        };
        assert_eq!(a.total_tokens(), 21);
        assert_eq!(a.success_rate(), Some(0.75));
        assert_eq!(a.avg_latency_ms(), Some(25.0));
        assert_eq!(a.avg_ttft_ms(), Some(15.0));
        assert!(!a.is_zero());
        assert_eq!(Agg::default().success_rate(), None);
        assert_eq!(Agg::default().avg_ttft_ms(), None);
        let ev = simple(0, 0, 6, 40);
        let mut b = a.clone();
        b.add_event(&ev, Sign::Add);
        assert_eq!(b.calls, 5);
        assert_eq!(b.quality_calls[2], 1);
        b.add_event(&ev, Sign::Sub);
        assert_eq!(b, a);
    }

    #[test]
    fn a_closure_is_an_edge_scan_and_views_are_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Views>();
        let t = utc(2024, 1, 1, 0, 0, 0);
        let events = vec![simple(0, t + 10, 1, 5), simple(1, t + 70_000, 2, 6), simple(2, t + 70_002, 3, 7)];
        let views = build(&events);
        let mut ranges = Vec::new();
        let mut scan = |range: TimeRange, f: &mut dyn FnMut(&StoredEvent)| {
            ranges.push(range);
            events.iter().filter(|e| range.contains(e.ts_ms)).for_each(f);
        };
        let s = views.summary(TimeRange::new(t + 5, t + 70_001), &mut scan);
        assert_eq!(s.agg.calls, 2);
        assert_eq!(s.agg.latency_sum_ms, 11);
        // Both partial minutes are adjacent, so one scan reads them.
        assert_eq!(ranges, [TimeRange::new(t + 5, t + 70_001)]);
    }
}
