//! Latency histograms: the public dense [`Histogram`] and the compact forms the time cells keep.
//!
//! Bin scheme (shared by every form): a value `v < 16` has its own bin `v` (exact). A larger
//! value with highest set bit `e` (4 ≤ e ≤ 31) falls into one of 8 equal sub-buckets of
//! `[2^e, 2^(e+1))`: bin `16 + (e - 4) * 8 + ((v >> (e - 3)) & 7)`. That gives 240 bins for the
//! whole `u32` range. A bin of width `w = 2^(e-3)` starting at `lo ≥ 2^e` is represented by
//! `lo + (w - 1) / 2`, so the distance to any value in the bin is at most `w / 2 = 2^(e-4)`,
//! which is at most 1/16 = 6.25 % of the value.
//!
//! A time slot keeps its latency and TTFT histograms together as one [`SlotHist`] over 480
//! keys (key = bin for latency, `BINS + bin` for TTFT): dense counters while the slot is being
//! appended to or busy, else a sorted list of packed `(key, count)` entries. A key's total may
//! exceed what one entry can count; it is then spread over a run of entries of which all but
//! the last are full. That form is canonical (one total gives one run), so two lists holding
//! the same counts are equal element by element.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::saved::fixed::Fixed;

use super::Sign;

/// Number of bins of one histogram.
pub const BINS: usize = 240;
/// Number of keys of a combined latency + TTFT histogram.
pub const KEYS: usize = 2 * BINS;

/// The bin of a value.
#[inline]
pub fn bin_of(v: u32) -> usize {
    if v < 16 {
        v as usize
    } else {
        let e = 31 - v.leading_zeros();
        16 + (e as usize - 4) * 8 + ((v >> (e - 3)) & 7) as usize
    }
}

/// The value that stands for a bin: the middle of its range, rounded down.
pub fn bin_value(bin: usize) -> u32 {
    if bin < 16 {
        return bin as u32;
    }
    let bin = bin.min(BINS - 1);
    let e = ((bin - 16) / 8 + 4) as u32;
    let sub = ((bin - 16) % 8) as u32;
    let width = 1u32 << (e - 3);
    let lo = (8 + sub) << (e - 3);
    lo + (width - 1) / 2
}

/// Mergeable log-linear histogram of `u32` values (milliseconds). See the module doc for the
/// bins; a quantile is off by at most 6.25 % of the true value.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Histogram {
    /// Counters of bins `first..first + counts.len()`; only the span from the lowest to the
    /// highest bin ever recorded is allocated, so a trend's many histograms stay small. Shared
    /// and copied on write: a trend bucket of a frozen hour is a clone of the hour's histograms.
    first: usize,
    counts: Arc<[u64]>,
    count: u64,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram::default()
    }

    pub fn record(&mut self, v: u32, sign: Sign) {
        self.add_bin(bin_of(v), 1, sign);
    }

    /// Widens the allocated span to cover bins `lo..=hi`.
    fn cover(&mut self, lo: usize, hi: usize) {
        if self.counts.is_empty() {
            self.first = lo;
            self.counts = vec![0; hi - lo + 1].into();
            return;
        }
        let end = self.first + self.counts.len();
        if lo < self.first || hi >= end {
            let (first, last) = (lo.min(self.first), hi.max(end - 1));
            let mut counts = vec![0; last + 1 - first];
            counts[self.first - first..end - first].copy_from_slice(&self.counts);
            self.counts = counts.into();
            self.first = first;
        }
    }

    pub(crate) fn add_bin(&mut self, bin: usize, n: u64, sign: Sign) {
        let bin = bin.min(BINS - 1);
        match sign {
            Sign::Add => {
                self.cover(bin, bin);
                let c = &mut Arc::make_mut(&mut self.counts)[bin - self.first];
                *c = c.saturating_add(n);
                self.count = self.count.saturating_add(n);
            }
            Sign::Sub => {
                let Some(c) = bin.checked_sub(self.first).and_then(|i| Arc::make_mut(&mut self.counts).get_mut(i)) else {
                    debug_assert!(false, "histogram: removing a value never recorded");
                    return;
                };
                debug_assert!(*c >= n, "histogram: removing a value never recorded");
                *c = c.saturating_sub(n);
                self.count = self.count.saturating_sub(n);
                if self.count == 0 {
                    *self = Histogram::default();
                }
            }
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        self.cover(other.first, other.first + other.counts.len() - 1);
        let offset = other.first - self.first;
        for (a, b) in Arc::make_mut(&mut self.counts)[offset..].iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.count = self.count.saturating_add(other.count);
    }

    /// Adds its counts into dense counters of its bins (`BINS` of them).
    pub(crate) fn add_to(&self, dense: &mut [u64]) {
        if let Some(span) = dense.get_mut(self.first..self.first + self.counts.len()) {
            for (d, c) in span.iter_mut().zip(self.counts.iter()) {
                *d = d.wrapping_add(*c);
            }
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.counts.len() * size_of::<u64>()
    }

    /// The histogram of dense bin counts, leaving `counts` zero.
    pub(crate) fn take_counts(counts: &mut [u64]) -> Histogram {
        debug_assert_eq!(counts.len(), BINS);
        // Eight bins at a time: most of the range is empty (latencies over a minute are rare).
        const W: usize = 8;
        let any = |c: &[u64]| c.iter().fold(0, |a, &x| a | x) != 0;
        let Some(lo_chunk) = counts.chunks(W).position(any) else { return Histogram::default() };
        let hi_chunk = counts.chunks(W).rposition(any).unwrap_or(lo_chunk);
        let lo = lo_chunk * W + counts[lo_chunk * W..].iter().position(|c| *c != 0).unwrap_or(0);
        let hi = counts[..((hi_chunk + 1) * W).min(counts.len())].iter().rposition(|c| *c != 0).unwrap_or(lo);
        let span = &mut counts[lo..=hi];
        let count = span.iter().fold(0u64, |a, &c| a.saturating_add(c));
        let h = Histogram { first: lo, counts: Arc::from(&*span), count };
        span.fill(0);
        h
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The count of one bin.
    pub fn bin_count(&self, bin: usize) -> u64 {
        bin.checked_sub(self.first).and_then(|i| self.counts.get(i)).copied().unwrap_or(0)
    }

    /// The nearest-rank quantile: the value standing for the bin of the `ceil(q * count)`-th
    /// smallest value (at least the first). `None` when empty or `q` is NaN; `q` is clamped to
    /// `[0, 1]`.
    pub fn quantile(&self, q: f64) -> Option<u32> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // The float product only picks a rank; the bins are then walked exactly.
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(bin_value(self.first + i));
            }
        }
        debug_assert!(false, "histogram: counters add up to less than count");
        None
    }

    /// Non-empty bins with their counts, in value order.
    pub fn bins(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let first = self.first;
        self.counts.iter().enumerate().filter(|(_, c)| **c != 0).map(move |(i, c)| (first + i, *c))
    }
}

impl PartialEq for Histogram {
    fn eq(&self, other: &Histogram) -> bool {
        self.count == other.count && self.bins().eq(other.bins())
    }
}

impl Eq for Histogram {}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("count", &self.count).field("bins", &self.bins().collect::<Vec<_>>()).finish()
    }
}

/// Dense counters of a combined latency + TTFT histogram, the accumulator of range queries.
#[derive(Clone)]
pub struct DenseKeys(pub Box<[u64; KEYS]>);

impl DenseKeys {
    pub fn new() -> DenseKeys {
        DenseKeys(Box::new([0; KEYS]))
    }

    /// The latency and TTFT histograms, leaving the counters zero again (cheaper than reading
    /// and then clearing: only the span between the first and last non-zero bin is touched).
    pub fn take(&mut self) -> (Histogram, Histogram) {
        let (latency, ttft) = self.0.split_at_mut(BINS);
        (Histogram::take_counts(latency), Histogram::take_counts(ttft))
    }
}

/// An entry of a packed run histogram: a key (< 512) and a count of at most `COUNT_MAX`.
/// Saved as a fixed-width little-endian record (`saved::fixed`).
pub trait Packed: Copy + Eq + std::fmt::Debug + Fixed {
    const COUNT_MAX: u32;
    fn pack(key: usize, count: u32) -> Self;
    fn key(self) -> usize;
    fn count(self) -> u32;
}

/// 9-bit key, 7-bit count: a minute slot rarely has more than a hundred values per bin.
impl Packed for u16 {
    const COUNT_MAX: u32 = (1 << 7) - 1;
    #[inline]
    fn pack(key: usize, count: u32) -> u16 {
        ((key as u16) << 7) | count as u16
    }
    #[inline]
    fn key(self) -> usize {
        (self >> 7) as usize
    }
    #[inline]
    fn count(self) -> u32 {
        (self & 0x7f) as u32
    }
}

/// 9-bit key, 23-bit count.
impl Packed for u32 {
    const COUNT_MAX: u32 = (1 << 23) - 1;
    #[inline]
    fn pack(key: usize, count: u32) -> u32 {
        ((key as u32) << 23) | count
    }
    #[inline]
    fn key(self) -> usize {
        (self >> 23) as usize
    }
    #[inline]
    fn count(self) -> u32 {
        self & ((1 << 23) - 1)
    }
}

/// Sorted canonical runs of packed entries (see the module doc).
/// Saved as one byte string of little-endian entries: a copy to load, not a decode per entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct RunHist<E: Packed> {
    #[serde(with = "crate::saved::fixed")]
    entries: Vec<E>,
}

impl<E: Packed> Default for RunHist<E> {
    fn default() -> RunHist<E> {
        RunHist { entries: Vec::new() }
    }
}

impl<E: Packed> RunHist<E> {
    /// The index range of the run of `key`.
    #[inline]
    fn run(&self, key: usize) -> (usize, usize) {
        let start = self.entries.partition_point(|e| e.key() < key);
        let mut end = start;
        while end < self.entries.len() && self.entries[end].key() == key {
            end += 1;
        }
        (start, end)
    }

    #[inline]
    pub fn add(&mut self, key: usize, sign: Sign) {
        let (start, end) = self.run(key);
        match sign {
            Sign::Add => {
                if end > start && self.entries[end - 1].count() < E::COUNT_MAX {
                    let last = self.entries[end - 1];
                    self.entries[end - 1] = E::pack(key, last.count() + 1);
                } else {
                    self.entries.insert(end, E::pack(key, 1));
                }
            }
            Sign::Sub => {
                if end == start {
                    debug_assert!(false, "histogram cell: removing a value never recorded");
                    return;
                }
                let last = self.entries[end - 1];
                if last.count() > 1 {
                    self.entries[end - 1] = E::pack(key, last.count() - 1);
                } else {
                    self.entries.remove(end - 1);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn add_to(&self, dense: &mut [u64; KEYS]) {
        for e in &self.entries {
            let slot = &mut dense[e.key()];
            *slot = slot.wrapping_add(e.count() as u64);
        }
    }

    /// (key, total) pairs in key order, runs summed.
    pub fn totals(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            let first = *self.entries.get(i)?;
            let mut total = 0u64;
            while i < self.entries.len() && self.entries[i].key() == first.key() {
                total = total.wrapping_add(self.entries[i].count() as u64);
                i += 1;
            }
            Some((first.key(), total))
        })
    }

    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<E>()
    }
}

/// The histogram of a time slot: dense while the slot is being appended to (or busy), else
/// sorted runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SlotHist<E: Packed> {
    Runs(RunHist<E>),
    Dense(#[serde(with = "crate::saved::boxed_array")] Box<[u64; KEYS]>),
}

impl<E: Packed> Default for SlotHist<E> {
    fn default() -> SlotHist<E> {
        SlotHist::Runs(RunHist::default())
    }
}

impl<E: Packed> SlotHist<E> {
    pub fn dense() -> SlotHist<E> {
        SlotHist::Dense(Box::new([0; KEYS]))
    }

    /// Counts a key; runs longer than `dense_above` entries turn dense, where an update costs
    /// no search and no shifting.
    #[inline(always)]
    pub fn add(&mut self, key: usize, sign: Sign, dense_above: usize) {
        // The append fast path inline; the rest out of line.
        if let (SlotHist::Dense(d), Sign::Add) = (&mut *self, sign)
            && let Some(count) = d.get_mut(key)
        {
            *count = count.wrapping_add(1);
            return;
        }
        self.add_slow(key, sign, dense_above);
    }

    #[inline(never)]
    fn add_slow(&mut self, key: usize, sign: Sign, dense_above: usize) {
        match self {
            SlotHist::Dense(d) => match sign {
                Sign::Add => d[key] = d[key].wrapping_add(1),
                Sign::Sub => {
                    debug_assert!(d[key] > 0, "histogram cell: removing a value never recorded");
                    d[key] = d[key].wrapping_sub(1);
                }
            },
            SlotHist::Runs(runs) => {
                runs.add(key, sign);
                if runs.len() > dense_above {
                    self.make_dense();
                }
            }
        }
    }

    pub fn make_dense(&mut self) {
        if let SlotHist::Runs(runs) = self {
            let mut d = Box::new([0u64; KEYS]);
            runs.add_to(&mut d);
            *self = SlotHist::Dense(d);
        }
    }

    /// Turns dense counters back into runs when they need at most `runs_max` entries.
    pub fn compact(&mut self, runs_max: usize) {
        let SlotHist::Dense(d) = self else { return };
        let max = u64::from(E::COUNT_MAX);
        let mut runs = Vec::with_capacity(64);
        for (key, &count) in d.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let mut left = count;
            while left > 0 {
                let n = left.min(max);
                runs.push(E::pack(key, n as u32));
                left -= n;
            }
            if runs.len() > runs_max {
                return;
            }
        }
        runs.shrink_to_fit();
        *self = SlotHist::Runs(RunHist { entries: runs });
    }

    pub fn is_empty(&self) -> bool {
        match self {
            SlotHist::Dense(d) => d.iter().all(|c| *c == 0),
            SlotHist::Runs(r) => r.is_empty(),
        }
    }

    pub fn add_to(&self, dense: &mut [u64; KEYS]) {
        match self {
            SlotHist::Dense(d) => {
                for (a, b) in dense.iter_mut().zip(d.iter()) {
                    *a = a.wrapping_add(*b);
                }
            }
            SlotHist::Runs(r) => r.add_to(dense),
        }
    }

    fn totals(&self) -> Box<dyn Iterator<Item = (usize, u64)> + '_> {
        match self {
            SlotHist::Dense(d) => Box::new(d.iter().enumerate().filter(|(_, c)| **c != 0).map(|(k, c)| (k, *c))),
            SlotHist::Runs(r) => Box::new(r.totals()),
        }
    }

    pub fn shrink_to_fit(&mut self) {
        if let SlotHist::Runs(r) = self {
            r.shrink_to_fit();
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            SlotHist::Dense(_) => KEYS * 8,
            SlotHist::Runs(r) => r.heap_bytes(),
        }
    }
}

/// Equal when the counts are, whichever form holds them.
impl<E: Packed> PartialEq for SlotHist<E> {
    fn eq(&self, other: &SlotHist<E>) -> bool {
        match (self, other) {
            (SlotHist::Runs(a), SlotHist::Runs(b)) => a == b,
            _ => self.totals().eq(other.totals()),
        }
    }
}
