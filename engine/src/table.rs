//! A small open-addressed hash map (linear probing, at most 3/4 full) for keys and values that
//! are plain data, with what `std`'s map does not offer: a `prefetch` of the slot a key would be
//! found in, so that an append can ask for it a few events ahead. An append with cold caches (a
//! batch fresh from a parser) otherwise waits on each lookup's memory in turn.
//!
//! No removal of single keys: `retain` rebuilds the table.

use std::hash::{BuildHasher, Hash};

use rustc_hash::FxBuildHasher;

#[derive(Clone, Debug)]
pub(crate) struct OpenMap<K, V> {
    slots: Vec<Option<(K, V)>>,
    len: usize,
}

impl<K, V> Default for OpenMap<K, V> {
    fn default() -> Self {
        OpenMap { slots: Vec::new(), len: 0 }
    }
}

impl<K: Hash + Eq + Copy, V: Copy> OpenMap<K, V> {
    fn slot_of(&self, k: &K) -> usize {
        FxBuildHasher.hash_one(k) as usize & (self.slots.len() - 1)
    }

    #[inline]
    pub(crate) fn get(&self, k: &K) -> Option<V> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot_of(k);
        loop {
            match &self.slots[i] {
                None => return None,
                Some((key, v)) if key == k => return Some(*v),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// Asks the CPU for the slot where `k` would be found.
    #[inline]
    pub(crate) fn prefetch(&self, k: &K) {
        if !self.slots.is_empty() {
            crate::cpu::prefetch_read((&self.slots[self.slot_of(k)] as *const Option<(K, V)>).cast());
        }
    }

    /// Sets the value of `k`.
    pub(crate) fn insert(&mut self, k: K, v: V) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let n = (self.slots.len() * 2).max(16);
            let old = std::mem::replace(&mut self.slots, vec![None; n]);
            self.len = 0;
            for (k, v) in old.into_iter().flatten() {
                self.insert(k, v);
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot_of(&k);
        loop {
            match &mut self.slots[i] {
                slot @ None => {
                    *slot = Some((k, v));
                    self.len += 1;
                    return;
                }
                Some((key, value)) if *key == k => {
                    *value = v;
                    return;
                }
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// Keeps the entries for which `keep` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let old = std::mem::take(&mut self.slots);
        self.len = 0;
        self.slots = vec![None; old.len()];
        for (k, v) in old.into_iter().flatten() {
            if keep(&k, &v) {
                self.insert(k, v);
            }
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<(K, V)>>()
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
