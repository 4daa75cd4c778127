//! Per-segment indexes and the log query that walks them newest first.
//!
//! Invariants and limits:
//! - Low-cardinality dimensions (model, endpoint, provider, credential, status code) have one
//!   roaring bitmap per value over the segment's sequence deltas: exact candidates.
//! - Failed calls have one bitmap over sequence deltas, so "errors of model X" is an AND.
//! - Client keys (thousands of values) have one bitmap per key over *block numbers* (a block is
//!   `BLOCK_EVENTS` consecutive sequence deltas): about 2 B per event instead of ~8, at the price of
//!   decoding a block to find the key's events in it (see `shared/reference/storage.md`, Indexes).
//! - Bitmaps only grow at their end (sequence deltas increase within a segment), so building them
//!   while appending or replaying costs about what building them at seal time from sorted ids would.

use roaring::RoaringBitmap;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::event::{Dim, StoredEvent, Sym};
use crate::segment::{Segment, BLOCK_EVENTS};

/// The dimensions with an event-granular bitmap index.
pub const INDEXED_DIMS: [Dim; 4] = [Dim::Model, Dim::Endpoint, Dim::Provider, Dim::Credential];

/// One event as the index holds it until it is folded into the bitmaps.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct TailEntry {
    seq_delta: u32,
    dims: [Sym; INDEXED_DIMS.len()],
    key: Sym,
    status: u16,
    success: bool,
}

/// Events buffered before a bulk fold into the bitmaps: one roaring container's worth, so the
/// buffer stays small (≈ 2 MB at most) and every fold appends to whole new containers.
const TAIL_EVENTS_MAX: usize = 1 << 16;

#[derive(Default, Debug, Serialize, Deserialize)]
pub struct SegmentIndex {
    #[serde(with = "crate::saved::bitmap_map::array")]
    by_dim: [FxHashMap<Sym, RoaringBitmap>; INDEXED_DIMS.len()],
    #[serde(with = "crate::saved::bitmap_map")]
    by_status: FxHashMap<u16, RoaringBitmap>,
    /// Calls that did not succeed (a 200 can fail too, e.g. a stream cut short).
    #[serde(with = "crate::saved::bitmap")]
    failed: RoaringBitmap,
    key_blocks: KeyBlocks,
    /// The newest events, not yet in the bitmaps: appending is a `Vec` push, and the bitmaps are
    /// built in bulk from sorted runs (roaring's per-value insert costs ~20 ns, ×6 per event).
    tail: Vec<TailEntry>,
}

/// Each client key's bitmap of blocks. A segment holds thousands of keys, and a hash map of them
/// took 70 % more memory than its entries (its table's spare buckets and control bytes: 1.3 MB
/// at 10 M events); a sealed segment's are a vector sorted by key, found by binary search. While
/// the segment takes events, a map from key to position finds them.
#[derive(Default, Debug)]
struct KeyBlocks {
    entries: Vec<(Sym, RoaringBitmap)>,
    /// Empty once sealed (or loaded): `entries` are then sorted by key.
    at: FxHashMap<Sym, u32>,
}

impl KeyBlocks {
    fn get(&self, key: &Sym) -> Option<&RoaringBitmap> {
        let i = if self.at.is_empty() { self.entries.binary_search_by_key(key, |(k, _)| *k).ok()? } else { *self.at.get(key)? as usize };
        Some(&self.entries[i].1)
    }

    fn entry(&mut self, key: Sym) -> &mut RoaringBitmap {
        if self.at.is_empty() && !self.entries.is_empty() {
            // A sealed or loaded segment's, taking events again (the live segment's saved index).
            self.at = self.entries.iter().enumerate().map(|(i, (k, _))| (*k, i as u32)).collect();
        }
        let n = self.entries.len();
        let i = *self.at.entry(key).or_insert(n as u32) as usize;
        if i == n {
            self.entries.push((key, RoaringBitmap::new()));
        }
        &mut self.entries[i].1
    }

    /// Sorts the entries and drops the map to them: the segment takes no more events.
    fn seal(&mut self) {
        self.at = FxHashMap::default();
        self.entries.sort_unstable_by_key(|(k, _)| *k);
        self.entries.shrink_to_fit();
    }

    fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(Sym, RoaringBitmap)>()
            + self.at.capacity() * (std::mem::size_of::<(Sym, u32)>() + 1)
            + self.entries.iter().map(|(_, b)| b.serialized_size() + 16).sum::<usize>()
    }
}

/// Saved as a map from key to bitmap, as when it was one.
impl Serialize for KeyBlocks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.entries.iter().map(|(k, b)| (k, crate::saved::bitmap::Out(b))))
    }
}

impl<'de> Deserialize<'de> for KeyBlocks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyBlocks, D::Error> {
        // A `BTreeMap` hands the entries over in key order.
        let entries = std::collections::BTreeMap::<Sym, crate::saved::bitmap::In>::deserialize(d)?.into_iter().map(|(k, b)| (k, b.0)).collect();
        Ok(KeyBlocks { entries, at: FxHashMap::default() })
    }
}

/// A segment's index, or where to load it from: after an open from the saved state, a sealed
/// segment's bitmaps stay in that file's map until a query first needs them.
pub struct LazyIndex {
    index: crate::saved::Lazy<SegmentIndex>,
    /// Of the saved bytes.
    crc: u32,
}

impl Default for LazyIndex {
    fn default() -> LazyIndex {
        LazyIndex::loaded(SegmentIndex::default())
    }
}

impl LazyIndex {
    pub fn loaded(index: SegmentIndex) -> LazyIndex {
        LazyIndex { index: crate::saved::Lazy::new(index), crc: 0 }
    }

    /// The bincode of a `SegmentIndex` in the saved-state file, and its CRC.
    pub fn saved(bytes: crate::saved::SavedBytes, crc: u32) -> LazyIndex {
        LazyIndex { index: crate::saved::Lazy::saved(bytes), crc }
    }

    /// The index, loaded by `load` on first use (with the saved bytes if their CRC holds).
    pub fn get_or_load(&self, load: impl FnOnce(Option<&[u8]>) -> SegmentIndex) -> &SegmentIndex {
        self.index.get_or_load(|b| load(Some(b).filter(|b| crc32fast::hash(b) == self.crc)))
    }

    /// The index if loaded, else its saved bytes.
    pub fn loaded_or_saved(&self) -> Result<&SegmentIndex, Vec<u8>> {
        self.index.with_saved(|r| r.map_err(<[u8]>::to_vec))
    }

    pub fn get_mut(&mut self) -> Option<&mut SegmentIndex> {
        self.index.get_mut()
    }

    /// Heap of the loaded index (0 while it is still in the saved file).
    pub fn heap_bytes(&self) -> usize {
        self.index.loaded().map_or(0, SegmentIndex::heap_bytes)
    }
}

impl SegmentIndex {
    pub fn add(&mut self, seq_delta: u32, ev: &StoredEvent) {
        self.add_entry(SegmentIndex::entry(seq_delta, ev));
    }

    /// What the index keeps of an event (so it can be built on another thread).
    pub fn entry(seq_delta: u32, ev: &StoredEvent) -> TailEntry {
        let mut dims = [Sym::EMPTY; INDEXED_DIMS.len()];
        for (i, dim) in INDEXED_DIMS.iter().enumerate() {
            dims[i] = ev.dim(*dim);
        }
        TailEntry { seq_delta, dims, key: ev.dim(Dim::Key), status: ev.status, success: ev.success }
    }

    pub fn add_entry(&mut self, entry: TailEntry) {
        if let Some(first) = self.tail.first() {
            // Fold when the buffer is full or the event starts a new roaring container.
            if self.tail.len() >= TAIL_EVENTS_MAX || first.seq_delta >> 16 != entry.seq_delta >> 16 {
                self.fold_tail();
            }
        }
        self.tail.push(entry);
    }

    /// Moves the buffered events into the bitmaps.
    fn fold_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let tail = std::mem::take(&mut self.tail);
        let mut groups = GroupBySym::default();
        for i in 0..INDEXED_DIMS.len() {
            groups.group(tail.iter().map(|e| (e.dims[i], e.seq_delta)));
            for (sym, deltas) in groups.runs() {
                append_sorted(self.by_dim[i].entry(sym).or_default(), deltas);
            }
        }
        // Key blocks: a key's run repeats a block once per event in it; keep each block once.
        groups.group(tail.iter().map(|e| (e.key, e.seq_delta / BLOCK_EVENTS)));
        for (key, blocks) in groups.runs() {
            let bitmap = self.key_blocks.entry(key);
            let mut last = bitmap.max();
            let _ = bitmap.append(blocks.iter().copied().filter(|b| {
                let new = last != Some(*b);
                last = Some(*b);
                new
            }));
        }
        // Statuses are few.
        let mut statuses: Vec<(u16, Vec<u32>)> = Vec::new();
        for e in &tail {
            match statuses.iter_mut().find(|(s, _)| *s == e.status) {
                Some((_, v)) => v.push(e.seq_delta),
                None => statuses.push((e.status, vec![e.seq_delta])),
            }
        }
        for (status, deltas) in &statuses {
            append_sorted(self.by_status.entry(*status).or_default(), deltas);
        }
        let failed: Vec<u32> = tail.iter().filter(|e| !e.success).map(|e| e.seq_delta).collect();
        append_sorted(&mut self.failed, &failed);
        self.tail = tail;
        self.tail.clear();
    }

    /// Folds the buffer and compacts the bitmaps once the segment takes no more events.
    pub fn seal(&mut self) {
        self.seal_uncompacted();
        self.compact();
    }

    /// `seal` without the compaction, which a segment roll leaves to another thread (a copy:
    /// `compacted_copy`).
    pub fn seal_uncompacted(&mut self) {
        self.fold_tail();
        self.tail = Vec::new();
        self.key_blocks.seal();
    }

    /// Folds the buffer and compacts the bitmaps (after a rebuild, so a sealed or reopened
    /// segment starts lean).
    pub fn flush(&mut self) {
        self.fold_tail();
        self.compact();
    }

    /// Each bitmap in its smallest container kinds, and in no more memory than it holds: a
    /// container built by appends keeps the spare capacity of its growth (a quarter of the
    /// bitmaps' memory, 18 MB at 10 M events), and `roaring` has no `shrink_to_fit`, but a clone
    /// allocates each container at its length.
    pub fn compact(&mut self) {
        *self = self.compacted_copy();
    }

    /// A copy of these bitmaps in the least memory (see `compact`); the buffer, which `seal` and
    /// `flush` fold first, is left out.
    pub fn compacted_copy(&self) -> SegmentIndex {
        debug_assert!(self.tail.is_empty(), "the buffer is folded first");
        fn lean(b: &RoaringBitmap) -> RoaringBitmap {
            let mut copy = b.clone();
            if copy.optimize() {
                // Containers of another kind were built: clone them to their length too.
                copy = copy.clone();
            }
            copy
        }
        fn lean_map<K: Copy + Eq + std::hash::Hash>(map: &FxHashMap<K, RoaringBitmap>) -> FxHashMap<K, RoaringBitmap> {
            map.iter().map(|(k, b)| (*k, lean(b))).collect()
        }
        SegmentIndex {
            by_dim: std::array::from_fn(|i| lean_map(&self.by_dim[i])),
            by_status: lean_map(&self.by_status),
            failed: lean(&self.failed),
            key_blocks: KeyBlocks { entries: self.key_blocks.entries.iter().map(|(k, b)| (*k, lean(b))).collect(), at: self.key_blocks.at.clone() },
            tail: Vec::new(),
        }
    }

    /// Sequence deltas of buffered events matching the indexed part of `filter`.
    fn tail_candidates(&self, filter: &LogFilter) -> RoaringBitmap {
        let dims = filter.dim_filters();
        let matches = |e: &TailEntry| {
            dims.iter().zip(e.dims.iter()).all(|(f, d)| f.is_none_or(|f| f == *d))
                && filter.key.is_none_or(|k| k == e.key)
                && match filter.status {
                    Some(StatusFilter::Code(c)) => e.status == c,
                    Some(StatusFilter::Class(c)) => crate::event::status_class(e.status) == c,
                    Some(StatusFilter::Errors) => !e.success,
                    None => true,
                }
        };
        RoaringBitmap::from_sorted_iter(self.tail.iter().filter(|e| matches(e)).map(|e| e.seq_delta))
            .unwrap_or_default()
    }

    fn tail_key_blocks(&self, key: Sym) -> impl Iterator<Item = u32> + '_ {
        let mut last = None;
        self.tail.iter().filter(move |e| e.key == key).filter_map(move |e| {
            let b = e.seq_delta / BLOCK_EVENTS;
            (last != Some(b)).then(|| {
                last = Some(b);
                b
            })
        })
    }

    pub fn heap_bytes(&self) -> usize {
        let mut n = self.key_blocks.heap_bytes();
        for m in &self.by_dim {
            n += m.capacity() * 40;
            n += m.values().map(|b| b.serialized_size() + 16).sum::<usize>();
        }
        n += self.by_status.capacity() * 40 + self.by_status.values().map(|b| b.serialized_size() + 16).sum::<usize>();
        n + self.failed.serialized_size() + self.tail.capacity() * std::mem::size_of::<TailEntry>()
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
        if let Some(f) = self.from_ms
            && ev.ts_ms < f {
                return false;
            }
        if let Some(t) = self.to_ms
            && ev.ts_ms >= t {
                return false;
            }
        for (i, dim) in INDEXED_DIMS.iter().enumerate() {
            if let Some(s) = self.dim_filters()[i]
                && ev.dim(*dim) != s {
                    return false;
                }
        }
        if let Some(k) = self.key
            && ev.dim(Dim::Key) != k {
                return false;
            }
        match self.status {
            Some(StatusFilter::Code(c)) if ev.status != c => return false,
            Some(StatusFilter::Class(c)) if ev.status_class() != c => return false,
            Some(StatusFilter::Errors) if ev.success => return false,
            _ => {}
        }
        if let Some(m) = self.min_latency_ms
            && ev.latency_ms < m {
                return false;
            }
        true
    }

    /// Whether the range can hold events whose times lie in `(min_ts, max_ts)` (none if min > max).
    fn overlaps(&self, (min_ts, max_ts): (i64, i64)) -> bool {
        if min_ts > max_ts {
            return false;
        }
        self.from_ms.is_none_or(|f| max_ts >= f) && self.to_ms.is_none_or(|t| min_ts < t)
    }
}

/// The event-granular candidates of a segment, `None` meaning "every event", or `Some(empty)`
/// when nothing in the segment can match.
fn candidates(ix: &SegmentIndex, filter: &LogFilter) -> Option<RoaringBitmap> {
    let acc = folded_candidates(ix, filter)?;
    // Buffered events are checked directly (at most one container's worth).
    Some(acc | ix.tail_candidates(filter))
}

fn folded_candidates(ix: &SegmentIndex, filter: &LogFilter) -> Option<RoaringBitmap> {
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
            and(ix.by_dim[i].get(sym));
        }
    }
    match filter.status {
        Some(StatusFilter::Code(c)) => and(ix.by_status.get(&c)),
        Some(StatusFilter::Class(class)) => {
            let mut u = RoaringBitmap::new();
            for (code, b) in &ix.by_status {
                if crate::event::status_class(*code) == class {
                    u |= b;
                }
            }
            and(Some(&u));
        }
        Some(StatusFilter::Errors) => and(Some(&ix.failed)),
        None => {}
    }
    acc
}

/// Appends sorted values that are all greater than the bitmap's maximum.
fn append_sorted(bitmap: &mut RoaringBitmap, values: &[u32]) {
    if let Err(e) = bitmap.append(values.iter().copied()) {
        // Only reachable through a caller bug; stay correct, if slower.
        debug_assert!(false, "index values out of order: {e:?}");
        bitmap.extend(values.iter().copied());
    }
}

/// Groups `(sym, value)` pairs by symbol with a counting sort: no hashing and no allocation per
/// symbol. Values keep their order within a symbol, so sorted input gives sorted runs.
#[derive(Default)]
struct GroupBySym {
    counts: Vec<u32>,
    touched: Vec<u32>,
    starts: Vec<u32>,
    flat: Vec<u32>,
}

impl GroupBySym {
    fn group(&mut self, pairs: impl Iterator<Item = (Sym, u32)> + Clone) {
        self.touched.clear();
        for (sym, _) in pairs.clone() {
            let s = sym.0 as usize;
            if s >= self.counts.len() {
                self.counts.resize(s + 1, 0);
            }
            if self.counts[s] == 0 {
                self.touched.push(sym.0);
            }
            self.counts[s] += 1;
        }
        // Offsets in touched order; `counts` becomes the write cursor.
        self.starts.clear();
        let mut at = 0u32;
        for &s in &self.touched {
            self.starts.push(at);
            let n = self.counts[s as usize];
            self.counts[s as usize] = at;
            at += n;
        }
        self.flat.clear();
        self.flat.resize(at as usize, 0);
        for (sym, value) in pairs {
            let cursor = &mut self.counts[sym.0 as usize];
            self.flat[*cursor as usize] = value;
            *cursor += 1;
        }
    }

    /// The runs of the last `group`, and resets the counters for the next one.
    fn runs(&mut self) -> impl Iterator<Item = (Sym, &[u32])> + '_ {
        let ends: Vec<u32> = self.touched.iter().map(|s| self.counts[*s as usize]).collect();
        for &s in &self.touched {
            self.counts[s as usize] = 0;
        }
        self.touched.iter().zip(self.starts.iter().zip(ends)).map(|(s, (start, end))| (Sym(*s), &self.flat[*start as usize..end as usize]))
    }
}

/// Appends to `out`, newest first, the events of `seg` (whose bitmaps are `ix`) with sequence
/// number below `before_seq` that match `filter`, until `out` holds `limit` events.
pub fn query_segment(seg: &Segment, ix: &SegmentIndex, filter: &LogFilter, before_seq: u64, limit: usize, out: &mut Vec<StoredEvent>) {
    if out.len() >= limit || seg.n_events == 0 || before_seq <= seg.base_seq() {
        return;
    }
    if !filter.overlaps((seg.min_ts, seg.max_ts)) {
        return;
    }
    let limit_delta = (before_seq - seg.base_seq()).min(u32::MAX as u64) as u32;
    let key_blocks: Option<RoaringBitmap> = filter.key.map(|k| {
        let mut blocks = ix.key_blocks.get(&k).cloned().unwrap_or_default();
        let max = blocks.max();
        let _ = blocks.append(ix.tail_key_blocks(k).skip_while(|b| max.is_some_and(|m| *b <= m)));
        blocks
    });
    if key_blocks.as_ref().is_some_and(|b| b.is_empty()) {
        return;
    }
    let cand = candidates(ix, filter);
    let mut batch: Vec<StoredEvent> = Vec::with_capacity(BLOCK_EVENTS as usize);
    let mut take_block = |b: u32, want: &dyn Fn(u32) -> bool, out: &mut Vec<StoredEvent>| {
        let Some(block) = seg.blocks.get(b as usize) else { return };
        if !filter.overlaps(seg.block_bounds(block)) {
            return;
        }
        batch.clear();
        seg.visit_block(b as usize, &|delta| delta < limit_delta && want(delta), &mut |ev| {
            if filter.matches(&ev) {
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
                if key_blocks.as_ref().is_some_and(|kb| !kb.contains(b)) {
                    continue;
                }
                take_block(b, &|delta| in_block.binary_search_by(|x| delta.cmp(x)).is_ok(), out);
            }
        }
        None => match &key_blocks {
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
    if !filter.overlaps((seg.min_ts, seg.max_ts)) {
        return;
    }
    for (b, block) in seg.blocks.iter().enumerate() {
        if filter.overlaps(seg.block_bounds(block)) {
            seg.for_each_in_block(b, &mut |ev| {
                f(&ev);
                true
            });
        }
    }
}

/// Calls `f`, oldest first, for each event of `seg` that matches `filter`, reading only the
/// blocks the time bounds, the key blocks and the bitmaps `ix` allow. A reader copy of the live
/// segment has no bitmaps: pass `None` for it. Stops when `f` returns false and returns false then.
pub fn scan_segment_filtered(seg: &Segment, ix: Option<&SegmentIndex>, filter: &LogFilter, f: &mut dyn FnMut(&StoredEvent) -> bool) -> bool {
    scan_segment_filtered_owned(seg, ix, filter, &mut |ev| f(&ev))
}

/// `scan_segment_filtered`, handing each event over (a caller that keeps it need not copy it).
pub fn scan_segment_filtered_owned(seg: &Segment, ix: Option<&SegmentIndex>, filter: &LogFilter, f: &mut dyn FnMut(StoredEvent) -> bool) -> bool {
    if seg.n_events == 0 || !filter.overlaps((seg.min_ts, seg.max_ts)) {
        return true;
    }
    let Some(ix) = ix else {
        for (b, block) in seg.blocks.iter().enumerate() {
            if filter.overlaps(seg.block_bounds(block)) && !seg.for_each_in_block(b, &mut |ev| !filter.matches(&ev) || f(ev)) {
                return false;
            }
        }
        return true;
    };
    let key_blocks: Option<RoaringBitmap> = filter.key.map(|k| {
        let mut blocks = ix.key_blocks.get(&k).cloned().unwrap_or_default();
        blocks.extend(ix.tail_key_blocks(k));
        blocks
    });
    if key_blocks.as_ref().is_some_and(|b| b.is_empty()) {
        return true;
    }
    let cand = candidates(ix, filter);
    if cand.as_ref().is_some_and(|c| c.is_empty()) {
        return true;
    }
    let mut visit = |ev: StoredEvent| !filter.matches(&ev) || f(ev);
    for (b, block) in seg.blocks.iter().enumerate() {
        if !filter.overlaps(seg.block_bounds(block)) || key_blocks.as_ref().is_some_and(|kb| !kb.contains(b as u32)) {
            continue;
        }
        let go = match &cand {
            Some(c) => {
                let lo = b as u32 * BLOCK_EVENTS;
                if c.range(lo..lo + BLOCK_EVENTS).next().is_none() {
                    continue;
                }
                seg.visit_block(b, &|d| c.contains(d), &mut visit)
            }
            None => seg.for_each_in_block(b, &mut visit),
        };
        if !go {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key blocks answer as a map would while built, once sealed (sorted, found by binary
    /// search), once saved and loaded, and when a loaded one takes events again.
    #[test]
    fn key_blocks_behave_like_a_map_in_every_form() {
        let mut kb = KeyBlocks::default();
        let mut naive: std::collections::BTreeMap<Sym, RoaringBitmap> = Default::default();
        let add = |kb: &mut KeyBlocks, naive: &mut std::collections::BTreeMap<Sym, RoaringBitmap>, round: u32| {
            for i in 0..3000u32 {
                let key = Sym(i.wrapping_mul(2_654_435_761) % 1000 + 1);
                let block = round * 10_000 + i;
                kb.entry(key).insert(block);
                naive.entry(key).or_default().insert(block);
            }
        };
        let check = |kb: &KeyBlocks, naive: &std::collections::BTreeMap<Sym, RoaringBitmap>, what: &str| {
            for k in 0..1100u32 {
                assert_eq!(kb.get(&Sym(k)), naive.get(&Sym(k)), "key {k}, {what}");
            }
        };
        add(&mut kb, &mut naive, 0);
        check(&kb, &naive, "while built");
        kb.seal();
        assert!(kb.at.is_empty());
        check(&kb, &naive, "sealed");
        let mut bytes = Vec::new();
        crate::format::encode_saved(&kb, &mut bytes).unwrap();
        let mut loaded: KeyBlocks = crate::format::decode_saved(&bytes).unwrap();
        check(&loaded, &naive, "loaded");
        add(&mut loaded, &mut naive, 1);
        check(&loaded, &naive, "loaded, then taking events");
    }

    /// Saving the state while another thread loads a segment's bitmaps from the saved file must
    /// still find their bytes (they were once taken out first and saved as missing, so the next
    /// open rebuilt them from the events); a load that panics leaves them for the next attempt.
    #[test]
    fn the_saved_bytes_stay_until_the_bitmaps_are_loaded() {
        let mut ix = SegmentIndex::default();
        ix.failed.insert(7);
        let mut bytes = Vec::new();
        crate::format::encode_saved(&ix, &mut bytes).unwrap();
        let mut m = memmap2::MmapMut::map_anon(bytes.len()).unwrap();
        m.copy_from_slice(&bytes);
        let map = std::sync::Arc::new(m.make_read_only().unwrap());
        let lazy = std::sync::Arc::new(LazyIndex::saved(crate::saved::SavedBytes::new(map, 0..bytes.len()), crc32fast::hash(&bytes)));

        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lazy.get_or_load(|_| panic!("a failed load"));
        }));
        assert!(panicked.is_err());
        assert_eq!(lazy.loaded_or_saved().err(), Some(bytes.clone()), "still saved after a failed load");

        let (loading, started) = std::sync::mpsc::channel();
        let loader = {
            let lazy = lazy.clone();
            std::thread::spawn(move || {
                lazy.get_or_load(|saved| {
                    loading.send(()).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    crate::format::decode_saved(saved.expect("the CRC holds")).expect("decodes")
                })
                .failed
                .len()
            })
        };
        started.recv().unwrap();
        assert_eq!(lazy.loaded_or_saved().err(), Some(bytes), "the bytes while another thread loads");
        assert_eq!(loader.join().unwrap(), 1);
        assert!(lazy.loaded_or_saved().expect("loaded").failed.contains(7));
    }
}
