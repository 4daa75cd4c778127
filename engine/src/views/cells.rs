//! Breakdown cells: group key → additive cell maps in their hot (hash map) and frozen (sorted,
//! or packed for the high-cardinality Key dimension) forms.
//!
//! Recent periods take writes, so their maps are hash maps. Once a period is old its map is
//! frozen into a sorted `Vec` (hours) or a varint-packed byte string (Key days), which is about
//! half (respectively a quarter) of the memory. A frozen map still takes writes: a sorted map in
//! place, a packed one by thawing back into a hash map first. Equality is by content, never by
//! form.

use rustc_hash::FxHashMap;

use super::{Agg, Sign};

/// An additive value kept per group key.
pub trait Cell: Clone + Default + PartialEq + std::fmt::Debug {
    fn merge(&mut self, other: &Self);
    /// Removes what `other` added; underflow is a caller bug.
    fn unmerge(&mut self, other: &Self);
    fn is_zero(&self) -> bool;
    fn to_agg(&self) -> Agg;
}

impl Cell for Agg {
    #[inline]
    fn merge(&mut self, other: &Agg) {
        Agg::merge(self, other);
    }
    #[inline]
    fn unmerge(&mut self, other: &Agg) {
        Agg::unmerge(self, other);
    }
    #[inline]
    fn is_zero(&self) -> bool {
        Agg::is_zero(self)
    }
    fn to_agg(&self) -> Agg {
        self.clone()
    }
}

/// The smaller cell of the Key breakdown: no TTFT, stream or quality counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyCell {
    pub calls: u64,
    pub errors: u64,
    pub tokens: [u64; 6],
    pub latency_sum_ms: u64,
}

impl KeyCell {
    pub fn from_agg(a: &Agg) -> KeyCell {
        KeyCell { calls: a.calls, errors: a.errors, tokens: a.tokens, latency_sum_ms: a.latency_sum_ms }
    }

    fn fields(&self) -> [u64; 9] {
        let t = self.tokens;
        [self.calls, self.errors, t[0], t[1], t[2], t[3], t[4], t[5], self.latency_sum_ms]
    }

    fn from_fields(f: [u64; 9]) -> KeyCell {
        KeyCell { calls: f[0], errors: f[1], tokens: [f[2], f[3], f[4], f[5], f[6], f[7]], latency_sum_ms: f[8] }
    }
}

impl Cell for KeyCell {
    #[inline]
    fn merge(&mut self, o: &KeyCell) {
        self.calls = self.calls.saturating_add(o.calls);
        self.errors = self.errors.saturating_add(o.errors);
        for (a, b) in self.tokens.iter_mut().zip(o.tokens) {
            *a = a.saturating_add(b);
        }
        self.latency_sum_ms = self.latency_sum_ms.saturating_add(o.latency_sum_ms);
    }
    #[inline]
    fn unmerge(&mut self, o: &KeyCell) {
        debug_assert!(self.calls >= o.calls && self.errors >= o.errors, "key cell: removing more than was added");
        self.calls = self.calls.saturating_sub(o.calls);
        self.errors = self.errors.saturating_sub(o.errors);
        for (a, b) in self.tokens.iter_mut().zip(o.tokens) {
            *a = a.saturating_sub(b);
        }
        self.latency_sum_ms = self.latency_sum_ms.saturating_sub(o.latency_sum_ms);
    }
    #[inline]
    fn is_zero(&self) -> bool {
        *self == KeyCell::default()
    }
    fn to_agg(&self) -> Agg {
        Agg {
            calls: self.calls,
            errors: self.errors,
            tokens: self.tokens,
            latency_sum_ms: self.latency_sum_ms,
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

#[inline]
fn apply_hot<C: Cell>(map: &mut FxHashMap<u32, C>, key: u32, delta: &C, sign: Sign) {
    match sign {
        Sign::Add => map.entry(key).or_default().merge(delta),
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

/// Removals from a larger sorted map thaw it instead of shifting its tail once per removal.
const SORTED_SUB_IN_PLACE_MAX: usize = 64;

/// Group key → cell, hot or sorted.
#[derive(Clone, Debug)]
pub enum CellMap<C> {
    Hot(FxHashMap<u32, C>),
    Sorted(Vec<(u32, C)>),
}

impl<C: Cell> CellMap<C> {
    pub fn new(hot: bool) -> CellMap<C> {
        if hot { CellMap::Hot(FxHashMap::default()) } else { CellMap::Sorted(Vec::new()) }
    }

    /// Returns true when the map had to turn hot.
    #[inline]
    pub fn apply(&mut self, key: u32, delta: &C, sign: Sign) -> bool {
        match self {
            CellMap::Hot(map) => {
                apply_hot(map, key, delta, sign);
                false
            }
            CellMap::Sorted(v) => match (v.binary_search_by_key(&key, |(k, _)| *k), sign) {
                (Ok(i), Sign::Add) => {
                    v[i].1.merge(delta);
                    false
                }
                (Err(i), Sign::Add) => {
                    v.insert(i, (key, delta.clone()));
                    false
                }
                (Ok(i), Sign::Sub) if v.len() <= SORTED_SUB_IN_PLACE_MAX => {
                    v[i].1.unmerge(delta);
                    if v[i].1.is_zero() {
                        v.remove(i);
                    }
                    false
                }
                (Err(_), Sign::Sub) => {
                    debug_assert!(false, "cell map: removing from a key never added");
                    false
                }
                (Ok(_), Sign::Sub) => {
                    self.thaw();
                    self.apply(key, delta, sign);
                    true
                }
            },
        }
    }

    pub fn is_hot(&self) -> bool {
        matches!(self, CellMap::Hot(_))
    }

    pub fn thaw(&mut self) {
        if let CellMap::Sorted(v) = self {
            let map: FxHashMap<u32, C> = v.drain(..).collect();
            *self = CellMap::Hot(map);
        }
    }

    pub fn freeze(&mut self) {
        if let CellMap::Hot(map) = self {
            let mut v = sorted_from_map(map);
            v.shrink_to_fit();
            *self = CellMap::Sorted(v);
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CellMap::Hot(m) => m.len(),
            CellMap::Sorted(v) => v.len(),
        }
    }

    pub fn get(&self, key: u32) -> Option<&C> {
        match self {
            CellMap::Hot(m) => m.get(&key),
            CellMap::Sorted(v) => v.binary_search_by_key(&key, |(k, _)| *k).ok().map(|i| &v[i].1),
        }
    }

    pub fn merge_into(&self, acc: &mut SortedAcc<C>) {
        match self {
            CellMap::Sorted(v) => acc.merge_sorted(v.iter().map(|(k, c)| (*k, c))),
            CellMap::Hot(m) => {
                let v = sorted_from_map(m);
                acc.merge_sorted(v.iter().map(|(k, c)| (*k, c)));
            }
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            CellMap::Hot(m) => hash_table_bytes::<(u32, C)>(m.capacity()),
            CellMap::Sorted(v) => v.capacity() * size_of::<(u32, C)>(),
        }
    }
}

impl<C: Cell> PartialEq for CellMap<C> {
    fn eq(&self, other: &CellMap<C>) -> bool {
        match (self, other) {
            (CellMap::Sorted(a), CellMap::Sorted(b)) => a == b,
            (CellMap::Hot(a), CellMap::Hot(b)) => a == b,
            (CellMap::Sorted(v), m @ CellMap::Hot(_)) | (m @ CellMap::Hot(_), CellMap::Sorted(v)) => {
                v.len() == m.len() && v.iter().all(|(k, c)| m.get(*k) == Some(c))
            }
        }
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
            for f in cell.fields() {
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
            Some((key, KeyCell::from_fields(f)))
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

    pub fn is_hot(&self) -> bool {
        matches!(self, KeyMap::Hot(_))
    }

    pub fn len(&self) -> usize {
        match self {
            KeyMap::Hot(m) => m.len(),
            KeyMap::Packed(p) => p.len,
        }
    }

    pub fn merge_into(&self, acc: &mut SortedAcc<KeyCell>) {
        match self {
            KeyMap::Packed(p) => {
                let v: Vec<(u32, KeyCell)> = p.iter().collect();
                acc.merge_sorted(v.iter().map(|(k, c)| (*k, c)));
            }
            KeyMap::Hot(m) => {
                let v = sorted_from_map(m);
                acc.merge_sorted(v.iter().map(|(k, c)| (*k, c)));
            }
        }
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
        if after > before {
            if let Err(i) = self.keys.binary_search(&key) {
                self.keys.insert(i, key);
            }
        } else if after < before {
            if let Ok(i) = self.keys.binary_search(&key) {
                self.keys.remove(i);
            }
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
        self.cells.into_iter().filter(|(_, c)| !c.is_zero()).map(|(k, c)| (k, c.to_agg())).filter(|(_, a)| a.calls > 0).collect()
    }
}
