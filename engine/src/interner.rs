//! The engine-wide string interner: every low-cardinality string (model, endpoint, key id, …)
//! becomes a [`Sym`]. Symbols are never reused or removed while the engine is open, so a `Sym`
//! stays valid for the life of the process; `Sym::EMPTY` is always "".
//!
//! Limit: `STRINGS_MAX` distinct strings; beyond that interning fails and the append is refused
//! (an operator sending a unique value per call in a dimension field gets a clear error instead of
//! unbounded memory).

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::event::Sym;

pub const STRINGS_MAX: usize = 16 << 20;

#[derive(Debug)]
pub struct Interner {
    /// Each string with its symbol, found by the string's hash. A table rather than a map so
    /// that the lookup compares with `same_str`, inline, instead of a call to `memcmp` (an
    /// append looks up every dimension of every event).
    by_string: HashTable<(Arc<str>, Sym)>,
    strings: Vec<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

fn hash(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

impl Interner {
    pub fn new() -> Interner {
        let empty: Arc<str> = Arc::from("");
        let mut by_string = HashTable::new();
        by_string.insert_unique(hash(""), (empty.clone(), Sym::EMPTY), |(s, _)| hash(s));
        Interner { by_string, strings: vec![empty] }
    }

    pub fn get(&self, s: &str) -> Option<Sym> {
        self.by_string.find(hash(s), |(k, _)| same_str(k, s)).map(|&(_, sym)| sym)
    }

    /// Returns the symbol of `s`, adding it when new; `None` when the interner is full.
    #[inline]
    pub fn intern(&mut self, s: &str) -> Option<Sym> {
        let h = hash(s);
        if let Some(&(_, sym)) = self.by_string.find(h, |(k, _)| same_str(k, s)) {
            return Some(sym);
        }
        self.add(h, s)
    }

    #[cold]
    fn add(&mut self, h: u64, s: &str) -> Option<Sym> {
        if self.strings.len() >= STRINGS_MAX {
            return None;
        }
        let sym = Sym(self.strings.len() as u32);
        let owned: Arc<str> = Arc::from(s);
        self.strings.push(owned.clone());
        self.by_string.insert_unique(h, (owned, sym), |(k, _)| hash(k));
        Some(sym)
    }

    pub fn resolve(&self, sym: Sym) -> &str {
        self.strings.get(sym.0 as usize).map(|s| &**s).unwrap_or("")
    }

    pub fn resolve_arc(&self, sym: Sym) -> Arc<str> {
        self.strings.get(sym.0 as usize).cloned().unwrap_or_else(|| Arc::from(""))
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.len() <= 1
    }

    pub fn heap_bytes(&self) -> usize {
        let text: usize = self.strings.iter().map(|s| s.len() + 16).sum();
        text + self.strings.capacity() * 16 + self.by_string.capacity() * 25
    }
}

/// `a == b`, inline for the short strings that dimensions hold: two overlapping loads from each
/// end compare every byte (a call to `memcmp` cost more than the comparison itself).
#[inline(always)]
pub(crate) fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    fn at<const W: usize>(s: &[u8], i: usize) -> [u8; W] {
        s[i..i + W].try_into().expect("W bytes")
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => at::<4>(a, 0) == at::<4>(b, 0) && at::<4>(a, n - 4) == at::<4>(b, n - 4),
        8..=16 => u64::from_ne_bytes(at(a, 0)) == u64::from_ne_bytes(at(b, 0)) && u64::from_ne_bytes(at(a, n - 8)) == u64::from_ne_bytes(at(b, n - 8)),
        17..=32 => u128::from_ne_bytes(at(a, 0)) == u128::from_ne_bytes(at(b, 0)) && u128::from_ne_bytes(at(a, n - 16)) == u128::from_ne_bytes(at(b, n - 16)),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_resolves() {
        let mut i = Interner::new();
        assert_eq!(i.intern(""), Some(Sym::EMPTY));
        let a = i.intern("gpt-5").unwrap();
        let b = i.intern("claude").unwrap();
        assert_ne!(a, b);
        assert_eq!(i.intern("gpt-5"), Some(a));
        assert_eq!(i.resolve(a), "gpt-5");
        assert_eq!(i.resolve(Sym(999)), "");
        assert_eq!(i.len(), 3);
        assert_eq!(i.get("claude"), Some(b));
        assert_eq!(i.get("claudf"), None);
    }

    #[test]
    fn same_str_compares_every_byte_of_every_length() {
        for n in 0..80 {
            let a: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(same_str(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone().into_bytes();
                b[at] = b'Z';
                let b = String::from_utf8(b).unwrap();
                assert!(!same_str(&a, &b), "length {n}, differing at {at}");
            }
            assert!(!same_str(&a, &format!("{a}x")));
        }
    }
}
