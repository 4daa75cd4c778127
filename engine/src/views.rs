//! Materialised views over usage events: totals, latency histograms, per-group breakdowns and
//! time-zone-aware trends, kept in memory and updated on every append.
//!
//! # Layout
//! - Per UTC day with data, a [`DayBlock`]: 1440 minute slots (allocated only when the minute has
//!   events), each with an [`Agg`] and a compact latency + TTFT histogram; 24 hour slots with the
//!   same totals (dense histogram once busy) plus the breakdown cells of Model, Endpoint,
//!   Provider, Credential and StatusClass; and the day's Key cells. Days live in a `Vec` sorted
//!   by day number; the index of the last-touched day is cached, so in-order appends do no
//!   search.
//! - All-time cells per group, for breakdowns over all data.
//!
//! Summaries and trends are exact from the cells for any minute-aligned range (hours are used
//! wherever a whole UTC hour fits). Breakdowns are exact from the cells for whole UTC hours
//! (whole UTC days for Key). Whatever the cells cannot answer comes from [`EdgeScan`]:
//! - summary / trend: the occupied UTC minutes that contain a range end or bucket boundary which
//!   is not minute-aligned (adjacent ones coalesced), clipped to the requested range;
//! - breakdown: the partial UTC hours (days for Key) at both ends of the range, narrowed to the
//!   span of occupied minutes and clipped to the range. A range with `from ≤ min ts` and
//!   `to > max ts` needs no scan at all.
//!
//! # Invariants
//! - Every count is additive: `apply(ev, Add)` then `apply(ev, Sub)` restores the previous state,
//!   and cells, slots and days whose counts return to zero are removed. Views that saw the same
//!   multiset of events compare equal, in whatever order and whether or not some events were
//!   added and later removed. Caches (the day cursor, which maps are hot, the first/last offsets
//!   behind [`Views::time_bounds`]) and capacities take no part in equality.
//! - `Sign::Sub` is only ever given events that were added; anything else is a caller bug, caught
//!   by `debug_assert!` and otherwise absorbed with saturating arithmetic (never a panic).
//!
//! # Limits
//! - The Key breakdown keeps calls, errors, tokens and latency sum only; its `Agg`s have zero
//!   TTFT, stream and quality counters.
//! - [`Views::time_bounds`] is exact while only adds happened. A `Sub` that removes the first
//!   (last) event of a minute which keeps other events leaves the bound at the removed event, so
//!   it may then be up to a minute too wide; it is never too narrow.
//! - Trends are clamped to ±3·10^18 ms (about ±95 000 years) and return at most
//!   [`MAX_TREND_BUCKETS`] buckets.
//! - Histograms: see [`Histogram`]; quantiles are within 6.25 % of the true value.

#[path = "views/calendar.rs"]
mod calendar;
#[path = "views/cells.rs"]
mod cells;
#[path = "views/histogram.rs"]
mod histogram;

pub use histogram::{BINS as HISTOGRAM_BINS, Histogram, bin_of as histogram_bin_of, bin_value as histogram_bin_value};

use rustc_hash::FxHashMap;

use crate::event::{Dim, StoredEvent, status_class};
use cells::{Cell, CellMap, KeyCell, KeyMap, OrderedMap, SortedAcc};
use histogram::{BINS, DenseKeys, HourHist, KEYS, RunHist, bin_of};

/// The most buckets one trend returns.
pub const MAX_TREND_BUCKETS: u64 = 10_000;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const MINUTES_PER_DAY: usize = 1440;
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
const HOURLY_GROUPS: [Group; 5] = [Group::Model, Group::Endpoint, Group::Provider, Group::Credential, Group::StatusClass];

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
    /// Calls `f` with at least every held event whose ts lies in `range`. It may also pass
    /// events outside `range` (whole blocks, say); the views filter by ts themselves.
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

struct MinuteSlot {
    agg: Agg,
    hist: RunHist<u16>,
    /// Offsets within the minute of the first and last event; a cache (see `time_bounds`).
    first_offset_ms: u16,
    last_offset_ms: u16,
}

impl PartialEq for MinuteSlot {
    fn eq(&self, other: &MinuteSlot) -> bool {
        self.agg == other.agg && self.hist == other.hist
    }
}

struct HourSlot {
    agg: Agg,
    hist: HourHist,
    /// Indexed like `HOURLY_GROUPS`.
    groups: [CellMap<Agg>; 5],
}

impl PartialEq for HourSlot {
    fn eq(&self, other: &HourSlot) -> bool {
        self.agg == other.agg && self.hist == other.hist && self.groups == other.groups
    }
}

impl HourSlot {
    fn new(hot: bool) -> HourSlot {
        HourSlot {
            agg: Agg::default(),
            hist: HourHist::default(),
            groups: std::array::from_fn(|_| CellMap::new(hot)),
        }
    }
}

/// Everything kept for one UTC day.
struct DayBlock {
    day: i64,
    /// Events held; the block goes when it returns to zero.
    calls: u64,
    /// `MINUTES_PER_DAY` slots.
    minutes: Box<[Option<Box<MinuteSlot>>]>,
    hours: [Option<Box<HourSlot>>; HOURS_PER_DAY],
    keys: KeyMap,
}

impl PartialEq for DayBlock {
    fn eq(&self, other: &DayBlock) -> bool {
        self.day == other.day
            && self.calls == other.calls
            && self.minutes == other.minutes
            && self.hours == other.hours
            && self.keys == other.keys
    }
}

impl DayBlock {
    fn new(day: i64) -> DayBlock {
        DayBlock {
            day,
            calls: 0,
            minutes: (0..MINUTES_PER_DAY).map(|_| None).collect(),
            hours: std::array::from_fn(|_| None),
            keys: KeyMap::default(),
        }
    }

    /// Adds the minutes `a..b` of this day (0 ≤ a ≤ b ≤ 1440), taking whole hours from the
    /// hour slots.
    fn add_minutes(&self, a: usize, b: usize, agg: &mut Agg, hist: &mut [u64; KEYS]) {
        let (hour_a, hour_b) = (a.div_ceil(60), b / 60);
        if hour_a >= hour_b {
            self.add_minute_slots(a, b, agg, hist);
            return;
        }
        self.add_minute_slots(a, hour_a * 60, agg, hist);
        for slot in self.hours[hour_a..hour_b].iter().flatten() {
            agg.merge(&slot.agg);
            slot.hist.add_to(hist);
        }
        self.add_minute_slots(hour_b * 60, b, agg, hist);
    }

    fn add_minute_slots(&self, a: usize, b: usize, agg: &mut Agg, hist: &mut [u64; KEYS]) {
        for slot in self.minutes[a..b].iter().flatten() {
            agg.merge(&slot.agg);
            slot.hist.add_to(hist);
        }
    }

    fn heap_bytes(&self) -> usize {
        let mut bytes = self.minutes.len() * size_of::<Option<Box<MinuteSlot>>>() + self.keys.heap_bytes();
        for slot in self.minutes.iter().flatten() {
            bytes += size_of::<MinuteSlot>() + slot.hist.heap_bytes();
        }
        for slot in self.hours.iter().flatten() {
            bytes += size_of::<HourSlot>() + slot.hist.heap_bytes();
            bytes += slot.groups.iter().map(|g| g.heap_bytes()).sum::<usize>();
        }
        bytes
    }
}

/// A period whose maps are hot, to be frozen once it is old.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HotPeriod {
    /// Hour index: UTC hours since the epoch.
    Hour(i64),
    Day(i64),
}

/// Past this many hot periods the old ones are frozen without waiting for the next hour.
const HOT_PERIODS_MAX: usize = 32;

/// The materialised views.
pub struct Views {
    /// Sorted by day; only days holding events.
    days: Vec<DayBlock>,
    /// Index in `days` of the last-touched day (a cache, possibly stale).
    cursor: usize,
    /// Indexed like `HOURLY_GROUPS`.
    all_time: [OrderedMap<Agg>; 5],
    all_time_keys: OrderedMap<KeyCell>,
    /// The latest hour index any added event fell in; periods ending more than an hour before
    /// it are frozen.
    newest_hour: i64,
    hot: Vec<HotPeriod>,
    mask: u32,
}

impl Default for Views {
    fn default() -> Views {
        Views::new()
    }
}

impl PartialEq for Views {
    fn eq(&self, other: &Views) -> bool {
        self.days == other.days && self.all_time == other.all_time && self.all_time_keys == other.all_time_keys
    }
}

impl Eq for Views {}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views")
            .field("days", &self.days.len())
            .field("events", &self.days.iter().map(|d| d.calls).sum::<u64>())
            .field("time_bounds", &self.time_bounds())
            .finish_non_exhaustive()
    }
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
            all_time: Default::default(),
            all_time_keys: OrderedMap::default(),
            newest_hour: i64::MIN,
            hot: Vec::new(),
            mask: std::env::var("MASK").map(|s| s.parse().unwrap()).unwrap_or(0),
        }
    }

    /// Adds or removes one event.
    pub fn apply(&mut self, ev: &StoredEvent, sign: Sign) {
        let delta = Agg::of_event(ev);
        let key_delta = KeyCell::from_agg(&delta);
        let day = ev.ts_ms.div_euclid(DAY_MS);
        let ms_of_day = ev.ts_ms.rem_euclid(DAY_MS);
        let minute = (ms_of_day / MINUTE_MS) as usize;
        let offset_ms = (ms_of_day % MINUTE_MS) as u16;
        let hour = minute / 60;
        let hour_index = day * HOURS_PER_DAY as i64 + hour as i64;
        let latency_key = bin_of(ev.latency_ms);
        let ttft_key = ev.ttft_ms.map(|t| BINS + bin_of(t));
        let group_keys = HOURLY_GROUPS.map(|g| g.key_of(ev));
        let key = ev.dim(Dim::Key).0;

        if sign == Sign::Add && hour_index > self.newest_hour {
            self.newest_hour = hour_index;
            if !self.hot.is_empty() {
                self.freeze_old();
            }
        }
        let recent = hour_index >= self.newest_hour.saturating_sub(1);

        let mut turned_hot: [Option<HotPeriod>; 2] = [None, None];
        let pos = match sign {
            Sign::Add => {
                let (pos, created) = self.day_position_or_insert(day);
                if created {
                    turned_hot[1] = Some(HotPeriod::Day(day));
                }
                pos
            }
            Sign::Sub => match self.day_position(day) {
                Some(pos) => pos,
                None => {
                    debug_assert!(false, "views: removing an event never added");
                    return;
                }
            },
        };
        let block = &mut self.days[pos];

        let mask = self.mask;
        // Minute slot.
        if mask & 1 == 0 { match (&mut block.minutes[minute], sign) {
            (Some(slot), Sign::Add) => {
                slot.agg.merge(&delta);
                slot.first_offset_ms = slot.first_offset_ms.min(offset_ms);
                slot.last_offset_ms = slot.last_offset_ms.max(offset_ms);
            }
            (empty @ None, Sign::Add) => {
                *empty = Some(Box::new(MinuteSlot {
                    agg: delta.clone(),
                    hist: RunHist::default(),
                    first_offset_ms: offset_ms,
                    last_offset_ms: offset_ms,
                }));
            }
            (Some(slot), Sign::Sub) => slot.agg.unmerge(&delta),
            (None, Sign::Sub) => debug_assert!(false, "views: removing an event never added"),
        }
        if let Some(slot) = &mut block.minutes[minute] {
            slot.hist.add(latency_key, sign);
            if let Some(k) = ttft_key {
                slot.hist.add(k, sign);
            }
            if sign == Sign::Sub && slot.agg.is_zero() && slot.hist.is_empty() {
                block.minutes[minute] = None;
            }
        }
        }

        // Hour slot.
        if block.hours[hour].is_none() && sign == Sign::Add {
            block.hours[hour] = Some(Box::new(HourSlot::new(recent)));
            if recent {
                turned_hot[0] = Some(HotPeriod::Hour(hour_index));
            }
        }
        if let Some(slot) = &mut block.hours[hour] {
            match sign {
                Sign::Add => slot.agg.merge(&delta),
                Sign::Sub => slot.agg.unmerge(&delta),
            }
            slot.hist.add(latency_key, sign);
            if let Some(k) = ttft_key {
                slot.hist.add(k, sign);
            }
            if mask & 2 == 0 { slot.hist.add(latency_key, sign); }
            if mask & 4 == 0 { for (cells, group_key) in slot.groups.iter_mut().zip(group_keys) {
                if cells.apply(group_key, &delta, sign) {
                    turned_hot[0] = Some(HotPeriod::Hour(hour_index));
                }
            } }
            if sign == Sign::Sub && slot.agg.is_zero() {
                block.hours[hour] = None;
            }
        } else {
            debug_assert!(false, "views: removing an event never added");
        }

        // Day: keys and event count.
        if mask & 8 == 0 && block.keys.apply(key, &key_delta, sign) {
            turned_hot[1] = Some(HotPeriod::Day(day));
        }
        match sign {
            Sign::Add => block.calls = block.calls.saturating_add(1),
            Sign::Sub => {
                debug_assert!(block.calls > 0, "views: removing an event never added");
                block.calls = block.calls.saturating_sub(1);
                if block.calls == 0 {
                    self.days.remove(pos);
                    self.cursor = pos.saturating_sub(1);
                }
            }
        }

        if mask & 16 == 0 { for (cells, group_key) in self.all_time.iter_mut().zip(group_keys) {
            cells.apply(group_key, &delta, sign);
        } }
        if mask & 32 == 0 { self.all_time_keys.apply(key, &key_delta, sign); }

        for period in turned_hot.into_iter().flatten() {
            self.mark_hot(period);
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
            self.freeze_old();
        }
    }

    /// Freezes the hot periods that ended more than an hour before the newest hour: their
    /// hashes become sorted or packed, and their minute histograms drop spare capacity.
    fn freeze_old(&mut self) {
        let cutoff = self.newest_hour.saturating_sub(1);
        let hot = std::mem::take(&mut self.hot);
        for period in hot {
            match period {
                HotPeriod::Hour(hour_index) if hour_index < cutoff => {
                    let day = hour_index.div_euclid(HOURS_PER_DAY as i64);
                    let hour = hour_index.rem_euclid(HOURS_PER_DAY as i64) as usize;
                    let Some(pos) = self.day_position(day) else { continue };
                    let block = &mut self.days[pos];
                    if let Some(slot) = &mut block.hours[hour] {
                        slot.groups.iter_mut().for_each(CellMap::freeze);
                    }
                    for slot in block.minutes[hour * 60..(hour + 1) * 60].iter_mut().flatten() {
                        slot.hist.shrink_to_fit();
                    }
                }
                HotPeriod::Day(day) if day.saturating_mul(HOURS_PER_DAY as i64).saturating_add(23) < cutoff => {
                    if let Some(pos) = self.day_position(day) {
                        self.days[pos].keys.freeze();
                    }
                }
                _ => self.hot.push(period),
            }
        }
    }

    /// The slot of a minute index (UTC minutes since the epoch), if it holds events.
    fn minute_slot(&self, minute_index: i64) -> Option<&MinuteSlot> {
        let pos = self.day_position(minute_index.div_euclid(MINUTES_PER_DAY as i64))?;
        self.days[pos].minutes[minute_index.rem_euclid(MINUTES_PER_DAY as i64) as usize].as_deref()
    }

    /// Adds the cells of minute indices `[m_from, m_to)`.
    fn add_minute_range(&self, m_from: i64, m_to: i64, agg: &mut Agg, hist: &mut [u64; KEYS]) {
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
        let (first, last) = self.occupied_span(floor_div(range.from_ms, MINUTE_MS), ceil_div(range.to_ms, MINUTE_MS))?;
        let narrowed = TimeRange {
            from_ms: range.from_ms.max(first.saturating_mul(MINUTE_MS)),
            to_ms: range.to_ms.min((last + 1).saturating_mul(MINUTE_MS)),
        };
        (!narrowed.is_empty()).then_some(narrowed)
    }

    /// Sums of the consecutive ranges `[cuts[i], cuts[i + 1])`, exact for any cuts.
    fn accumulate(&self, cuts: &[i64], scan: &mut dyn EdgeScan) -> Vec<Summary> {
        let buckets = cuts.len().saturating_sub(1);
        let mut out = Vec::with_capacity(buckets);
        let mut dense = DenseKeys::new();
        for w in cuts.windows(2) {
            let (m_lo, m_hi) = (ceil_div(w[0], MINUTE_MS), floor_div(w[1], MINUTE_MS));
            let mut summary = Summary::default();
            if m_lo < m_hi {
                dense.clear();
                self.add_minute_range(m_lo, m_hi, &mut summary.agg, &mut dense.0);
                if summary.agg.calls > 0 {
                    summary.latency = dense.latency();
                    summary.ttft = dense.ttft();
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
            Some(g) if covers_all => self.all_time[g].sorted().map(|(k, c)| (k, c.clone())).collect(),
            None if covers_all => self.all_time_keys.sorted().map(|(k, c)| (k, c.to_agg())).collect(),
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
                |ev| (group.key_of(ev), Agg::of_event(ev)),
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
                },
                |ev| (group.key_of(ev), KeyCell::from_agg(&Agg::of_event(ev))),
            ),
        }
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
        let mut edge_cells: FxHashMap<u32, C> = FxHashMap::default();
        for edge in edges.into_iter().filter_map(|e| self.narrow_to_occupied(e)) {
            scan.scan(edge, &mut |ev: &StoredEvent| {
                if edge.contains(ev.ts_ms) {
                    let (key, cell) = cell_of(ev);
                    edge_cells.entry(key).or_default().merge(&cell);
                }
            });
        }
        acc.merge_map(edge_cells);
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
            Some(first.day * DAY_MS + m as i64 * MINUTE_MS + i64::from(s.first_offset_ms))
        })?;
        let max = last.minutes.iter().enumerate().rev().find_map(|(m, s)| {
            let s = s.as_ref()?;
            Some(last.day * DAY_MS + m as i64 * MINUTE_MS + i64::from(s.last_offset_ms))
        })?;
        Some((min, max))
    }

    /// Events held.
    pub fn event_count(&self) -> u64 {
        self.days.iter().map(|d| d.calls).sum()
    }

    /// Approximate heap use in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.days.capacity() * size_of::<DayBlock>()
            + self.days.iter().map(DayBlock::heap_bytes).sum::<usize>()
            + self.all_time.iter().map(OrderedMap::heap_bytes).sum::<usize>()
            + self.all_time_keys.heap_bytes()
            + self.hot.capacity() * size_of::<HotPeriod>()
    }
}
