//! Breakdown cells: group key → additive cell, in the forms the views keep them.
//!
//! - [`CellMap`] (hourly groups): hot, a [`HotCells`] (vector + hash index + direct-mapped
//!   cache); frozen, a sorted `Vec`, about half the memory. A frozen map takes writes in place.
//! - [`KeyMap`] (Key per day): hot, a hash map; frozen, varint-packed bytes, about a quarter of
//!   the memory. A frozen map takes writes by thawing first.
//! - [`KeyTotals`]: all-time Key cells with each key's latest-day cells inline.
//!
//! Equality is by content, never by form.

use rustc_hash::FxHashMap;

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

impl<const N: usize> Default for Counters<N> {
    fn default() -> Counters<N> {
        Counters([0; N])
    }
}

impl<const N: usize> Counters<N> {
    #[inline(always)]
    fn add(&mut self, o: &Counters<N>) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a = a.wrapping_add(*b);
        }
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
        let mut c = [
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
            0,
            0,
            0,
            0,
        ];
        c[12 + (ev.quality as usize).min(3)] = 1;
        Counters(c)
    }

    pub fn calls(&self) -> u64 {
        self.0[0]
    }
}

impl Cell for AggCell {
    #[inline]
    fn merge(&mut self, other: &AggCell) {
        self.add(other);
    }
    #[inline]
    fn unmerge(&mut self, other: &AggCell) {
        self.sub(other);
    }
    #[inline]
    fn is_zero(&self) -> bool {
        Counters::is_zero(self)
    }
    fn to_agg(&self) -> Agg {
        let c = &self.0;
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

impl Cell for KeyCell {
    #[inline]
    fn merge(&mut self, other: &KeyCell) {
        self.add(other);
    }
    #[inline]
    fn unmerge(&mut self, other: &KeyCell) {
        self.sub(other);
    }
    #[inline]
    fn is_zero(&self) -> bool {
        Counters::is_zero(self)
    }
    fn to_agg(&self) -> Agg {
        let c = &self.0;
        Agg {
            calls: c[0],
            errors: c[1],
            tokens: [c[2], c[3], c[4], c[5], c[6], c[7]],
            latency_sum_ms: c[8],
            ..Agg::default()
        }
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
#[derive(Clone, Debug)]
pub struct HotCells<C> {
    cells: Vec<(u32, C)>,
    index: FxHashMap<u32, u32>,
    /// Position in `cells` by key slot; checked against the key, so stale entries are harmless.
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
#[derive(Clone, Debug)]
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
        v |= ((b & 0x7f) as u64).checked_shl(shift).unwrap_or(0);
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
    }
}

/// Key cells of a frozen day, as varints: key delta, then the nine fields of [`KeyCell`].
/// The encoding of a given content is unique, so equal bytes mean equal content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedKeys {
    bytes: Box<[u8]>,
    len: usize,
}

impl PackedKeys {
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
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug, Default)]
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

/// The cells of a key inline in [`KeyTotals`]: what the key did on `day` (its latest day when
/// set) that has not yet been moved into that day's [`KeyMap`]. 32-bit, to stay small: what
/// would not fit goes to the day's map directly.
#[derive(Clone, Copy, Debug, Default)]
struct Inline {
    day: i32,
    cell: [u32; 9],
}

impl Inline {
    fn is_empty(&self) -> bool {
        self.cell == [0; 9]
    }

    fn cell(&self) -> KeyCell {
        Counters(self.cell.map(u64::from))
    }

    /// Adds `delta` if every sum fits.
    #[inline(always)]
    fn try_add(&mut self, delta: &KeyCell) -> bool {
        let mut sum = [0u32; 9];
        let mut fits = true;
        for ((s, a), b) in sum.iter_mut().zip(&self.cell).zip(&delta.0) {
            let t = u64::from(*a) + *b.min(&u64::from(u32::MAX));
            fits &= t <= u64::from(u32::MAX) && *b <= u64::from(u32::MAX);
            *s = t as u32;
        }
        if fits {
            self.cell = sum;
        }
        fits
    }
}

/// What the caller must do after [`KeyTotals::add`].
pub struct KeyOutcome {
    /// Add these former inline cells to their day's map.
    pub moved: Option<DayMove>,
    /// Add the event to its day's map (it is not inline).
    pub to_day: bool,
}

/// All-time Key cells. A key's all-time cell is `settled + inline`; an in-order append
/// touches only the key's small `Inline` (400 KB for 10k keys, so it stays in
/// cache) instead of two cells in two large hash maps (the day's and the all-time one). Inline
/// cells move to their day when the key is next seen on a later day, when their day is
/// frozen, and before a removal from their day. Keys are also kept sorted, so the all-time
/// breakdown needs no sort.
#[derive(Clone, Debug, Default)]
pub struct KeyTotals {
    /// Key → position in the three vectors below.
    index: FxHashMap<u32, u32>,
    inline: Vec<Inline>,
    settled: Vec<KeyCell>,
    key_at: Vec<u32>,
    /// (key, position), sorted by key; changes only when a key appears or disappears, which
    /// is rare. The all-time breakdown walks it without a hash probe or a sort.
    sorted: Vec<(u32, u32)>,
}

/// A move of inline cells into a day's [`KeyMap`] that the caller must carry out.
pub struct DayMove {
    pub day: i64,
    pub cell: KeyCell,
}

impl KeyTotals {
    #[inline]
    fn position_or_insert(&mut self, key: u32) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i as usize;
        }
        let i = self.key_at.len();
        self.index.insert(key, i as u32);
        self.inline.push(Inline::default());
        self.settled.push(KeyCell::default());
        self.key_at.push(key);
        if let Err(at) = self.sorted.binary_search_by_key(&key, |(k, _)| *k) {
            self.sorted.insert(at, (key, i as u32));
        }
        i
    }

    fn remove_at(&mut self, i: usize) {
        let key = self.key_at[i];
        self.index.remove(&key);
        self.inline.swap_remove(i);
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

    /// Adds an event of `day`: inline unless an inline day later than `day` is pending or the
    /// sums would not fit, else settled.
    #[inline]
    pub fn add(&mut self, key: u32, day: i64, delta: &KeyCell) -> KeyOutcome {
        let i = self.position_or_insert(key);
        let inline = &mut self.inline[i];
        let mut outcome = KeyOutcome { moved: None, to_day: false };
        let day32 = i32::try_from(day).ok();
        let inlined = match day32 {
            Some(d) if d == inline.day => inline.try_add(delta),
            Some(d) if d > inline.day || inline.is_empty() => {
                if !inline.is_empty() {
                    // The key's first event of a later day: its previous day's cells settle.
                    let moved = DayMove { day: i64::from(inline.day), cell: inline.cell() };
                    self.settled[i].merge(&moved.cell);
                    outcome.moved = Some(moved);
                }
                *inline = Inline { day: d, cell: [0; 9] };
                inline.try_add(delta)
            }
            _ => false,
        };
        if !inlined {
            self.settled[i].merge(delta);
            outcome.to_day = true;
        }
        outcome
    }

    /// Removes an event of `day`, first settling the key's inline cells if they belong to
    /// `day` (returned: the caller adds them to the day's map before removing the event there).
    pub fn sub(&mut self, key: u32, day: i64, delta: &KeyCell) -> Option<DayMove> {
        let Some(&i) = self.index.get(&key) else {
            debug_assert!(false, "key totals: removing a key never added");
            return None;
        };
        let i = i as usize;
        let inline = &mut self.inline[i];
        let moved = (i64::from(inline.day) == day && !inline.is_empty()).then(|| {
            let cell = inline.cell();
            inline.cell = [0; 9];
            DayMove { day, cell }
        });
        if let Some(m) = &moved {
            self.settled[i].merge(&m.cell);
        }
        self.settled[i].unmerge(delta);
        if self.settled[i].is_zero() && self.inline[i].is_empty() {
            self.remove_at(i);
        }
        moved
    }

    fn all_time_at(&self, i: usize) -> KeyCell {
        let mut all = self.settled[i];
        all.merge(&self.inline[i].cell());
        all
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.key_at.len()
    }

    /// All-time cells in key order.
    pub fn sorted(&self) -> impl Iterator<Item = (u32, KeyCell)> + '_ {
        self.sorted.iter().map(|&(key, i)| (key, self.all_time_at(i as usize)))
    }

    /// Settles and returns the inline cells of `day`.
    pub fn take_inline(&mut self, day: i64) -> Vec<(u32, KeyCell)> {
        let mut taken = Vec::new();
        for (i, inline) in self.inline.iter_mut().enumerate() {
            if i64::from(inline.day) == day && !inline.is_empty() {
                let cell = inline.cell();
                inline.cell = [0; 9];
                self.settled[i].merge(&cell);
                taken.push((self.key_at[i], cell));
            }
        }
        taken
    }

    /// (day, key, cell) of every non-empty inline cell.
    pub fn inline(&self) -> impl Iterator<Item = (i64, u32, KeyCell)> + '_ {
        self.inline
            .iter()
            .zip(&self.key_at)
            .filter(|(i, _)| !i.is_empty())
            .map(|(i, k)| (i64::from(i.day), *k, i.cell()))
    }

    pub fn heap_bytes(&self) -> usize {
        hash_table_bytes::<(u32, u32)>(self.index.capacity())
            + self.inline.capacity() * size_of::<Inline>()
            + self.settled.capacity() * size_of::<KeyCell>()
            + self.key_at.capacity() * 4
            + self.sorted.capacity() * 8
    }
}

impl PartialEq for KeyTotals {
    /// Compares the all-time cells only; inline cells belong to their days.
    fn eq(&self, other: &KeyTotals) -> bool {
        self.sorted().eq(other.sorted())
    }
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
