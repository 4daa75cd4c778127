//! The engine-wide string interner: every low-cardinality string (model, endpoint, key id, …)
//! becomes a [`Sym`]. Symbols are never reused or removed while the engine is open, so a `Sym`
//! stays valid for the life of the process; `Sym::EMPTY` is always "".
//!
//! Limit: `STRINGS_MAX` distinct strings; beyond that interning fails and the append is refused
//! (an operator sending a unique value per call in a dimension field gets a clear error instead of
//! unbounded memory).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::event::Sym;

pub const STRINGS_MAX: usize = 16 << 20;

#[derive(Debug)]
pub struct Interner {
    by_string: FxHashMap<Arc<str>, Sym>,
    strings: Vec<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    pub fn new() -> Interner {
        let empty: Arc<str> = Arc::from("");
        let mut by_string = FxHashMap::default();
        by_string.insert(empty.clone(), Sym::EMPTY);
        Interner { by_string, strings: vec![empty] }
    }

    pub fn get(&self, s: &str) -> Option<Sym> {
        self.by_string.get(s).copied()
    }

    /// Returns the symbol of `s`, adding it when new; `None` when the interner is full.
    pub fn intern(&mut self, s: &str) -> Option<Sym> {
        if let Some(&sym) = self.by_string.get(s) {
            return Some(sym);
        }
        if self.strings.len() >= STRINGS_MAX {
            return None;
        }
        let sym = Sym(self.strings.len() as u32);
        let owned: Arc<str> = Arc::from(s);
        self.strings.push(owned.clone());
        self.by_string.insert(owned, sym);
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
        text + self.strings.capacity() * 16 + self.by_string.capacity() * 24
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
    }
}
