//! One open-addressed hash table (linear probing, at most 3/4 full) of plain slots, with what
//! `std`'s map does not offer: a `prefetch` of the slot a hash lands in, so that an append can ask
//! for it a few events ahead (with cold caches, a batch fresh from a parser, an append otherwise
//! waits on each lookup's memory in turn), and slots whose layout the user chooses (the
//! interner's hold short strings themselves). `OpenMap` is the plain key-value map on top of it.
//!
//! No removal of single entries: `retain` rebuilds the table.

use std::hash::Hash;

/// What an `OpenTable` holds: plain data with a value that marks a free slot.
pub(crate) trait TableSlot: Copy {
    const FREE: Self;
    fn is_free(&self) -> bool;
}

#[derive(Clone, Debug)]
pub(crate) struct OpenTable<S> {
    slots: Vec<S>,
    len: usize,
}

impl<S> Default for OpenTable<S> {
    fn default() -> Self {
        OpenTable { slots: Vec::new(), len: 0 }
    }
}

impl<S: TableSlot> OpenTable<S> {
    /// Where the slot from hash `h` on for which `eq` holds is, or `None` at the first free one.
    #[inline(always)]
    fn position(&self, h: u64, mut eq: impl FnMut(&S) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.is_free() {
                return None;
            }
            if eq(slot) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot from hash `h` on for which `eq` holds.
    #[inline(always)]
    pub(crate) fn find(&self, h: u64, eq: impl FnMut(&S) -> bool) -> Option<&S> {
        self.position(h, eq).map(|i| &self.slots[i])
    }

    /// Asks the CPU for the slot hash `h` lands in.
    #[inline(always)]
    pub(crate) fn prefetch(&self, h: u64) {
        if !self.slots.is_empty() {
            crate::cpu::prefetch_read((&self.slots[h as usize & (self.slots.len() - 1)] as *const S).cast());
        }
    }

    /// Puts `slot` (not in the table) in the first free slot from hash `h` on, doubling the
    /// table first (at least `min_slots`) if it would be over 3/4 full; `hash_of` gives the hash
    /// of a slot already held.
    pub(crate) fn insert_new(&mut self, h: u64, slot: S, min_slots: usize, hash_of: impl Fn(&S) -> u64) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let n = (self.slots.len() * 2).max(min_slots.next_power_of_two());
            let old = std::mem::replace(&mut self.slots, vec![S::FREE; n]);
            for s in old.into_iter().filter(|s| !s.is_free()) {
                self.place(hash_of(&s), s);
            }
        }
        self.place(h, slot);
        self.len += 1;
    }

    fn place(&mut self, h: u64, slot: S) {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while !self.slots[i].is_free() {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    /// `find`, for changing the slot in place.
    fn find_mut(&mut self, h: u64, eq: impl FnMut(&S) -> bool) -> Option<&mut S> {
        self.position(h, eq).map(|i| &mut self.slots[i])
    }

    /// Keeps the slots for which `keep` holds, at the same size.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&S) -> bool, hash_of: impl Fn(&S) -> u64) {
        let n = self.slots.len();
        let old = std::mem::replace(&mut self.slots, vec![S::FREE; n]);
        self.len = 0;
        for s in old.into_iter().filter(|s| !s.is_free() && keep(s)) {
            self.place(hash_of(&s), s);
            self.len += 1;
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<S>()
    }
}

impl<K: Copy, V: Copy> TableSlot for Option<(K, V)> {
    const FREE: Self = None;
    fn is_free(&self) -> bool {
        self.is_none()
    }
}

/// A map of plain keys and values on an `OpenTable`.
#[derive(Clone, Debug)]
pub(crate) struct OpenMap<K, V> {
    table: OpenTable<Option<(K, V)>>,
}

impl<K, V> Default for OpenMap<K, V> {
    fn default() -> Self {
        OpenMap { table: OpenTable::default() }
    }
}

#[inline(always)]
fn hash_key<K: Hash>(k: &K) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    k.hash(&mut h);
    std::hash::Hasher::finish(&h)
}

fn hash_slot<K: Hash, V>(s: &Option<(K, V)>) -> u64 {
    hash_key(&s.as_ref().expect("a held slot").0)
}

/// The slot of key `k`.
fn holds<K: Eq, V>(k: &K) -> impl Fn(&Option<(K, V)>) -> bool + '_ {
    move |s| s.as_ref().is_some_and(|(key, _)| key == k)
}

impl<K: Hash + Eq + Copy, V: Copy> OpenMap<K, V> {
    #[inline]
    pub(crate) fn get(&self, k: &K) -> Option<V> {
        self.table.find(hash_key(k), holds(k)).and_then(|s| s.map(|(_, v)| v))
    }

    /// Asks the CPU for the slot where `k` would be found.
    #[inline]
    pub(crate) fn prefetch(&self, k: &K) {
        self.table.prefetch(hash_key(k));
    }

    /// Sets the value of `k`.
    pub(crate) fn insert(&mut self, k: K, v: V) {
        let h = hash_key(&k);
        match self.table.find_mut(h, holds(&k)) {
            Some(slot) => *slot = Some((k, v)),
            None => self.table.insert_new(h, Some((k, v)), 16, hash_slot),
        }
    }

    /// Keeps the entries for which `keep` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.table.retain(|s| s.as_ref().is_some_and(|(k, v)| keep(k, v)), hash_slot);
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }
}

impl<K: Hash + Eq + Copy, V: Copy> FromIterator<(K, V)> for OpenMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = OpenMap::default();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map() {
        use std::collections::HashMap;
        let mut m = OpenMap::default();
        let mut naive = HashMap::new();
        assert_eq!(m.get(&1u64), None);
        for i in 0..5000u64 {
            let k = i.wrapping_mul(0x9e37_79b9) % 3000;
            m.insert(k, i);
            naive.insert(k, i);
            m.prefetch(&k);
        }
        for k in 0..3100u64 {
            assert_eq!(m.get(&k), naive.get(&k).copied(), "{k}");
        }
        m.retain(|k, _| k % 3 == 0);
        for k in 0..3100u64 {
            assert_eq!(m.get(&k), naive.get(&k).copied().filter(|_| k % 3 == 0), "{k}");
        }
    }
}
