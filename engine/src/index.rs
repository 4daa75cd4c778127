//! Per-segment indexes and the log query that walks them newest first.
//!
//! Invariants and limits:
//! - Low-cardinality dimensions (model, endpoint, provider, credential, status code) have one
//!   roaring bitmap per value over the segment's sequence deltas: exact candidates.
//! - Client keys (thousands of values) have one bitmap per key over *block numbers* (a block is
//!   `BLOCK_EVENTS` consecutive sequence deltas): about 2 B per event instead of ~8, at the price of
//!   decoding a block to find the key's events in it (see `shared/reference/storage.md`, Indexes).
//! - Bitmaps only grow by `push` of increasing values, so building them while appending or while
//!   replaying a segment costs the same as building them at seal time from sorted ids.

use roaring::RoaringBitmap;
use rustc_hash::FxHashMap;

use crate::event::{Dim, StoredEvent, Sym};
use crate::segment::{Segment, BLOCK_EVENTS};

/// The dimensions with an event-granular bitmap index.
pub const INDEXED_DIMS: [Dim; 4] = [Dim::Model, Dim::Endpoint, Dim::Provider, Dim::Credential];

#[derive(Default, Debug)]
pub struct SegmentIndex {
    by_dim: [FxHashMap<Sym, RoaringBitmap>; INDEXED_DIMS.len()],
    by_status: FxHashMap<u16, RoaringBitmap>,
    key_blocks: FxHashMap<Sym, RoaringBitmap>,
}

impl SegmentIndex {
    pub fn add(&mut self, seq_delta: u32, block: u32, ev: &StoredEvent) {
        for (i, dim) in INDEXED_DIMS.iter().enumerate() {
            // Deltas only increase within a segment, so a push never fails.
            let _ = self.by_dim[i].entry(ev.dim(*dim)).or_default().try_push(seq_delta);
        }
        let _ = self.by_status.entry(ev.status).or_default().try_push(seq_delta);
        let keys = self.key_blocks.entry(ev.dim(Dim::Key)).or_default();
        if keys.max() != Some(block) {
            let _ = keys.try_push(block);
        }
    }

    /// Compacts the bitmaps once the segment takes no more events.
    pub fn seal(&mut self) {
        for map in self.by_dim.iter_mut() {
            map.values_mut().for_each(|b| {
                b.optimize();
            });
            map.shrink_to_fit();
        }
        self.by_status.values_mut().for_each(|b| {
            b.optimize();
        });
        self.key_blocks.values_mut().for_each(|b| {
            b.optimize();
        });
        self.key_blocks.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> usize {
        let maps = self.by_dim.iter().chain(std::iter::once(&self.key_blocks));
        let mut n = 0;
        for m in maps {
            n += m.capacity() * 40;
            n += m.values().map(|b| b.serialized_size() + 16).sum::<usize>();
        }
        n += self.by_status.capacity() * 40 + self.by_status.values().map(|b| b.serialized_size() + 16).sum::<usize>();
        n
    }
}

/// Which statuses a log query wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    Code(u16),
    /// 1–5 for 1xx–5xx, 0 for no response.
    Class(u8),
    /// Every call that did not succeed.
    Errors,
}

/// A log query. Dimension filters are symbols; a string the engine never saw matches nothing, and
/// the engine's `resolve_filter` turns strings into this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub model: Option<Sym>,
    pub endpoint: Option<Sym>,
    pub provider: Option<Sym>,
    pub credential: Option<Sym>,
    pub key: Option<Sym>,
    pub status: Option<StatusFilter>,
    pub min_latency_ms: Option<u32>,
}

impl LogFilter {
    fn dim_filters(&self) -> [Option<Sym>; INDEXED_DIMS.len()] {
        [self.model, self.endpoint, self.provider, self.credential]
    }

    pub fn matches(&self, ev: &StoredEvent) -> bool {
        if let Some(f) = self.from_ms {
            if ev.ts_ms < f {
                return false;
            }
        }
        if let Some(t) = self.to_ms {
            if ev.ts_ms >= t {
                return false;
            }
        }
        for (i, dim) in INDEXED_DIMS.iter().enumerate() {
            if let Some(s) = self.dim_filters()[i] {
                if ev.dim(*dim) != s {
                    return false;
                }
            }
        }
        if let Some(k) = self.key {
            if ev.dim(Dim::Key) != k {
                return false;
            }
        }
        match self.status {
            Some(StatusFilter::Code(c)) if ev.status != c => return false,
            Some(StatusFilter::Class(c)) if ev.status_class() != c => return false,
            Some(StatusFilter::Errors) if ev.success => return false,
            _ => {}
        }
        if let Some(m) = self.min_latency_ms {
            if ev.latency_ms < m {
                return false;
            }
        }
        true
    }

    fn overlaps(&self, min_ts: i64, max_ts: i64) -> bool {
        if min_ts > max_ts {
            return false;
        }
        self.from_ms.is_none_or(|f| max_ts >= f) && self.to_ms.is_none_or(|t| min_ts < t)
    }
}

/// The event-granular candidates of a segment, `None` meaning "every event", or `Some(empty)`
/// when nothing in the segment can match.
fn candidates(seg: &Segment, filter: &LogFilter) -> Option<RoaringBitmap> {
    let mut acc: Option<RoaringBitmap> = None;
    let mut and = |b: Option<&RoaringBitmap>| {
        let b = b.cloned().unwrap_or_default();
        acc = Some(match acc.take() {
            None => b,
            Some(a) => a & b,
        });
    };
    for (i, f) in filter.dim_filters().iter().enumerate() {
        if let Some(sym) = f {
            and(seg.index.by_dim[i].get(sym));
        }
    }
    match filter.status {
        Some(StatusFilter::Code(c)) => and(seg.index.by_status.get(&c)),
        Some(StatusFilter::Class(class)) => {
            let mut u = RoaringBitmap::new();
            for (code, b) in &seg.index.by_status {
                if crate::event::status_class(*code) == class {
                    u |= b;
                }
            }
            and(Some(&u));
        }
        // Success is not indexed; statuses of failed calls are few, but 200s can fail too (a
        // stream cut short), so errors are filtered while decoding.
        Some(StatusFilter::Errors) | None => {}
    }
    acc
}

/// Appends to `out`, newest first, the events of `seg` with sequence number below `before_seq`
/// that match `filter`, until `out` holds `limit` events.
pub fn query_segment(seg: &Segment, filter: &LogFilter, before_seq: u64, limit: usize, out: &mut Vec<StoredEvent>) {
    if out.len() >= limit || seg.n_events == 0 || before_seq <= seg.base_seq() {
        return;
    }
    if !filter.overlaps(seg.min_ts, seg.max_ts) {
        return;
    }
    let limit_delta = (before_seq - seg.base_seq()).min(u32::MAX as u64) as u32;
    let key_blocks = match filter.key {
        Some(k) => match seg.index.key_blocks.get(&k) {
            Some(b) => Some(b),
            None => return,
        },
        None => None,
    };
    let cand = candidates(seg, filter);
    let mut batch: Vec<StoredEvent> = Vec::with_capacity(BLOCK_EVENTS as usize);
    let mut take_block = |b: u32, want: &dyn Fn(u32) -> bool, out: &mut Vec<StoredEvent>| {
        let Some(block) = seg.blocks.get(b as usize) else { return };
        if !filter.overlaps(block.min_ts, block.max_ts) {
            return;
        }
        batch.clear();
        seg.for_each_in_block(b as usize, &mut |ev| {
            let delta = (ev.seq - seg.base_seq()) as u32;
            if delta < limit_delta && want(delta) && filter.matches(&ev) {
                batch.push(ev);
            }
            true
        });
        while out.len() < limit {
            match batch.pop() {
                Some(ev) => out.push(ev),
                None => break,
            }
        }
    };
    let top_block = (limit_delta.saturating_sub(1)) / BLOCK_EVENTS;
    match cand {
        Some(c) => {
            // Walk the candidate deltas newest first, a block at a time.
            let mut iter = c.range(..limit_delta).rev().peekable();
            while out.len() < limit {
                let Some(&d) = iter.peek() else { break };
                let b = d / BLOCK_EVENTS;
                let mut in_block = Vec::new();
                while let Some(&d2) = iter.peek() {
                    if d2 / BLOCK_EVENTS != b {
                        break;
                    }
                    in_block.push(d2);
                    iter.next();
                }
                if key_blocks.is_some_and(|kb| !kb.contains(b)) {
                    continue;
                }
                take_block(b, &|delta| in_block.binary_search_by(|x| delta.cmp(x)).is_ok(), out);
            }
        }
        None => match key_blocks {
            Some(kb) => {
                for b in kb.range(..=top_block).rev() {
                    if out.len() >= limit {
                        break;
                    }
                    take_block(b, &|_| true, out);
                }
            }
            None => {
                let nblocks = seg.blocks.len() as u32;
                if nblocks == 0 {
                    return;
                }
                for b in (0..=top_block.min(nblocks - 1)).rev() {
                    if out.len() >= limit {
                        break;
                    }
                    take_block(b, &|_| true, out);
                }
            }
        },
    }
}

/// Calls `f` for each event of `seg` in blocks whose time bounds overlap `[from_ms, to_ms)`;
/// events outside the range may be passed too (callers filter by timestamp).
pub fn scan_segment_range(seg: &Segment, from_ms: i64, to_ms: i64, f: &mut dyn FnMut(&StoredEvent)) {
    let filter = LogFilter { from_ms: Some(from_ms), to_ms: Some(to_ms), ..LogFilter::default() };
    if !filter.overlaps(seg.min_ts, seg.max_ts) {
        return;
    }
    for (b, block) in seg.blocks.iter().enumerate() {
        if filter.overlaps(block.min_ts, block.max_ts) {
            seg.for_each_in_block(b, &mut |ev| {
                f(&ev);
                true
            });
        }
    }
}
