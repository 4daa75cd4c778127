//! Breakdown cells: group key → additive cell, in the forms the views keep them.
//!
//! - [`CellMap`] (hourly groups): hot, a [`HotCells`] (vector + hash index + direct-mapped
//!   cache); frozen, a sorted `Vec`, about half the memory. A frozen map takes writes in place.
//! - [`KeyMap`] (Key per day): hot, a hash map; frozen, varint-packed bytes, about a quarter of
//!   the memory. A frozen map takes writes by thawing first.
//! - [`KeyTotals`]: all-time Key cells with each key's latest-hour cells inline.
//! - [`HourKeys`] (Key per hour): hot, an append log of cells, summed by key when it fills up;
//!   frozen, a [`HeavyKeys`]: the exact cells of the heaviest keys and bounds for the others
//!   (days keep one too).
//!
//! Equality is by content, never by form.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Agg, Sign};
use crate::event::StoredEvent;

/// An additive value kept per group key. Sums are modulo 2^64 (wrapping): adding and
/// removing are then exact inverses in any order, and the adds vectorise. Removing more than
/// was added is a caller bug, caught by `debug_assert!`.
pub trait Cell: Clone + Default + PartialEq + std::fmt::Debug {
    fn merge(&mut self, other: &Self);
    fn unmerge(&mut self, other: &Self);
    fn is_zero(&self) -> bool;
    fn to_agg(&self) -> Agg;
}

/// Wrapping element-wise sums of `N` counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters<const N: usize>(pub [u64; N]);

/// Saved as one byte string: a varint mask of the counters that are not zero, then each of
/// those as a varint. Most are zero (errors, cache tokens, rare qualities), and reading one
/// string beats a serde call per counter (the views hold hundreds of thousands of cells).
impl<const N: usize> Serialize for Counters<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const { assert!(N <= 32, "the mask is a u32") };
        let mut out = Vec::with_capacity(5 + 10 * N);
        let mask = self.0.iter().enumerate().filter(|(_, c)| **c != 0).fold(0u64, |m, (i, _)| m | 1 << i);
        put_varint(&mut out, mask);
        self.0.iter().filter(|c| **c != 0).for_each(|c| put_varint(&mut out, *c));
        s.serialize_bytes(&out)
    }
}

impl<'de, const N: usize> Deserialize<'de> for Counters<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Counters<N>, D::Error> {
        struct Visit<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for Visit<N> {
            type Value = Counters<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "{N} counters")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Counters<N>, E> {
                const { assert!(N <= 32, "the mask is a u32") };
                let bad = || E::invalid_value(serde::de::Unexpected::Bytes(b), &self);
                let mut pos = 0;
                let mask = get_varint(b, &mut pos).filter(|m| *m >> N == 0).ok_or_else(bad)?;
                let mut c = [0u64; N];
                for (i, v) in c.iter_mut().enumerate() {
                    if mask >> i & 1 == 1 {
                        *v = get_varint(b, &mut pos).ok_or_else(bad)?;
                    }
                }
                if pos != b.len() {
                    return Err(bad());
                }
                Ok(Counters(c))
            }
        }
        d.deserialize_bytes(Visit::<N>)
    }
}

impl<const N: usize> Default for Counters<N> {
    fn default() -> Counters<N> {
        Counters([0; N])
    }
}

impl<const N: usize> Counters<N> {
    #[inline(always)]
    fn add(&mut self, o: &Counters<N>) {
        // Whole-array load, add, store: this form vectorises (an in-place loop compiles to
        // one scalar read-modify-write per counter).
        let mut sum = self.0;
        for (a, b) in sum.iter_mut().zip(&o.0) {
            *a = a.wrapping_add(*b);
        }
        self.0 = sum;
    }
    #[inline]
    fn sub(&mut self, o: &Counters<N>) {
        // Both cell kinds start with calls and errors, the counters that cannot wrap; the token
        // and latency sums may legitimately have wrapped.
        debug_assert!(self.0.iter().zip(&o.0).take(2).all(|(a, b)| a >= b), "cell: removing more than was added");
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a = a.wrapping_sub(*b);
        }
    }
    #[inline]
    fn is_zero(&self) -> bool {
        self.0.iter().all(|c| *c == 0)
    }
}

/// [`Agg`] as one flat array: calls, errors, 6 tokens, latency sum, TTFT sum, TTFT calls,
/// stream calls, 4 quality counts.
pub type AggCell = Counters<16>;

impl AggCell {
    pub fn of_event(ev: &StoredEvent) -> AggCell {
        let t = ev.tokens.to_array();
        // The quality counters by comparison, not by an indexed store: a narrow store into the
        // array stalls the wide loads that copy it (store forwarding fails).
        let q = (ev.quality as usize).min(3);
        Counters([
            1,
            u64::from(!ev.success),
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            t[5],
            u64::from(ev.latency_ms),
            u64::from(ev.ttft_ms.unwrap_or(0)),
            u64::from(ev.ttft_ms.is_some()),
            u64::from(ev.stream),
            u64::from(q == 0),
            u64::from(q == 1),
            u64::from(q == 2),
            u64::from(q == 3),
        ])
    }

    pub fn calls(&self) -> u64 {
        self.0[0]
    }
}

/// Both cell sizes share one implementation: a cell is a prefix of the `Agg` counters (calls,
/// errors, 6 tokens, latency sum, then TTFT sum, TTFT calls, stream calls, 4 quality counts).
impl<const N: usize> Cell for Counters<N> {
    #[inline]
    fn merge(&mut self, other: &Self) {
        self.add(other);
    }
    #[inline]
    fn unmerge(&mut self, other: &Self) {
        self.sub(other);
    }
    #[inline]
    fn is_zero(&self) -> bool {
        Counters::is_zero(self)
    }
    fn to_agg(&self) -> Agg {
        const { assert!(N <= 16) };
        let mut c = [0u64; 16];
        c[..N].copy_from_slice(&self.0);
        Agg {
            calls: c[0],
            errors: c[1],
            tokens: [c[2], c[3], c[4], c[5], c[6], c[7]],
            latency_sum_ms: c[8],
            ttft_sum_ms: c[9],
            ttft_calls: c[10],
            stream_calls: c[11],
            quality_calls: [c[12], c[13], c[14], c[15]],
        }
    }
}

/// The smaller cell of the Key breakdown: calls, errors, 6 tokens, latency sum; no TTFT,
/// stream or quality counters.
pub type KeyCell = Counters<9>;

impl KeyCell {
    pub fn from_agg_cell(a: &AggCell) -> KeyCell {
        let mut c = [0; 9];
        c.copy_from_slice(&a.0[..9]);
        Counters(c)
    }
}


/// Approximate heap bytes of a hashbrown table with `capacity` usable slots of `T`.
pub fn hash_table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity.saturating_mul(8) / 7).max(4).next_power_of_two();
    buckets * (size_of::<T>() + 1)
}

#[inline(always)]
fn apply_hot<C: Cell>(map: &mut FxHashMap<u32, C>, key: u32, delta: &C, sign: Sign) {
    match sign {
        Sign::Add => match map.get_mut(&key) {
            Some(cell) => cell.merge(delta),
            None => {
                map.insert(key, delta.clone());
            }
        },
        Sign::Sub => {
            let Some(cell) = map.get_mut(&key) else {
                debug_assert!(false, "cell map: removing from a key never added");
                return;
            };
            cell.unmerge(delta);
            if cell.is_zero() {
                map.remove(&key);
            }
        }
    }
}

fn sorted_from_map<C: Cell>(map: &FxHashMap<u32, C>) -> Vec<(u32, C)> {
    let mut v: Vec<(u32, C)> = map.iter().map(|(k, c)| (*k, c.clone())).collect();
    v.sort_unstable_by_key(|(k, _)| *k);
    v
}

/// Slots of the direct-mapped cache of a [`HotCells`].
const RECENT_SLOTS: usize = 64;

/// The cells of a hot map: a `Vec`, a hash index, and in front of the index a direct-mapped
/// cache of positions. A low-cardinality group almost always hits the cache, which skips the
/// hash probe on the append path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HotCells<C> {
    cells: Vec<(u32, C)>,
    index: FxHashMap<u32, u32>,
    /// Position in `cells` by key slot; checked against the key, so stale entries are harmless.
    #[serde(with = "crate::saved::arrays")]
    recent: [u32; RECENT_SLOTS],
}

impl<C: Cell> Default for HotCells<C> {
    fn default() -> HotCells<C> {
        HotCells { cells: Vec::new(), index: FxHashMap::default(), recent: [u32::MAX; RECENT_SLOTS] }
    }
}

impl<C: Cell> HotCells<C> {
    #[inline(always)]
    fn slot(key: u32) -> usize {
        (key.wrapping_mul(0x9e37_79b1) >> (32 - RECENT_SLOTS.trailing_zeros())) as usize
    }

    #[inline(always)]
    fn position(&mut self, key: u32) -> Option<usize> {
        let slot = Self::slot(key);
        let cached = self.recent[slot] as usize;
        if self.cells.get(cached).is_some_and(|(k, _)| *k == key) {
            return Some(cached);
        }
        let found = *self.index.get(&key)? as usize;
        self.recent[slot] = found as u32;
        Some(found)
    }

    #[inline(always)]
    pub fn apply(&mut self, key: u32, delta: &C, sign: Sign) {
        match (self.position(key), sign) {
            (Some(i), Sign::Add) => self.cells[i].1.merge(delta),
            (None, Sign::Add) => {
                let i = self.cells.len();
                self.cells.push((key, delta.clone()));
                self.index.insert(key, i as u32);
                self.recent[Self::slot(key)] = i as u32;
            }
            (Some(i), Sign::Sub) => {
                self.cells[i].1.unmerge(delta);
                if self.cells[i].1.is_zero() {
                    self.cells.swap_remove(i);
                    self.index.remove(&key);
                    if let Some((moved, _)) = self.cells.get(i) {
                        self.index.insert(*moved, i as u32);
                    }
                }
            }
            (None, Sign::Sub) => debug_assert!(false, "cell map: removing from a key never added"),
        }
    }

    fn get(&self, key: u32) -> Option<&C> {
        self.index.get(&key).and_then(|i| self.cells.get(*i as usize)).map(|(_, c)| c)
    }

    pub fn sorted(&self) -> Vec<(u32, C)> {
        let mut v = self.cells.clone();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    fn heap_bytes(&self) -> usize {
        self.cells.capacity() * size_of::<(u32, C)>() + hash_table_bytes::<(u32, u32)>(self.index.capacity())
    }
}

/// Group key → cell, hot or sorted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CellMap<C> {
    /// Boxed: hours are mostly frozen, and the frozen form is small.
    Hot(Box<HotCells<C>>),
    Sorted(Vec<(u32, C)>),
}

impl<C: Cell> CellMap<C> {
    pub fn new(hot: bool) -> CellMap<C> {
        if hot { CellMap::Hot(Box::default()) } else { CellMap::Sorted(Vec::new()) }
    }

    #[inline(always)]
    pub fn apply(&mut self, key: u32, delta: &C, sign: Sign) {
        match self {
            CellMap::Hot(hot) => hot.apply(key, delta, sign),
            CellMap::Sorted(v) => match (v.binary_search_by_key(&key, |(k, _)| *k), sign) {
                (Ok(i), Sign::Add) => v[i].1.merge(delta),
                (Err(i), Sign::Add) => v.insert(i, (key, delta.clone())),
                (Ok(i), Sign::Sub) => {
                    v[i].1.unmerge(delta);
                    if v[i].1.is_zero() {
                        v.remove(i);
                    }
                }
                (Err(_), Sign::Sub) => debug_assert!(false, "cell map: removing from a key never added"),
            },
        }
    }

    /// The cells in key order, whatever the form.
    pub fn sorted(&self) -> std::borrow::Cow<'_, [(u32, C)]> {
        match self {
            CellMap::Sorted(v) => std::borrow::Cow::Borrowed(v),
            CellMap::Hot(hot) => std::borrow::Cow::Owned(hot.sorted()),
        }
    }

    pub fn thaw(&mut self) {
        if let CellMap::Sorted(v) = self {
            let mut hot = Box::<HotCells<C>>::default();
            for (key, cell) in v.drain(..) {
                hot.apply(key, &cell, Sign::Add);
            }
            *self = CellMap::Hot(hot);
        }
    }

    pub fn freeze(&mut self) {
        if let CellMap::Hot(hot) = self {
            let mut v = hot.sorted();
            v.shrink_to_fit();
            *self = CellMap::Sorted(v);
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CellMap::Hot(hot) => hot.cells.len(),
            CellMap::Sorted(v) => v.len(),
        }
    }

    pub fn get(&self, key: u32) -> Option<&C> {
        match self {
            CellMap::Hot(hot) => hot.get(key),
            CellMap::Sorted(v) => v.binary_search_by_key(&key, |(k, _)| *k).ok().map(|i| &v[i].1),
        }
    }

    pub fn merge_into(&self, acc: &mut SortedAcc<C>) {
        acc.merge_sorted(self.sorted().iter().map(|(k, c)| (*k, c)));
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            CellMap::Hot(hot) => size_of::<HotCells<C>>() + hot.heap_bytes(),
            CellMap::Sorted(v) => v.capacity() * size_of::<(u32, C)>(),
        }
    }
}

/// Equal when the cells are, whichever form holds them.
impl<C: Cell> PartialEq for CellMap<C> {
    fn eq(&self, other: &CellMap<C>) -> bool {
        self.len() == other.len() && self.sorted().iter().all(|(k, c)| other.get(*k) == Some(c))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint written by `put_varint`; `None` on a truncated one (never for our own bytes).
fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        // Ten bytes hold 64 bits: a longer varint, or bits past the 64th, is not one we wrote.
        if shift > 63 || (shift == 63 && b > 1) {
            return None;
        }
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
    }
}

/// Key cells of a frozen day, as varints: key delta, then the nine fields of [`KeyCell`].
/// The encoding of a given content is unique, so equal bytes mean equal content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedKeys {
    #[serde(with = "crate::saved::bytes")]
    bytes: Box<[u8]>,
    len: usize,
}

impl PackedKeys {
    fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }

    fn encode(sorted: &[(u32, KeyCell)]) -> PackedKeys {
        let mut out = Vec::with_capacity(sorted.len() * 16);
        let mut previous = 0u32;
        for (key, cell) in sorted {
            put_varint(&mut out, (key - previous) as u64);
            previous = *key;
            for f in cell.0 {
                put_varint(&mut out, f);
            }
        }
        PackedKeys { bytes: out.into_boxed_slice(), len: sorted.len() }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, KeyCell)> + '_ {
        let mut pos = 0usize;
        let mut key = 0u32;
        std::iter::from_fn(move || {
            if pos >= self.bytes.len() {
                return None;
            }
            key = key.wrapping_add(get_varint(&self.bytes, &mut pos)? as u32);
            let mut f = [0u64; 9];
            for x in &mut f {
                *x = get_varint(&self.bytes, &mut pos)?;
            }
            Some((key, Counters(f)))
        })
    }
}

/// Key → cell of one day: hot, or packed once the day is old.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum KeyMap {
    Hot(FxHashMap<u32, KeyCell>),
    Packed(PackedKeys),
}

impl KeyMap {
    /// Returns true when the map had to turn hot.
    #[inline]
    pub fn apply(&mut self, key: u32, delta: &KeyCell, sign: Sign) -> bool {
        let thawed = self.thaw();
        if let KeyMap::Hot(map) = self {
            apply_hot(map, key, delta, sign);
        }
        thawed
    }

    /// Returns true when it was packed.
    pub fn thaw(&mut self) -> bool {
        match self {
            KeyMap::Hot(_) => false,
            KeyMap::Packed(p) => {
                let mut map = FxHashMap::default();
                map.reserve(p.len);
                map.extend(p.iter());
                *self = KeyMap::Hot(map);
                true
            }
        }
    }

    pub fn freeze(&mut self) {
        if let KeyMap::Hot(map) = self {
            *self = KeyMap::Packed(PackedKeys::encode(&sorted_from_map(map)));
        }
    }

    /// The cells in key order.
    pub fn sorted(&self) -> Vec<(u32, KeyCell)> {
        match self {
            KeyMap::Packed(p) => p.iter().collect(),
            KeyMap::Hot(m) => sorted_from_map(m),
        }
    }

    pub fn merge_into(&self, acc: &mut SortedAcc<KeyCell>) {
        acc.merge_sorted(self.sorted().iter().map(|(k, c)| (*k, c)));
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            KeyMap::Hot(m) => hash_table_bytes::<(u32, KeyCell)>(m.capacity()),
            KeyMap::Packed(p) => p.bytes.len(),
        }
    }
}

impl Default for KeyMap {
    fn default() -> KeyMap {
        KeyMap::Hot(FxHashMap::default())
    }
}

impl PartialEq for KeyMap {
    fn eq(&self, other: &KeyMap) -> bool {
        match (self, other) {
            (KeyMap::Packed(a), KeyMap::Packed(b)) => a == b,
            (KeyMap::Hot(a), KeyMap::Hot(b)) => a == b,
            (KeyMap::Packed(p), KeyMap::Hot(m)) | (KeyMap::Hot(m), KeyMap::Packed(p)) => {
                p.len == m.len() && p.iter().all(|(k, c)| m.get(&k) == Some(&c))
            }
        }
    }
}

/// All-time group key → cell, with the keys kept sorted so a whole breakdown needs no sort.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OrderedMap<C> {
    map: FxHashMap<u32, C>,
    /// Sorted; changes only when a key appears or disappears, which is rare.
    keys: Vec<u32>,
}

impl<C: Cell> OrderedMap<C> {
    #[inline]
    pub fn apply(&mut self, key: u32, delta: &C, sign: Sign) {
        let before = self.map.len();
        apply_hot(&mut self.map, key, delta, sign);
        let after = self.map.len();
        if after > before
            && let Err(i) = self.keys.binary_search(&key)
        {
            self.keys.insert(i, key);
        } else if after < before
            && let Ok(i) = self.keys.binary_search(&key)
        {
            self.keys.remove(i);
        }
    }

    pub fn sorted(&self) -> impl Iterator<Item = (u32, &C)> + '_ {
        self.keys.iter().filter_map(|k| Some((*k, self.map.get(k)?)))
    }

    pub fn heap_bytes(&self) -> usize {
        hash_table_bytes::<(u32, C)>(self.map.capacity()) + self.keys.capacity() * 4
    }
}

impl<C: Cell> PartialEq for OrderedMap<C> {
    fn eq(&self, other: &OrderedMap<C>) -> bool {
        self.map == other.map
    }
}

/// 32-bit cells, as kept inline: what would not fit goes to the maps directly.
type Cell32 = [u32; 9];

#[inline(always)]
fn cell32_is_empty(c: &Cell32) -> bool {
    c.iter().fold(0, |a, x| a | x) == 0
}

fn cell32_to_cell(c: &Cell32) -> KeyCell {
    Counters(c.map(u64::from))
}

/// `a + b` if every sum fits in 32 bits.
#[inline(always)]
fn cell32_sum(a: &Cell32, b: &KeyCell) -> Option<Cell32> {
    let mut sum = [0u32; 9];
    let mut fits = true;
    for ((s, x), y) in sum.iter_mut().zip(a).zip(&b.0) {
        let t = u64::from(*x).wrapping_add(*y);
        fits &= t <= u64::from(u32::MAX) && *y <= u64::from(u32::MAX);
        *s = t as u32;
    }
    fits.then_some(sum)
}

const HOURS_PER_DAY: i32 = 24;

/// The hour index (UTC hours since the epoch) of an hour of a day, if it fits inline.
fn hour_at(day: i64, hour: usize) -> Option<i32> {
    day.checked_mul(i64::from(HOURS_PER_DAY)).and_then(|h| i32::try_from(h + hour as i64).ok())
}

fn day_of(at: i32) -> i64 {
    i64::from(at.div_euclid(HOURS_PER_DAY))
}

fn hour_of(at: i32) -> usize {
    at.rem_euclid(HOURS_PER_DAY) as usize
}

/// A key's inline hour cell in [`KeyTotals`]: what it did in hour `at` (its latest hour when
/// set) not yet moved on. Kept small (40 bytes), as every append reads and writes one.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Slot {
    at: i32,
    cell: Cell32,
}

/// Keys' cells of a hot hour `at`, moved out of their inline cells.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    at: i32,
    cells: Vec<(u32, Cell32)>,
}

/// Adds to the pending cells of hour `at`: almost always the newest hot hour, so the search
/// from the back is short.
fn push_pending(pending: &mut Vec<Pending>, at: i32, key: u32, cell: Cell32) {
    match pending.iter_mut().rev().find(|p| p.at == at) {
        Some(p) => p.cells.push((key, cell)),
        None => {
            let mut cells = Vec::with_capacity(1024);
            cells.push((key, cell));
            pending.push(Pending { at, cells });
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DayMove {
    pub day: i64,
    pub key: u32,
    pub cell: KeyCell,
}

/// What the caller must do after [`KeyTotals::add`] or [`KeyTotals::sub`]: add former inline
/// cells to a day's Key map, and for `direct`, add the event itself to its hour's and day's
/// Key cells (it is not inline).
#[derive(Debug, Default)]
pub struct KeyOutcome {
    pub to_day: Option<DayMove>,
    pub direct: bool,
}

/// Key → position: a direct table for the small keys (interned symbols are dense from 0), of at
/// most `DIRECT_PER_KEY` entries per key when it grew (or `DIRECT_MIN`; it is dropped when the
/// last key goes), and a hash map for the rest. An append then finds its key with one load, not
/// a hash probe, in less memory than the map would take.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct PosIndex {
    /// Position by key below `direct.len()`; `u32::MAX` when absent.
    direct: Vec<u32>,
    spill: FxHashMap<u32, u32>,
    len: usize,
}

const DIRECT_MIN: usize = 1024;
const DIRECT_PER_KEY: usize = 2;

impl PosIndex {
    #[inline(always)]
    fn get(&self, key: u32) -> Option<u32> {
        match self.direct.get(key as usize) {
            Some(&pos) => (pos != u32::MAX).then_some(pos),
            None => self.spill.get(&key).copied(),
        }
    }

    /// Sets the position of a key, new or not.
    fn insert(&mut self, key: u32, pos: u32) {
        let k = key as usize;
        if let Some(slot) = self.direct.get_mut(k) {
            self.len += usize::from(*slot == u32::MAX);
            *slot = pos;
            return;
        }
        if let Some(slot) = self.spill.get_mut(&key) {
            *slot = pos;
            return;
        }
        self.len += 1;
        let limit = (self.len * DIRECT_PER_KEY).max(DIRECT_MIN);
        if k < limit {
            // Grow the table to cover `key`, moving in the spilled keys it now covers.
            let new_len = (k + 1).next_power_of_two().max(DIRECT_MIN).min(limit.max(k + 1));
            self.direct.resize(new_len, u32::MAX);
            self.direct[k] = pos;
            let direct = &mut self.direct;
            self.spill.retain(|key, pos| match direct.get_mut(*key as usize) {
                Some(slot) => {
                    *slot = *pos;
                    false
                }
                None => true,
            });
        } else {
            self.spill.insert(key, pos);
        }
    }

    fn remove(&mut self, key: u32) -> Option<u32> {
        let removed = match self.direct.get_mut(key as usize) {
            Some(slot) => (*slot != u32::MAX).then(|| std::mem::replace(slot, u32::MAX)),
            None => self.spill.remove(&key),
        };
        if removed.is_some() {
            self.len -= 1;
            if self.len == 0 {
                *self = PosIndex::default();
            }
        }
        removed
    }

    fn heap_bytes(&self) -> usize {
        self.direct.capacity() * 4 + hash_table_bytes::<(u32, u32)>(self.spill.capacity())
    }
}

/// All-time Key cells. A key's all-time cell is `settled + inline + day_rest`, and an in-order
/// append touches only the key's small inline [`Slot`] (400 KB for 10k keys, so it stays in
/// cache) instead of cells in three large hash maps (the hour's, the day's and the all-time
/// one):
/// - the inline hour cell moves out when the key is next seen in a later hour, its hour
///   freezes, or its 32-bit sums are full (the key then starts over inline in the same hour):
///   to `pending` (the hour takes it when it freezes) and to `day_rest`, the key's cells of the
///   earlier hours of the same day;
/// - `day_rest` and the hour cell move to their day's map when the key is next seen on a later
///   day, when the day freezes, and before a removal from the day.
///
/// Inline and pending cells only ever belong to hours whose Key cells are hot
/// ([`HourKeys::Hot`]), so a frozen hour's cells are whole. Keys are also kept sorted, so the
/// all-time breakdown needs no sort.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyTotals {
    /// Key → position in the vectors below.
    index: PosIndex,
    inline: Vec<Slot>,
    /// Of the day of the inline hour.
    day_rest: Vec<Cell32>,
    settled: Vec<KeyCell>,
    key_at: Vec<u32>,
    /// (key, position), sorted by key; changes only when a key appears or disappears, which
    /// is rare. The all-time breakdown walks it without a hash probe or a sort.
    sorted: Vec<(u32, u32)>,
    pending: Vec<Pending>,
}

impl KeyTotals {
    fn remove(&mut self, key: u32) {
        let Some(i) = self.index.remove(key) else { return };
        let i = i as usize;
        self.inline.swap_remove(i);
        self.day_rest.swap_remove(i);
        self.settled.swap_remove(i);
        self.key_at.swap_remove(i);
        if let Ok(at) = self.sorted.binary_search_by_key(&key, |(k, _)| *k) {
            self.sorted.remove(at);
        }
        if let Some(&moved) = self.key_at.get(i) {
            self.index.insert(moved, i as u32);
            if let Ok(at) = self.sorted.binary_search_by_key(&moved, |(k, _)| *k) {
                self.sorted[at].1 = i as u32;
            }
        }
    }

    /// Everything inline at a position, all of it of the day of its inline hour.
    fn inline_day_cell(&self, pos: usize) -> KeyCell {
        let mut c = cell32_to_cell(&self.day_rest[pos]);
        c.merge(&cell32_to_cell(&self.inline[pos].cell));
        c
    }

    /// Moves a key's inline hour cell to `pending` and to `day_rest`, or on to the day's map
    /// (returned) when the 32-bit sums would not fit.
    fn close_hour(
        slot: &mut Slot,
        key: u32,
        day_rest: &mut Cell32,
        settled: &mut KeyCell,
        pending: &mut Vec<Pending>,
    ) -> Option<DayMove> {
        if cell32_is_empty(&slot.cell) {
            return None;
        }
        push_pending(pending, slot.at, key, slot.cell);
        let cell = cell32_to_cell(&slot.cell);
        slot.cell = [0; 9];
        match cell32_sum(day_rest, &cell) {
            Some(sum) => {
                *day_rest = sum;
                None
            }
            None => {
                let mut moved = cell32_to_cell(day_rest);
                moved.merge(&cell);
                *day_rest = [0; 9];
                settled.merge(&moved);
                Some(DayMove { day: day_of(slot.at), key, cell: moved })
            }
        }
    }

    /// Moves all of a key's inline cells out: the hour cell to `pending`, the day's to the
    /// day's map (returned).
    fn settle(
        slot: &mut Slot,
        key: u32,
        day_rest: &mut Cell32,
        settled: &mut KeyCell,
        pending: &mut Vec<Pending>,
    ) -> Option<DayMove> {
        if !cell32_is_empty(&slot.cell) {
            push_pending(pending, slot.at, key, slot.cell);
        }
        let mut cell = cell32_to_cell(day_rest);
        cell.merge(&cell32_to_cell(&slot.cell));
        slot.cell = [0; 9];
        *day_rest = [0; 9];
        if cell.is_zero() {
            return None;
        }
        settled.merge(&cell);
        Some(DayMove { day: day_of(slot.at), key, cell })
    }

    /// Adds an event of `hour` of `day`: inline when the hour's Key cells are hot (`hour_hot`),
    /// it is not earlier than the key's inline hour and the 32-bit sums fit; else settled.
    #[inline]
    pub fn add(&mut self, key: u32, day: i64, hour: usize, hour_hot: bool, delta: &KeyCell) -> KeyOutcome {
        let at = hour_at(day, hour).filter(|_| hour_hot);
        let KeyTotals { index, inline, day_rest, settled, key_at, sorted, pending } = self;
        let next = key_at.len() as u32;
        let pos = match index.get(key) {
            Some(pos) => pos as usize,
            None => {
                index.insert(key, next);
                next as usize
            }
        };
        if pos == next as usize {
            inline.push(Slot::default());
            day_rest.push([0; 9]);
            settled.push(KeyCell::default());
            key_at.push(key);
            if let Err(i) = sorted.binary_search_by_key(&key, |(k, _)| *k) {
                sorted.insert(i, (key, next));
            }
        }
        let slot = &mut inline[pos];
        let mut outcome = KeyOutcome::default();
        let inlined = match at {
            Some(at) if at == slot.at => match cell32_sum(&slot.cell, delta) {
                Some(sum) => {
                    slot.cell = sum;
                    true
                }
                // The hour's 32-bit sums are full: they move on as for a later hour, and the
                // key starts over inline in the same hour.
                None => match cell32_sum(&[0; 9], delta) {
                    Some(fresh) => {
                        let (day_rest, settled) = (&mut day_rest[pos], &mut settled[pos]);
                        outcome.to_day = KeyTotals::close_hour(slot, key, day_rest, settled, pending);
                        slot.cell = fresh;
                        true
                    }
                    None => false,
                },
            },
            Some(at) if at > slot.at || (cell32_is_empty(&slot.cell) && cell32_is_empty(&day_rest[pos])) => {
                // The key's first event of a later hour: its earlier cells move on.
                let (day_rest, settled) = (&mut day_rest[pos], &mut settled[pos]);
                outcome.to_day = if day_of(at) == day_of(slot.at) {
                    KeyTotals::close_hour(slot, key, day_rest, settled, pending)
                } else {
                    KeyTotals::settle(slot, key, day_rest, settled, pending)
                };
                slot.at = at;
                match cell32_sum(&[0; 9], delta) {
                    Some(sum) => {
                        slot.cell = sum;
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if !inlined {
            settled[pos].merge(delta);
            outcome.direct = true;
        }
        outcome
    }

    /// Removes an event of `day`, first settling the key's inline cells if they belong to
    /// `day` (the caller adds those to the day's map before removing the event there).
    pub fn sub(&mut self, key: u32, day: i64, delta: &KeyCell) -> KeyOutcome {
        let mut outcome = KeyOutcome::default();
        let Some(pos) = self.index.get(key) else {
            debug_assert!(false, "key totals: removing a key never added");
            return outcome;
        };
        let pos = pos as usize;
        let slot = &mut self.inline[pos];
        if day_of(slot.at) == day {
            outcome.to_day =
                KeyTotals::settle(slot, key, &mut self.day_rest[pos], &mut self.settled[pos], &mut self.pending);
        }
        let slot = *slot;
        let empty = cell32_is_empty(&slot.cell) && cell32_is_empty(&self.day_rest[pos]);
        self.settled[pos].unmerge(delta);
        if self.settled[pos].is_zero() && empty {
            self.remove(key);
        }
        outcome
    }

    fn all_time(&self, pos: usize) -> KeyCell {
        let mut all = self.settled[pos];
        all.merge(&self.inline_day_cell(pos));
        all
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.key_at.len()
    }

    /// The all-time cell of a key.
    pub fn cell_of(&self, key: u32) -> Option<KeyCell> {
        self.index.get(key).map(|pos| self.all_time(pos as usize))
    }

    /// All-time cells in key order.
    pub fn sorted(&self) -> impl Iterator<Item = (u32, KeyCell)> + '_ {
        self.sorted.iter().map(|&(key, pos)| (key, self.all_time(pos as usize)))
    }

    /// Settles the inline cells of `day` and returns those for the day's map.
    pub fn take_inline_day(&mut self, day: i64) -> Vec<DayMove> {
        let mut moves = Vec::new();
        let KeyTotals { inline, day_rest, settled, key_at, pending, .. } = self;
        for (pos, slot) in inline.iter_mut().enumerate() {
            if day_of(slot.at) == day {
                moves.extend(KeyTotals::settle(slot, key_at[pos], &mut day_rest[pos], &mut settled[pos], pending));
            }
        }
        moves
    }

    /// Takes the cells of a hot hour held here (pending and inline), for it to freeze; also
    /// returns those that must go on to the day's map as they no longer fit inline.
    pub fn take_hour(&mut self, day: i64, hour: usize) -> (Vec<(u32, KeyCell)>, Vec<DayMove>) {
        let Some(at) = hour_at(day, hour) else { return (Vec::new(), Vec::new()) };
        let mut days = Vec::new();
        let KeyTotals { inline, day_rest, settled, key_at, pending, .. } = self;
        for (pos, slot) in inline.iter_mut().enumerate() {
            if slot.at == at {
                days.extend(KeyTotals::close_hour(slot, key_at[pos], &mut day_rest[pos], &mut settled[pos], pending));
            }
        }
        let cells = match self.pending.iter().position(|p| p.at == at) {
            Some(i) => self.pending.swap_remove(i).cells.iter().map(|(k, c)| (*k, cell32_to_cell(c))).collect(),
            None => Vec::new(),
        };
        (cells, days)
    }

    /// Forgets the pending cells of an hour whose events are all gone.
    pub fn drop_hour(&mut self, day: i64, hour: usize) {
        if let Some(at) = hour_at(day, hour) {
            self.pending.retain(|p| p.at != at);
        }
    }

    /// (day, key, cell) of every key with inline cells: all it did inline on that day.
    pub fn inline(&self) -> impl Iterator<Item = (i64, u32, KeyCell)> + '_ {
        (0..self.inline.len()).filter_map(|pos| {
            let cell = self.inline_day_cell(pos);
            (!cell.is_zero()).then(|| (day_of(self.inline[pos].at), self.key_at[pos], cell))
        })
    }

    /// (day, hour, key, cell) of every cell of a hot hour held here, inline or pending.
    pub fn hot_hour_cells(&self) -> impl Iterator<Item = (i64, usize, u32, KeyCell)> + '_ {
        let inline = self
            .inline
            .iter()
            .zip(&self.key_at)
            .filter(|(s, _)| !cell32_is_empty(&s.cell))
            .map(|(s, k)| (s.at, *k, s.cell));
        let pending = self.pending.iter().flat_map(|p| p.cells.iter().map(|(k, c)| (p.at, *k, *c)));
        inline.chain(pending).map(|(at, key, cell)| (day_of(at), hour_of(at), key, cell32_to_cell(&cell)))
    }

    pub fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
            + self.inline.capacity() * size_of::<Slot>()
            + self.day_rest.capacity() * size_of::<Cell32>()
            + self.settled.capacity() * size_of::<KeyCell>()
            + self.key_at.capacity() * 4
            + self.sorted.capacity() * 8
            + self.pending.iter().map(|p| p.cells.capacity() * size_of::<(u32, Cell32)>()).sum::<usize>()
    }
}

impl PartialEq for KeyTotals {
    /// Compares the all-time cells only; inline cells belong to their days.
    fn eq(&self, other: &KeyTotals) -> bool {
        self.sorted().eq(other.sorted())
    }
}

/// The tokens of a Key cell, summed like [`Agg::total_tokens`].
pub fn cell_tokens(c: &KeyCell) -> u64 {
    c.0[2..8].iter().fold(0u64, |a, &t| a.saturating_add(t))
}

pub fn cell_calls(c: &KeyCell) -> u64 {
    c.0[0]
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum HeavyCells {
    Packed(PackedKeys),
    Open(Vec<(u32, KeyCell)>),
}

/// The heaviest keys of a frozen period with their exact cells, and bounds for every other
/// key: a top-N query can often be answered from these alone (see `Views::top_n`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeavyKeys {
    /// Varint-packed (a quarter of the memory: every hour keeps one) until written to.
    cells: HeavyCells,
    /// No key outside `cells` has more tokens (calls) in the period than this.
    rest_tokens: u64,
    rest_calls: u64,
}

impl HeavyKeys {
    /// Keeps the `cap / 2` keys with the most tokens and the `cap / 2` with the most calls
    /// (each key once in `all`).
    pub fn select(mut all: Vec<(u32, KeyCell)>, cap: usize) -> HeavyKeys {
        let half = cap / 2;
        if all.len() <= half.max(1) * 2 {
            all.sort_unstable_by_key(|(k, _)| *k);
            return HeavyKeys { cells: HeavyCells::Packed(PackedKeys::encode(&all)), rest_tokens: 0, rest_calls: 0 };
        }
        // (weight, key, index), ordered heaviest first, ties to the smaller key, so the
        // selection depends on the content only; small entries keep the selection cheap.
        let order = |a: &(u64, u32, u32), b: &(u64, u32, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        let mut keep = vec![false; all.len()];
        for weight in [cell_tokens as fn(&KeyCell) -> u64, cell_calls] {
            let mut ranked: Vec<(u64, u32, u32)> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| !keep[*i])
                .map(|(i, (k, c))| (weight(c), *k, i as u32))
                .collect();
            if half > 0 {
                ranked.select_nth_unstable_by(half - 1, order);
                for (_, _, i) in &ranked[..half] {
                    keep[*i as usize] = true;
                }
            }
        }
        let (mut rest_tokens, mut rest_calls) = (0, 0);
        let mut cells = Vec::with_capacity(2 * half);
        for ((key, cell), kept) in all.into_iter().zip(keep) {
            if kept {
                cells.push((key, cell));
            } else {
                rest_tokens = rest_tokens.max(cell_tokens(&cell));
                rest_calls = rest_calls.max(cell_calls(&cell));
            }
        }
        cells.sort_unstable_by_key(|(k, _)| *k);
        HeavyKeys { cells: HeavyCells::Packed(PackedKeys::encode(&cells)), rest_tokens, rest_calls }
    }

    /// Listed keys stay exact; for the others only the bounds can follow (an addition raises
    /// them, a removal leaves them valid). Writes to frozen periods are rare: late events and
    /// retention.
    pub fn apply(&mut self, key: u32, delta: &KeyCell, sign: Sign) {
        if let HeavyCells::Packed(p) = &self.cells {
            // Writes come in bulk when they come (retention): stay unpacked from now on.
            self.cells = HeavyCells::Open(p.iter().collect());
        }
        let HeavyCells::Open(cells) = &mut self.cells else { return };
        match (cells.binary_search_by_key(&key, |(k, _)| *k), sign) {
            (Ok(i), Sign::Add) => cells[i].1.merge(delta),
            (Ok(i), Sign::Sub) => {
                cells[i].1.unmerge(delta);
                if cells[i].1.is_zero() {
                    cells.remove(i);
                }
            }
            (Err(_), Sign::Add) => {
                self.rest_tokens = self.rest_tokens.saturating_add(cell_tokens(delta));
                self.rest_calls = self.rest_calls.saturating_add(cell_calls(delta));
            }
            (Err(_), Sign::Sub) => {}
        }
    }

    /// The listed cells, in key order.
    pub fn cells(&self) -> Vec<(u32, KeyCell)> {
        match &self.cells {
            HeavyCells::Packed(p) => p.iter().collect(),
            HeavyCells::Open(v) => v.clone(),
        }
    }

    /// (tokens, calls) no unlisted key exceeds; (0, 0) when every key is listed.
    pub fn rest(&self) -> (u64, u64) {
        (self.rest_tokens, self.rest_calls)
    }

    pub fn heap_bytes(&self) -> usize {
        match &self.cells {
            HeavyCells::Packed(p) => p.heap_bytes(),
            HeavyCells::Open(v) => v.capacity() * size_of::<(u32, KeyCell)>(),
        }
    }
}

/// A hot hour's log of cells is summed by key when it is full and holds at least this many.
const HOUR_LOG_COMPACT_MIN: usize = 1024;

/// The Key cells of one hour: every key while hot, the heaviest once frozen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HourKeys {
    /// Cells as they come (mostly one per key, when the key's inline cell moves here), summed
    /// when the hour freezes or is read: appending costs no hash probe. Each log is summed by
    /// key whenever it fills up (`log_push`), so it stays within about twice the hour's keys
    /// however many events come for them (an event that cannot go inline comes here itself:
    /// every event of a key whose hour's tokens passed 2^32, or of an earlier hour).
    Hot {
        added: Vec<(u32, KeyCell)>,
        removed: Vec<(u32, KeyCell)>,
    },
    Frozen(HeavyKeys),
}

impl Default for HourKeys {
    fn default() -> HourKeys {
        HourKeys::Hot { added: Vec::new(), removed: Vec::new() }
    }
}

impl HourKeys {
    #[inline]
    pub fn apply(&mut self, key: u32, delta: &KeyCell, sign: Sign) {
        match (self, sign) {
            (HourKeys::Hot { added, .. }, Sign::Add) => log_push(added, key, delta),
            (HourKeys::Hot { removed, .. }, Sign::Sub) => log_push(removed, key, delta),
            (HourKeys::Frozen(heavy), _) => heavy.apply(key, delta, sign),
        }
    }

    pub fn is_hot(&self) -> bool {
        matches!(self, HourKeys::Hot { .. })
    }

    /// The summed cells of a hot hour with `more` (its cells held elsewhere), in no order;
    /// `None` once frozen.
    pub fn hot_cells(&self, more: impl Iterator<Item = (u32, KeyCell)>) -> Option<FxHashMap<u32, KeyCell>> {
        let HourKeys::Hot { added, removed } = self else { return None };
        let mut map: FxHashMap<u32, KeyCell> = FxHashMap::default();
        map.reserve(added.len());
        for (key, cell) in added.iter().copied().chain(more) {
            map.entry(key).or_default().merge(&cell);
        }
        for (key, cell) in removed {
            apply_hot(&mut map, *key, cell, Sign::Sub);
        }
        map.retain(|_, c| !c.is_zero());
        Some(map)
    }

    /// Freezes a hot hour, with `more` of its cells held elsewhere.
    pub fn freeze(&mut self, more: Vec<(u32, KeyCell)>, cap: usize) {
        let HourKeys::Hot { added, removed } = self else { return };
        let mut cells = more;
        cells.append(added);
        // Keys mostly come once (when their inline cell moves here); then no map is needed.
        let mut seen: rustc_hash::FxHashSet<u32> = rustc_hash::FxHashSet::default();
        seen.reserve(cells.len());
        let unique = removed.is_empty() && cells.iter().all(|(k, _)| seen.insert(*k));
        if !unique {
            let removed = std::mem::take(removed);
            let map = HourKeys::Hot { added: cells, removed }.hot_cells(std::iter::empty()).unwrap_or_default();
            cells = map.into_iter().collect();
        }
        *self = HourKeys::Frozen(HeavyKeys::select(cells, cap));
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            HourKeys::Hot { added, removed } => (added.capacity() + removed.capacity()) * size_of::<(u32, KeyCell)>(),
            HourKeys::Frozen(heavy) => heavy.heap_bytes(),
        }
    }
}

/// Appends to a hot hour's log of cells, first summing it by key (in key order) if it is full
/// and long: the sums are what the log means, and only a log that does not shrink grows, so
/// the cost per push stays constant.
fn log_push(log: &mut Vec<(u32, KeyCell)>, key: u32, delta: &KeyCell) {
    if log.len() == log.capacity() && log.len() >= HOUR_LOG_COMPACT_MIN {
        let mut sums: FxHashMap<u32, KeyCell> = FxHashMap::default();
        for (k, c) in log.drain(..) {
            sums.entry(k).or_default().merge(&c);
        }
        log.extend(sums);
        log.sort_unstable_by_key(|(k, _)| *k);
    }
    log.push((key, *delta));
}

/// A breakdown being assembled: cells sorted by key.
#[derive(Debug)]
pub struct SortedAcc<C> {
    pub cells: Vec<(u32, C)>,
}

impl<C: Cell> SortedAcc<C> {
    pub fn new() -> SortedAcc<C> {
        SortedAcc { cells: Vec::new() }
    }

    /// Adds cells given in increasing key order. Keys already present are summed in place; the
    /// rest are merged in one pass at the end, so a merge costs O(n + m).
    pub fn merge_sorted<'a>(&mut self, input: impl Iterator<Item = (u32, &'a C)>)
    where
        C: 'a,
    {
        let mut i = 0;
        let mut missing: Vec<(u32, C)> = Vec::new();
        for (key, cell) in input {
            while i < self.cells.len() && self.cells[i].0 < key {
                i += 1;
            }
            if i < self.cells.len() && self.cells[i].0 == key {
                self.cells[i].1.merge(cell);
            } else {
                missing.push((key, cell.clone()));
            }
        }
        if missing.is_empty() {
            return;
        }
        if self.cells.is_empty() {
            self.cells = missing;
            return;
        }
        let old = std::mem::take(&mut self.cells);
        let mut merged = Vec::with_capacity(old.len() + missing.len());
        let mut a = old.into_iter().peekable();
        let mut b = missing.into_iter().peekable();
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.0 < y.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_a { a.next() } else { b.next() };
            merged.extend(next);
        }
        self.cells = merged;
    }

    /// Adds unsorted cells.
    pub fn merge_map(&mut self, map: FxHashMap<u32, C>) {
        let v = sorted_from_map(&map);
        self.merge_sorted(v.iter().map(|(k, c)| (*k, c)));
    }

    pub fn into_aggs(self) -> Vec<(u32, Agg)> {
        self.cells.into_iter().map(|(k, c)| (k, c.to_agg())).filter(|(_, a)| a.calls > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::PosIndex;

    /// A hot hour that gets every event of a few keys (their inline cells are full) keeps a
    /// log about the size of its keys, and means the same sums.
    #[test]
    fn a_hot_hours_log_stays_about_its_keys() {
        use super::{Cell, HourKeys, KeyCell};
        use crate::views::Sign;
        let mut keys = HourKeys::default();
        let mut expect = std::collections::BTreeMap::<u32, KeyCell>::new();
        for i in 0..200_000u64 {
            let key = (i * 7919 % 300) as u32;
            let cell = super::Counters([1, 0, i, 0, 0, 0, 0, 0, 1]);
            keys.apply(key, &cell, Sign::Add);
            expect.entry(key).or_default().merge(&cell);
        }
        for key in 0..10 {
            let cell = super::Counters([1, 0, 0, 0, 0, 0, 0, 0, 1]);
            keys.apply(key, &cell, Sign::Sub);
            expect.get_mut(&key).unwrap().unmerge(&cell);
        }
        assert!(keys.heap_bytes() <= 4 * super::HOUR_LOG_COMPACT_MIN * size_of::<(u32, KeyCell)>(), "{} bytes", keys.heap_bytes());
        let mut got: Vec<(u32, KeyCell)> = keys.hot_cells(std::iter::empty()).unwrap().into_iter().collect();
        got.sort_unstable_by_key(|(k, _)| *k);
        assert_eq!(got, expect.into_iter().collect::<Vec<_>>());
    }

    /// Varints read back what was written, up to u64::MAX in ten bytes; longer ones, or bits past
    /// the 64th, are refused rather than cut.
    #[test]
    fn varints_round_trip_and_refuse_overlong_bytes() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX >> 1, u64::MAX] {
            let mut b = Vec::new();
            super::put_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!((super::get_varint(&b, &mut pos), pos), (Some(v), b.len()));
        }
        let mut pos = 0;
        assert_eq!(super::get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], &mut pos), None, "bit 64");
        pos = 0;
        assert_eq!(super::get_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], &mut pos), None, "eleven bytes");
        pos = 0;
        assert_eq!(super::get_varint(&[0x80], &mut pos), None, "cut short");
    }

    /// The direct table and the spill map agree with a plain map through growth, spills and
    /// removals.
    #[test]
    fn pos_index_matches_a_map() {
        let mut index = PosIndex::default();
        let mut model = std::collections::HashMap::new();
        let keys: Vec<u32> =
            (0..3000u32).map(|i| i.wrapping_mul(2_654_435_761) % 9000).chain([u32::MAX, 1 << 31, 5000]).collect();
        for (n, &key) in keys.iter().enumerate() {
            index.insert(key, n as u32);
            model.insert(key, n as u32);
        }
        for (n, &key) in keys.iter().enumerate().step_by(3) {
            assert_eq!(index.remove(key), model.remove(&key), "{n}");
        }
        for key in (0..10_000u32).chain([u32::MAX, 1 << 31]) {
            assert_eq!(index.get(key), model.get(&key).copied(), "{key}");
        }
        for key in model.keys().copied().collect::<Vec<_>>() {
            assert_eq!(index.remove(key), model.remove(&key));
        }
        assert_eq!(index.heap_bytes(), 0);
        assert_eq!(index.get(7), None);
    }
}
