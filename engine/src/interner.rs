//! The engine-wide string interner: every low-cardinality string (model, endpoint, key id, …)
//! becomes a [`Sym`]. Symbols are never reused or removed while the engine is open, so a `Sym`
//! stays valid for the life of the process; `Sym::EMPTY` is always "".
//!
//! Limit: `STRINGS_MAX` distinct strings; beyond that interning fails and the append is refused
//! (an operator sending a unique value per call in a dimension field gets a clear error instead of
//! unbounded memory).

use std::hash::Hasher;
use std::sync::Arc;

use crate::event::Sym;
use crate::table::{OpenTable, TableSlot};

pub const STRINGS_MAX: usize = 16 << 20;

/// Strings of at most this many bytes are kept in their table slot too, so a lookup that finds
/// one reads one cache line (a client key id, `sk-t…0001#3fa94c21d0e7`, is 24 bytes).
const INLINE: usize = 24;

/// A slot of the interner's table: 32 bytes, two to a cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Slot {
    /// The top 24 bits of the string's hash, then its length (255 for 255 bytes or more).
    tag: u32,
    /// `EMPTY_SLOT` while free.
    sym: u32,
    /// The string, zero-padded, when it has at most `INLINE` bytes.
    inline: [u8; INLINE],
}

const EMPTY_SLOT: u32 = u32::MAX;

impl TableSlot for Slot {
    const FREE: Slot = Slot { tag: 0, sym: EMPTY_SLOT, inline: [0; INLINE] };
    fn is_free(&self) -> bool {
        self.sym == EMPTY_SLOT
    }
}

/// The tag of a string of `len` bytes with hash `h`.
fn tag_of(h: u64, len: usize) -> u32 {
    ((h >> 40) as u32) << 8 | len.min(255) as u32
}

/// What a slot keeps of `s`: the string zero-padded if it fits, else zeros.
fn inline_bytes(s: &str) -> [u8; INLINE] {
    let mut b = [0; INLINE];
    if s.len() <= INLINE {
        b[..s.len()].copy_from_slice(s.as_bytes());
    }
    b
}

/// Strings and their symbols, found through an `OpenTable` (rather than a hash map crate) so that
/// an append can ask the CPU for the slot of an event's key a few events ahead (`prefetch`), and
/// so that a slot holds a short string itself: a lookup with cold caches (a batch fresh from a parser) then costs one
/// memory access where a map of `Arc<str>` cost three (control bytes, bucket, string).
#[derive(Debug)]
pub struct Interner {
    slots: OpenTable<Slot>,
    strings: Vec<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

/// `FxBuildHasher::hash_one(s)`, inlined: as a call (which the compiler chose) it was 4 % of a
/// one-event append, seven calls an event.
#[inline(always)]
fn hash(s: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    std::hash::Hash::hash(s, &mut h);
    h.finish()
}

/// The table's first size.
const SLOTS_MIN: usize = 64;

impl Interner {
    pub fn new() -> Interner {
        let mut i = Interner { slots: OpenTable::default(), strings: Vec::new() };
        let empty = i.add(hash(""), "");
        debug_assert_eq!(empty, Some(Sym::EMPTY));
        i
    }

    /// The symbol of `s`, whose hash is `h`, if interned.
    #[inline(always)]
    fn find(&self, h: u64, s: &str) -> Option<Sym> {
        let tag = tag_of(h, s.len());
        let inline = s.len() <= INLINE;
        let slot = self.slots.find(h, |slot| {
            // Equal tags mean equal lengths (below 255).
            slot.tag == tag
                && if inline {
                    same_bytes(&slot.inline[..s.len()], s.as_bytes())
                } else {
                    same_str(&self.strings[slot.sym as usize], s)
                }
        })?;
        Some(Sym(slot.sym))
    }

    pub fn get(&self, s: &str) -> Option<Sym> {
        self.find(hash(s), s)
    }

    /// Asks the CPU for the slot where `s` would be found, ahead of its lookup.
    #[inline(always)]
    pub(crate) fn prefetch(&self, s: &str) {
        self.slots.prefetch(hash(s));
    }

    /// Returns the symbol of `s`, adding it when new; `None` when the interner is full.
    #[inline]
    pub fn intern(&mut self, s: &str) -> Option<Sym> {
        let h = hash(s);
        match self.find(h, s) {
            Some(sym) => Some(sym),
            None => self.add(h, s),
        }
    }

    #[cold]
    fn add(&mut self, h: u64, s: &str) -> Option<Sym> {
        if self.strings.len() >= STRINGS_MAX {
            return None;
        }
        let sym = self.strings.len() as u32;
        let slot = Slot { tag: tag_of(h, s.len()), sym, inline: inline_bytes(s) };
        let strings = &self.strings;
        self.slots.insert_new(h, slot, SLOTS_MIN, |slot| hash(&strings[slot.sym as usize]));
        self.strings.push(Arc::from(s));
        Some(Sym(sym))
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
        text + self.strings.capacity() * 16 + self.slots.heap_bytes()
    }
}

/// `a == b`, inline for the short strings that dimensions hold: two overlapping loads from each
/// end compare every byte (a call to `memcmp` cost more than the comparison itself).
#[inline(always)]
pub(crate) fn same_str(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
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

    /// Strings short and long (kept in the slot or not), with shared prefixes, trailing zero
    /// bytes and the same length, through many growths of the table.
    #[test]
    fn finds_every_string_through_growth() {
        let mut i = Interner::new();
        let strings: Vec<String> = (0..20_000)
            .map(|n| match n % 5 {
                0 => format!("sk-t…{n:04}#3fa94c21d0e7"),
                1 => format!("claude-sonnet-4-5-20250929-{n}"),
                2 => format!("{n}"),
                3 => format!("m{n}\0"),
                _ => format!("m{n}\0\0"),
            })
            .collect();
        for (n, s) in strings.iter().enumerate() {
            assert_eq!(i.intern(s), Some(Sym(n as u32 + 1)), "{s:?}");
        }
        for (n, s) in strings.iter().enumerate() {
            assert_eq!(i.get(s), Some(Sym(n as u32 + 1)), "{s:?}");
            assert_eq!(i.resolve(Sym(n as u32 + 1)), s);
        }
        assert_eq!(i.get(""), Some(Sym::EMPTY));
        assert_eq!(i.get("m7\0\0\0"), None);
        assert_eq!(i.get("claude-sonnet-4-5-20250929-x"), None);
        assert_eq!(i.len(), strings.len() + 1);
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
