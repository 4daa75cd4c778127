//! One segment file: its header, its frames, its dictionary, its block and bitmap indexes, and the
//! recovery scan that classifies what it finds.
//!
//! Invariants:
//! - A segment is named `{base_seq:020}.seg`; it is preallocated with `fallocate` and read through a
//!   read-only map of its whole length. Only bytes below `committed_len` are ever read, and a
//!   mapped file is never truncated (torn bytes are overwritten with zeros instead).
//! - Sequence deltas of event frames strictly increase within a segment; a dict frame carries the
//!   delta of the event after it. Every event of a segment lies in `[base_seq, next base_seq)`.
//! - `blocks[i]` covers the sequence deltas `[i * BLOCK_EVENTS, (i + 1) * BLOCK_EVENTS)`: the offset
//!   of the first frame at or after that delta, and the time bounds of the events in it.
//! - Recovery classifies per `shared/reference/storage.md`: zeros after the last valid frame are a
//!   clean end; an invalid frame followed only by zeros (or the end) in the newest segment is a torn
//!   tail and is cut, together with any trailing frames of a batch whose end marker never made it;
//!   anything else is corruption, reported with its offset, and every valid frame after it is kept.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Dim, NewEvent, Quality, StoredEvent, Sym, Tokens};
use crate::saved::fixed::{self, Fixed};
use crate::table::OpenMap;
use crate::format::{
    self, DictRecord, EventExtras, EventPayload, FrameFault, FrameHeader, SegmentHeader, ShapeRecord,
    FRAME_HEADER_BYTES, KIND_DICT, KIND_EVENT, SEGMENT_HEADER_BYTES, SHAPE_FLAG_STREAM,
    SHAPE_FLAG_SUCCESS, SHAPE_FLAG_TS_CLAMPED, SHAPE_QUALITY_SHIFT,
};
use crate::index::{LazyIndex, SegmentIndex};
use crate::interner::Interner;

/// Events per block of the sparse offset index.
pub const BLOCK_EVENTS: u32 = 64;
/// The placeholder an event shows for a string whose dict frame was lost to corruption.
pub const UNKNOWN_STRING: &str = "\u{fffd}";

pub fn segment_file_name(base_seq: u64) -> String {
    format!("{base_seq:020}.seg")
}

pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The attributes an event shares with many others, with global symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    /// The `Dim::Key` slot is always `Sym::EMPTY`: the key is carried per event.
    pub dims: [Sym; Dim::COUNT],
    pub status: u16,
    pub flags: u8,
}

impl Shape {
    pub fn of(dims: &[Sym; Dim::COUNT], ev: &NewEvent, ts_clamped: bool) -> Shape {
        let mut dims = *dims;
        dims[Dim::Key as usize] = Sym::EMPTY;
        let mut flags = (ev.quality as u8) << SHAPE_QUALITY_SHIFT;
        if ev.success {
            flags |= SHAPE_FLAG_SUCCESS;
        }
        if ev.stream {
            flags |= SHAPE_FLAG_STREAM;
        }
        if ts_clamped {
            flags |= SHAPE_FLAG_TS_CLAMPED;
        }
        Shape { dims, status: ev.status, flags }
    }
}

/// A segment's dictionary: local string and shape ids to global ones, and (while the segment is
/// live) the reverse maps the writer uses.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SegmentDict {
    #[serde(with = "crate::saved::fixed")]
    pub strings: Vec<Sym>,
    #[serde(with = "crate::saved::fixed")]
    pub shapes: Vec<Shape>,
    /// The local id of each symbol the segment defines, indexed by the symbol (`NO_LOCAL_ID`
    /// elsewhere): symbols are dense from 0, so this is at most 4 bytes per interned string, and
    /// a lookup is one load (an append looks up every event's key and, for a new shape, its
    /// strings; a hash map cost it a hash and a probe).
    #[serde(skip)]
    string_ids: Vec<u32>,
    #[serde(skip)]
    shape_ids: OpenMap<Shape, u32>,
    pub unknown_references: u64,
}

/// What the writer must put in a dict frame before an event.
#[derive(Default)]
pub struct DictDelta {
    pub first_string_id: u32,
    pub strings: Vec<Sym>,
    pub first_shape_id: u32,
    pub shapes: Vec<ShapeRecord>,
}

impl DictDelta {
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty() && self.shapes.is_empty()
    }
}

/// Marks a symbol the segment does not define in `SegmentDict::string_ids`.
const NO_LOCAL_ID: u32 = u32::MAX;

fn set_local_id(ids: &mut Vec<u32>, sym: Sym, id: u32) {
    let i = sym.0 as usize;
    if i >= ids.len() {
        ids.resize(i + 1, NO_LOCAL_ID);
    }
    ids[i] = id;
}

impl SegmentDict {
    /// Builds the reverse maps so the writer can continue this segment.
    pub fn enable_writing(&mut self) {
        self.string_ids = Vec::new();
        for (i, s) in self.strings.iter().enumerate() {
            set_local_id(&mut self.string_ids, *s, i as u32);
        }
        self.shape_ids = self.shapes.iter().enumerate().map(|(i, s)| (*s, i as u32)).collect();
    }

    /// The decoding half of the dictionary, without the writer's reverse maps.
    pub fn reader_copy(&self) -> SegmentDict {
        SegmentDict {
            strings: self.strings.clone(),
            shapes: self.shapes.clone(),
            string_ids: Vec::new(),
            shape_ids: OpenMap::default(),
            unknown_references: self.unknown_references,
        }
    }

    /// Drops the reverse maps when the segment is sealed.
    pub fn seal(&mut self) {
        self.string_ids = Vec::new();
        self.shape_ids = OpenMap::default();
        self.strings.shrink_to_fit();
        self.shapes.shrink_to_fit();
    }

    fn local_string(&mut self, sym: Sym, delta: &mut DictDelta) -> u32 {
        if let Some(&id) = self.string_ids.get(sym.0 as usize)
            && id != NO_LOCAL_ID
        {
            return id;
        }
        let id = self.strings.len() as u32;
        if delta.strings.is_empty() {
            delta.first_string_id = id;
        }
        self.strings.push(sym);
        set_local_id(&mut self.string_ids, sym, id);
        delta.strings.push(sym);
        id
    }

    /// Asks the CPU for what `local_ids` will read for `shape` and `key`, ahead of it.
    #[inline]
    pub fn prefetch(&self, shape: &Shape, key: Sym) {
        if let Some(id) = self.string_ids.get(key.0 as usize) {
            crate::cpu::prefetch_read((id as *const u32).cast());
        }
        self.shape_ids.prefetch(shape);
    }

    /// Local ids for an event's shape and key, recording new definitions in `delta`.
    pub fn local_ids(&mut self, shape: &Shape, key: Sym, delta: &mut DictDelta) -> (u32, u32) {
        let key_id = self.local_string(key, delta);
        if let Some(id) = self.shape_ids.get(shape) {
            return (id, key_id);
        }
        let mut dims = [0u32; Dim::COUNT];
        for (i, sym) in shape.dims.iter().enumerate() {
            dims[i] = self.local_string(*sym, delta);
        }
        let id = self.shapes.len() as u32;
        if delta.shapes.is_empty() {
            delta.first_shape_id = id;
        }
        self.shapes.push(*shape);
        self.shape_ids.insert(*shape, id);
        delta.shapes.push(ShapeRecord { dims, status: shape.status, flags: shape.flags });
        (id, key_id)
    }

    /// Forgets definitions made after the dictionary held `n_strings` and `n_shapes`: they were
    /// never written.
    pub fn truncate(&mut self, n_strings: usize, n_shapes: usize) {
        if n_shapes < self.shapes.len() {
            self.shapes.truncate(n_shapes);
            self.shape_ids.retain(|_, &id| (id as usize) < n_shapes);
        }
        for s in self.strings.drain(n_strings.min(self.strings.len())..) {
            set_local_id(&mut self.string_ids, s, NO_LOCAL_ID);
        }
    }

    fn apply_record(&mut self, rec: &DictRecord<'_>, interner: &mut Interner) {
        // Ids far beyond what the segment holds can only come from a forged frame.
        const ID_JUMP_MAX: usize = 1 << 20;
        let first = rec.first_string_id as usize;
        if !rec.strings.is_empty() && first >= self.strings.len() && first - self.strings.len() <= ID_JUMP_MAX {
            if first > self.strings.len() {
                // Entries defined in a frame lost to corruption.
                let unknown = unknown_sym(interner);
                self.strings.resize(first, unknown);
            }
            for s in &rec.strings {
                let sym = match interner.intern(s) {
                    Some(sym) => sym,
                    None => unknown_sym(interner),
                };
                self.strings.push(sym);
            }
        }
        let first_shape = rec.first_shape_id as usize;
        if !rec.shapes.is_empty() && first_shape >= self.shapes.len() && first_shape - self.shapes.len() <= ID_JUMP_MAX {
            if first_shape > self.shapes.len() {
                let unknown = unknown_sym(interner);
                let placeholder = Shape { dims: [unknown; Dim::COUNT], status: 0, flags: 0 };
                self.shapes.resize(first_shape, placeholder);
            }
            for sr in &rec.shapes {
                let mut dims = [Sym::EMPTY; Dim::COUNT];
                for (i, local) in sr.dims.iter().enumerate() {
                    dims[i] = match self.strings.get(*local as usize) {
                        Some(s) => *s,
                        None => {
                            self.unknown_references += 1;
                            unknown_sym(interner)
                        }
                    };
                }
                dims[Dim::Key as usize] = Sym::EMPTY;
                self.shapes.push(Shape { dims, status: sr.status, flags: sr.flags });
            }
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.strings.capacity() * 4
            + self.shapes.capacity() * std::mem::size_of::<Shape>()
            + self.string_ids.capacity() * 4
            + self.shape_ids.heap_bytes()
    }
}

/// The symbol of the placeholder for strings lost to corruption; interned only when needed, so a
/// clean rebuild numbers symbols exactly as the writer did.
fn unknown_sym(interner: &mut Interner) -> Sym {
    interner.intern(UNKNOWN_STRING).unwrap_or(Sym::EMPTY)
}

/// Decodes an event payload with the segment's dictionary.
pub fn decode_event(
    header: &SegmentHeader,
    dict: &SegmentDict,
    kind: u8,
    seq_delta: u32,
    payload: &[u8],
) -> std::result::Result<StoredEvent, format::PayloadError> {
    let rec = EventPayload::decode(kind, payload)?;
    let shape = dict.shapes.get(rec.shape as usize).copied().unwrap_or(Shape {
        dims: [Sym::EMPTY; Dim::COUNT],
        status: 0,
        flags: 0,
    });
    let mut dims = shape.dims;
    dims[Dim::Key as usize] = dict.strings.get(rec.key as usize).copied().unwrap_or(Sym::EMPTY);
    let extras = rec.extras.unwrap_or_default();
    Ok(StoredEvent {
        seq: header.base_seq + seq_delta as u64,
        ts_ms: header.created_ms.saturating_add(rec.ts_delta_ms),
        dims,
        status: shape.status,
        success: shape.flags & SHAPE_FLAG_SUCCESS != 0,
        stream: shape.flags & SHAPE_FLAG_STREAM != 0,
        ts_clamped: shape.flags & SHAPE_FLAG_TS_CLAMPED != 0,
        quality: Quality::from_u8((shape.flags >> SHAPE_QUALITY_SHIFT) & 3).unwrap_or_default(),
        tokens: Tokens::from_array(rec.tokens),
        latency_ms: rec.latency_ms,
        ttft_ms: rec.ttft_ms,
        event_id: extras.event_id.map(Box::from),
        request_id: extras.request_id.map(Box::from),
        error_message: extras.error_message.map(Box::from),
    })
}

/// Encodes an event payload (the dict must already hold its shape and key); returns the kind
/// flags its frame must carry.
pub fn encode_event(
    header: &SegmentHeader,
    shape_id: u32,
    key_id: u32,
    ts_ms: i64,
    ev: &NewEvent,
    out: &mut Vec<u8>,
) -> u8 {
    let extras = if ev.event_id.is_some() || ev.request_id.is_some() || ev.error_message.is_some() {
        Some(EventExtras {
            event_id: ev.event_id.as_deref(),
            request_id: ev.request_id.as_deref(),
            error_message: ev.error_message.as_deref(),
        })
    } else {
        None
    };
    EventPayload {
        ts_delta_ms: ts_ms - header.created_ms,
        shape: shape_id,
        key: key_id,
        tokens: ev.tokens.to_array(),
        latency_ms: ev.latency_ms,
        ttft_ms: ev.ttft_ms,
        extras,
    }
    .encode(out)
}

/// Encodes a dict delta as one or more dict payloads, each within the frame bound.
pub fn encode_dict(delta: &DictDelta, interner: &Interner, out: &mut Vec<Vec<u8>>) {
    // Strings first, in chunks; then shapes, in chunks. Each chunk stays far below the bound.
    const CHUNK_BYTES: usize = 32 * 1024;
    let mut i = 0;
    while i < delta.strings.len() {
        let mut bytes = 0;
        let mut strings = Vec::new();
        while i < delta.strings.len() && bytes < CHUNK_BYTES {
            let s = interner.resolve(delta.strings[i]);
            bytes += s.len() + 3;
            strings.push(s);
            i += 1;
        }
        let first = delta.first_string_id + (i - strings.len()) as u32;
        let rec = DictRecord { first_string_id: first, strings, first_shape_id: u32::MAX, shapes: Vec::new() };
        let mut p = Vec::new();
        format::encode_payload(&rec, &mut p);
        out.push(p);
    }
    for (n, chunk) in delta.shapes.chunks(512).enumerate() {
        let rec = DictRecord {
            first_string_id: u32::MAX,
            strings: Vec::new(),
            first_shape_id: delta.first_shape_id + (n * 512) as u32,
            shapes: chunk.to_vec(),
        };
        let mut p = Vec::new();
        format::encode_payload(&rec, &mut p);
        out.push(p);
    }
}

/// The file offset of `BLOCK_EVENTS` consecutive events and their time bounds, in 12 bytes (a
/// block per 64 events: 20 bytes with millisecond bounds, 1.9 MB more at 10 M events). The bounds
/// are whole seconds from the segment's creation second, the first rounded down and the last up,
/// saturated at the `i32` range (then unbounded): they may cover a little more than the block's
/// events, never less, and only ever rule blocks out (every reader checks each event's time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub offset: u32,
    /// Seconds from the base (`Segment::block_base_s`); `i32::MIN` is unbounded below.
    pub min_s: i32,
    /// Seconds from the base; `i32::MAX` is unbounded above.
    pub max_s: i32,
}

const _: () = assert!(std::mem::size_of::<Block>() == 12);

impl Block {
    /// A block at `offset` with no event yet (its bounds overlap no range).
    pub fn empty(offset: u32) -> Block {
        Block { offset, min_s: i32::MAX, max_s: i32::MIN }
    }

    /// Widens the bounds to cover `ts_ms`.
    pub fn note(&mut self, base_s: i64, ts_ms: i64) {
        let s = (ts_ms.div_euclid(1000).saturating_sub(base_s)).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        self.min_s = self.min_s.min(s);
        self.max_s = self.max_s.max(s);
    }

    /// The first and last millisecond the block's events may have (the first after the last for
    /// a block with no event).
    pub fn bounds(&self, base_s: i64) -> (i64, i64) {
        let lo = if self.min_s == i32::MIN { i64::MIN } else { base_s.saturating_add(i64::from(self.min_s)).saturating_mul(1000) };
        let hi = if self.max_s == i32::MAX { i64::MAX } else { base_s.saturating_add(i64::from(self.max_s)).saturating_mul(1000).saturating_add(999) };
        (lo, hi)
    }
}

impl Fixed for Block {
    const SIZE: usize = 12;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.min_s.to_le_bytes());
        out.extend_from_slice(&self.max_s.to_le_bytes());
    }
    fn get(b: &[u8]) -> Block {
        Block { offset: fixed::u32_at(b, 0), min_s: fixed::u32_at(b, 4) as i32, max_s: fixed::u32_at(b, 8) as i32 }
    }
}

impl Fixed for Sym {
    const SIZE: usize = 4;
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
    }
    fn get(b: &[u8]) -> Sym {
        Sym(u32::get(b))
    }
}

impl Fixed for Shape {
    const SIZE: usize = 4 * Dim::COUNT + 3;
    fn put(&self, out: &mut Vec<u8>) {
        self.dims.iter().for_each(|d| d.put(out));
        out.extend_from_slice(&self.status.to_le_bytes());
        out.push(self.flags);
    }
    fn get(b: &[u8]) -> Shape {
        let at = 4 * Dim::COUNT;
        Shape {
            dims: std::array::from_fn(|i| Sym::get(&b[4 * i..])),
            status: u16::from_le_bytes([b[at], b[at + 1]]),
            flags: b[at + 2],
        }
    }
}

/// What recovery found in one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanIssue {
    /// Invalid bytes followed by valid frames (or anywhere in a sealed segment): reported, skipped.
    Corruption { offset: u64, reason: String, skipped_bytes: u64 },
    /// Invalid or unfinished bytes at the end of the newest segment: cut.
    TornTail { offset: u64, cut_bytes: u64 },
    /// Dict entries lost to corruption left some events with unknown strings.
    UnknownStrings { references: u64 },
}

pub struct Segment {
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub map: Arc<Mmap>,
    pub file_len: u64,
    pub committed_len: u64,
    pub n_events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub min_ts: i64,
    pub max_ts: i64,
    pub blocks: Vec<Block>,
    pub dict: SegmentDict,
    /// The bitmaps: see [`Segment::index`].
    index: LazyIndex,
    pub sealed: bool,
    /// Wall-clock time the segment stopped taking appends (the next segment's creation time).
    pub sealed_at_ms: Option<i64>,
    /// Bytes in use: the header and the committed frames.
    pub bytes_used: u64,
    /// Corrupt regions found at open, `(start, end)`: readers jump over them.
    pub skips: Vec<(u64, u64)>,
    /// Whether the event ids of this segment are in the engine's dedup set (cleared once they
    /// age out of the window, so they are removed once, not on every retention pass).
    pub ids_in_dedup: std::sync::atomic::AtomicBool,
    bitmaps_compacted: bool,
}

impl Segment {
    pub fn new_mapped(path: PathBuf, header: SegmentHeader, file: &File) -> Result<Segment> {
        let file_len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
        // SAFETY: the file is only ever extended, never truncated, while this map lives, and the
        // engine reads only below `committed_len`, which holds bytes it validated or wrote.
        let map = unsafe { memmap2::MmapOptions::new().map(file) }.map_err(|e| Error::io("mmap", &path, e))?;
        Ok(Segment {
            path,
            header,
            map: Arc::new(map),
            file_len,
            committed_len: SEGMENT_HEADER_BYTES as u64,
            n_events: 0,
            first_seq: None,
            last_seq: None,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            blocks: Vec::new(),
            dict: SegmentDict::default(),
            index: LazyIndex::default(),
            sealed: false,
            sealed_at_ms: None,
            bytes_used: SEGMENT_HEADER_BYTES as u64,
            skips: Vec::new(),
            ids_in_dedup: std::sync::atomic::AtomicBool::new(true),
            bitmaps_compacted: true,
        })
    }

    pub fn base_seq(&self) -> u64 {
        self.header.base_seq
    }

    /// A read-only copy of the committed part, for readers that must not hold the engine's lock:
    /// it shares the map and copies the small block index and dictionary (no bitmaps).
    pub fn reader_copy(&self) -> Segment {
        Segment {
            path: self.path.clone(),
            header: self.header,
            map: self.map.clone(),
            file_len: self.file_len,
            committed_len: self.committed_len,
            n_events: self.n_events,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            blocks: self.blocks.clone(),
            dict: self.dict.reader_copy(),
            index: LazyIndex::default(),
            sealed: self.sealed,
            sealed_at_ms: self.sealed_at_ms,
            bytes_used: self.bytes_used,
            skips: self.skips.clone(),
            ids_in_dedup: std::sync::atomic::AtomicBool::new(false),
            bitmaps_compacted: true,
        }
    }

    /// The segment's bitmaps. Left in the saved state by an open that used it, they are loaded
    /// on first use; if those bytes do not decode, they are built again from the events.
    pub fn index(&self) -> &SegmentIndex {
        self.index.get_or_load(|saved| {
            if let Some(ix) = saved.and_then(crate::format::decode_saved::<SegmentIndex>) {
                return ix;
            }
            let mut ix = SegmentIndex::default();
            self.for_each(&mut |ev| {
                ix.add((ev.seq - self.header.base_seq) as u32, &ev);
                true
            });
            if self.sealed {
                ix.seal();
            }
            ix
        })
    }

    pub fn index_mut(&mut self) -> &mut SegmentIndex {
        self.index();
        self.index.get_mut().expect("loaded just above")
    }

    /// Marks the segment sealed at `at_ms` (it takes no more events), and drops or trims what
    /// only its writer needed: the dictionary's reverse maps, the spare capacity of the blocks,
    /// the bitmaps' buffer and theirs.
    pub fn seal(&mut self, at_ms: i64) {
        self.seal_uncompacted(at_ms);
        self.index_mut().compact();
        self.bitmaps_compacted = true;
    }

    /// `seal`, but the bitmaps keep their spare capacity until a copy replaces the segment
    /// (`compacted`): a segment roll leaves that to another thread, off the appender's path.
    pub fn seal_uncompacted(&mut self, at_ms: i64) {
        self.sealed = true;
        self.sealed_at_ms = Some(at_ms);
        self.dict.seal();
        self.blocks.shrink_to_fit();
        self.index_mut().seal_uncompacted();
        self.bitmaps_compacted = false;
    }

    /// A copy of this sealed segment with its bitmaps compacted (`SegmentIndex::compacted_copy`).
    pub fn compacted(&self) -> Segment {
        let mut copy = self.reader_copy();
        copy.index = LazyIndex::loaded(self.index().compacted_copy());
        copy.ids_in_dedup = std::sync::atomic::AtomicBool::new(self.ids_in_dedup.load(std::sync::atomic::Ordering::Relaxed));
        copy
    }

    /// False for a segment sealed by `seal_uncompacted` until its `compacted` copy replaces it.
    pub fn bitmaps_compacted(&self) -> bool {
        self.bitmaps_compacted
    }

    /// Takes the bitmaps out, loading them first if they are still in the saved state.
    pub fn take_index(&mut self) -> SegmentIndex {
        std::mem::take(self.index_mut())
    }

    /// A read-only copy that takes over the bitmaps as they are (loaded or still saved), so they
    /// can be loaded elsewhere: the live segment's are kept by the engine's fold.
    pub fn detach_index(&mut self) -> Segment {
        let mut copy = self.reader_copy();
        copy.index = std::mem::take(&mut self.index);
        copy
    }

    pub fn set_index(&mut self, index: LazyIndex) {
        self.index = index;
    }

    /// The index for the saved state: its bincode (copied as is while still unloaded).
    pub fn saved_index(&self) -> Vec<u8> {
        match self.index.loaded_or_saved() {
            Ok(ix) => {
                let mut out = Vec::new();
                crate::format::encode_saved(ix, &mut out).expect("writing to a Vec cannot fail");
                out
            }
            Err(bytes) => bytes,
        }
    }

    pub fn index_heap_bytes(&self) -> usize {
        self.index.heap_bytes()
    }

    /// The second the blocks' time bounds count from: the segment's creation.
    pub fn block_base_s(&self) -> i64 {
        self.header.created_ms.div_euclid(1000)
    }

    /// The first and last millisecond block `block`'s events may have.
    pub fn block_bounds(&self, block: &Block) -> (i64, i64) {
        block.bounds(self.block_base_s())
    }

    /// Records an event in the blocks and bounds only (its index entry is built elsewhere);
    /// returns its sequence delta.
    pub fn note_position(&mut self, offset: u64, ev: &StoredEvent) -> u32 {
        let seq_delta = (ev.seq - self.header.base_seq) as u32;
        let b = (seq_delta / BLOCK_EVENTS) as usize;
        while self.blocks.len() <= b {
            self.blocks.push(Block::empty(offset as u32));
        }
        let base_s = self.block_base_s();
        self.blocks[b].note(base_s, ev.ts_ms);
        self.min_ts = self.min_ts.min(ev.ts_ms);
        self.max_ts = self.max_ts.max(ev.ts_ms);
        self.n_events += 1;
        self.first_seq.get_or_insert(ev.seq);
        self.last_seq = Some(ev.seq);
        seq_delta
    }

    /// The committed bytes of the segment.
    pub fn bytes(&self) -> &[u8] {
        &self.map[..self.committed_len as usize]
    }

    /// Calls `f` for each event of block `b` in sequence order; stops early when `f` returns false.
    pub fn for_each_in_block(&self, b: usize, f: &mut dyn FnMut(StoredEvent) -> bool) -> bool {
        self.visit_block(b, &|_| true, f)
    }

    /// Like `for_each_in_block`, but decodes only the events whose sequence delta `want`s: the
    /// others are stepped over by their header alone (their bytes were validated when written or
    /// recovered; every decoded frame is checked again).
    pub fn visit_block(&self, b: usize, want: &dyn Fn(u32) -> bool, f: &mut dyn FnMut(StoredEvent) -> bool) -> bool {
        let Some(block) = self.blocks.get(b) else { return true };
        let lo = b as u32 * BLOCK_EVENTS;
        let hi = lo + BLOCK_EVENTS;
        let bytes = self.bytes();
        let mut pos = block.offset as usize;
        while pos + FRAME_HEADER_BYTES <= bytes.len() {
            // A corrupt region reported at open: jump over it.
            if let Some((_, to)) = self.skips.iter().find(|(from, _)| *from == pos as u64) {
                pos = *to as usize;
                continue;
            }
            let h = FrameHeader::read(&bytes[pos..]);
            if !format::kind_is_valid(h.kind) || pos + h.frame_bytes() > bytes.len() {
                return true;
            }
            let at = pos;
            pos += h.frame_bytes();
            if h.kind_type() != KIND_EVENT || h.seq_delta < lo || !want(h.seq_delta) {
                if h.seq_delta >= hi && h.kind_type() == KIND_EVENT {
                    return true;
                }
                continue;
            }
            if h.seq_delta >= hi {
                return true;
            }
            let Ok((h, payload)) = format::check_frame(self.header.salt, &bytes[at..]) else {
                return true;
            };
            if let Ok(ev) = decode_event(&self.header, &self.dict, h.kind, h.seq_delta, payload)
                && !f(ev)
            {
                return false;
            }
        }
        true
    }

    /// Calls `f` with each event after sequence number `seq`, in order, until it returns false.
    pub fn for_each_after(&self, seq: u64, f: &mut dyn FnMut(StoredEvent) -> bool) {
        let from = seq.saturating_add(1).saturating_sub(self.base_seq()) / u64::from(BLOCK_EVENTS);
        let first = usize::try_from(from).unwrap_or(usize::MAX);
        for b in first..self.blocks.len() {
            let go = self.visit_block(b, &|delta| self.base_seq() + u64::from(delta) > seq, f);
            if !go {
                return;
            }
        }
    }

    /// Calls `f` for every event of the segment in sequence order.
    pub fn for_each(&self, f: &mut dyn FnMut(StoredEvent) -> bool) {
        for b in 0..self.blocks.len() {
            if !self.for_each_in_block(b, f) {
                return;
            }
        }
    }

    pub fn get(&self, seq: u64) -> Option<StoredEvent> {
        if seq < self.header.base_seq {
            return None;
        }
        let delta = seq - self.header.base_seq;
        let b = (delta / BLOCK_EVENTS as u64) as usize;
        let mut found = None;
        self.for_each_in_block(b, &mut |ev| {
            if ev.seq == seq {
                found = Some(ev);
                return false;
            }
            ev.seq < seq
        });
        found
    }

    /// The block index and the dictionary (the bitmaps: `index_heap_bytes`).
    pub fn heap_bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<Block>() + self.dict.heap_bytes()
    }
}

/// Bounds a scan checks sequence numbers against.
pub struct ScanBounds {
    /// Event sequence numbers must be greater than this.
    pub seq_floor: u64,
    /// ...and less than this.
    pub seq_ceiling: u64,
    pub newest: bool,
    /// Bytes beyond this offset are known to be zeros (holes), so the scan need not read them.
    pub data_len: u64,
}

pub struct ScanOutcome {
    pub issues: Vec<ScanIssue>,
    /// Where torn bytes start, when the tail must be cut, and where the last non-zero byte ends.
    pub cut: Option<(u64, u64)>,
}

/// Scans the frames of a mapped segment, filling its dictionary and calling `on_event` for each
/// event kept, in order. Sets `committed_len`.
pub fn scan(
    seg: &mut Segment,
    bounds: &ScanBounds,
    interner: &mut Interner,
    on_event: &mut dyn FnMut(&mut Segment, u64, StoredEvent),
) -> ScanOutcome {
    let map = seg.map.clone();
    let data: &[u8] = &map[..seg.file_len.min(map.len() as u64).min(bounds.data_len.max(SEGMENT_HEADER_BYTES as u64)) as usize];
    let salt = seg.header.salt;
    let base = seg.header.base_seq;
    let mut issues = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut last_event_delta: Option<u32> = bounds.seq_floor.checked_sub(base).and_then(|d| u32::try_from(d).ok());
    if bounds.seq_floor < base {
        last_event_delta = None;
    }
    let ceiling_delta = bounds.seq_ceiling.saturating_sub(base).min(u32::MAX as u64 + 1);
    // Frames of the batch being read, not yet known to be complete: (offset, header).
    let mut pending: Vec<(usize, FrameHeader)> = Vec::new();
    let mut kept_end = SEGMENT_HEADER_BYTES;
    let mut cut = None;

    let plausible = |h: &FrameHeader, last: Option<u32>| -> bool {
        let min = match (h.kind_type(), last) {
            (_, None) => 0,
            (KIND_EVENT, Some(l)) => l as u64 + 1,
            (_, Some(l)) => l as u64 + 1,
        };
        (h.seq_delta as u64) >= min && (h.seq_delta as u64) < ceiling_delta
    };

    let flush = |seg: &mut Segment, pending: &mut Vec<(usize, FrameHeader)>, interner: &mut Interner, on_event: &mut dyn FnMut(&mut Segment, u64, StoredEvent), kept_end: &mut usize| {
        for (off, h) in pending.drain(..) {
            let payload = &data[off + FRAME_HEADER_BYTES..off + h.frame_bytes()];
            match h.kind_type() {
                KIND_DICT => {
                    if let Ok(rec) = format::decode_payload::<DictRecord>(payload) {
                        seg.dict.apply_record(&rec, interner);
                    }
                }
                _ => {
                    if let Ok(ev) = decode_event(&seg.header, &seg.dict, h.kind, h.seq_delta, payload) {
                        on_event(seg, off as u64, ev);
                    }
                }
            }
            *kept_end = off + h.frame_bytes();
        }
    };

    // In the newest segment, damage counts as corruption (and the unfinished batch before it is
    // kept) only once a complete batch follows it; until then it may be the tail of a torn write,
    // and deciding early would make a second recovery of the same bytes disagree with the first.
    let mut unconfirmed: Vec<ScanIssue> = Vec::new();
    let mut unconfirmed_from: Option<usize> = None;
    loop {
        let remaining = data.len().saturating_sub(pos);
        let fault: FrameFault;
        if remaining == 0 {
            break;
        }
        if remaining >= FRAME_HEADER_BYTES && FrameHeader::is_zero(&data[pos..]) {
            if all_zero(&data[pos..]) {
                break;
            }
            fault = FrameFault::UnknownKind(0);
        } else if remaining < FRAME_HEADER_BYTES && all_zero(&data[pos..]) {
            break;
        } else {
            match format::check_frame(salt, &data[pos..]) {
                Ok((h, _)) if plausible(&h, last_event_delta) => {
                    pending.push((pos, h));
                    if h.kind_type() == KIND_EVENT {
                        last_event_delta = Some(h.seq_delta);
                    }
                    pos += h.frame_bytes();
                    if h.is_batch_end() {
                        flush(seg, &mut pending, interner, on_event, &mut kept_end);
                        issues.append(&mut unconfirmed);
                        unconfirmed_from = None;
                    }
                    continue;
                }
                Ok(_) => fault = FrameFault::ChecksumMismatch,
                Err(f) => fault = f,
            }
        }
        let reason = match fault {
            FrameFault::UnknownKind(0) => "zeros followed by data".to_string(),
            FrameFault::ChecksumMismatch if format::check_frame(salt, &data[pos..]).is_ok() => {
                "sequence number out of order".to_string()
            }
            f => f.to_string(),
        };
        // Look for the next frame that validates.
        match resync(data, pos + 1, salt, &|h| plausible(h, last_event_delta)) {
            Some(next) => {
                let issue = ScanIssue::Corruption { offset: pos as u64, reason, skipped_bytes: (next - pos) as u64 };
                seg.skips.push((pos as u64, next as u64));
                if bounds.newest {
                    unconfirmed_from.get_or_insert(pos);
                    unconfirmed.push(issue);
                } else {
                    // Records before the damage were written and maybe acknowledged: keep them.
                    flush(seg, &mut pending, interner, on_event, &mut kept_end);
                    issues.push(issue);
                }
                pos = next;
            }
            None => {
                let end = last_non_zero(data, pos);
                if bounds.newest {
                    let from = torn_from(&pending, unconfirmed_from, pos);
                    pending.clear();
                    seg.skips.retain(|(s, _)| *s < from as u64);
                    issues.push(ScanIssue::TornTail { offset: from as u64, cut_bytes: (end - from) as u64 });
                    cut = Some((from as u64, end as u64));
                } else {
                    flush(seg, &mut pending, interner, on_event, &mut kept_end);
                    issues.push(ScanIssue::Corruption { offset: pos as u64, reason, skipped_bytes: (end - pos) as u64 });
                }
                break;
            }
        }
    }
    if !pending.is_empty() || (bounds.newest && unconfirmed_from.is_some() && cut.is_none()) {
        if bounds.newest {
            // The last batch never got its end marker: it was not acknowledged.
            let from = torn_from(&pending, unconfirmed_from, pos);
            let end = last_non_zero(data, from);
            pending.clear();
            seg.skips.retain(|(s, _)| *s < from as u64);
            issues.push(ScanIssue::TornTail { offset: from as u64, cut_bytes: (end - from) as u64 });
            cut = Some((from as u64, end as u64));
        } else {
            flush(seg, &mut pending, interner, on_event, &mut kept_end);
        }
    }
    if seg.dict.unknown_references > 0 {
        issues.push(ScanIssue::UnknownStrings { references: seg.dict.unknown_references });
    }
    seg.committed_len = kept_end as u64;
    seg.bytes_used = kept_end as u64;
    ScanOutcome { issues, cut }
}

/// Where a torn tail of the newest segment starts: at the unfinished batch, or at damage no
/// complete batch followed, whichever comes first.
fn torn_from(pending: &[(usize, FrameHeader)], unconfirmed_from: Option<usize>, pos: usize) -> usize {
    [pending.first().map(|p| p.0), unconfirmed_from, Some(pos)].into_iter().flatten().min().unwrap_or(pos)
}

fn all_zero(b: &[u8]) -> bool {
    let (prefix, words, suffix) = unsafe { b.align_to::<u64>() };
    prefix.iter().all(|&x| x == 0) && words.iter().all(|&x| x == 0) && suffix.iter().all(|&x| x == 0)
}

/// The end of the last non-zero byte at or after `from` (or `from` when all are zero).
fn last_non_zero(b: &[u8], from: usize) -> usize {
    b[from..].iter().rposition(|&x| x != 0).map(|p| from + p + 1).unwrap_or(from)
}

/// The offset of the next valid, plausible frame at or after `from`.
fn resync(data: &[u8], from: usize, salt: u32, plausible: &dyn Fn(&FrameHeader) -> bool) -> Option<usize> {
    let mut p = from;
    while p + FRAME_HEADER_BYTES <= data.len() {
        if format::kind_is_valid(data[p + format::FRAME_KIND_AT]) {
            let h = FrameHeader::read(&data[p..]);
            if p + h.frame_bytes() <= data.len() && plausible(&h) && format::check_frame(salt, &data[p..]).is_ok() {
                return Some(p);
            }
        }
        p += 1;
    }
    None
}

/// Reads and checks the header of the segment file whose name gives `base`; the error is the
/// reason it is unusable.
pub fn read_header(file: &File, base: u64) -> Result<SegmentHeader, String> {
    let mut head = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut head, 0).map_err(|e| e.to_string())?;
    let h = SegmentHeader::decode(&head).map_err(|e| e.to_string())?;
    if h.base_seq != base {
        return Err("base sequence number does not match the file name".to_string());
    }
    Ok(h)
}

/// The end of the last data extent of `file` (holes and unwritten extents read as zeros), or its
/// length when the file system cannot tell.
pub fn data_end(file: &File, len: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut end = 0u64;
    let mut off = 0i64;
    loop {
        // SAFETY: plain lseek on a file descriptor we own.
        let d = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if d < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                return end;
            }
            return len;
        }
        let h = unsafe { libc::lseek(fd, d, libc::SEEK_HOLE) };
        if h < 0 {
            return len;
        }
        end = h as u64;
        if end >= len {
            return len;
        }
        off = h;
    }
}

/// Overwrites `[from, to)` with zeros and syncs: how a torn tail is cut without truncating a file
/// that may be mapped.
pub fn zero_range(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    let zeros = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(zeros.len());
        file.write_all_at(&zeros[..n], at).map_err(|e| Error::io("write", path, e))?;
        at += n as u64;
    }
    file.sync_data().map_err(|e| Error::io("fdatasync", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block's bounds cover every time noted in it, at any distance from the base and at the
    /// extremes; a block with none overlaps nothing.
    #[test]
    fn block_bounds_cover_every_time_noted() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let base_s = 1_767_225_600;
        let empty = Block::empty(0).bounds(base_s);
        assert!(empty.0 > empty.1, "an empty block overlaps nothing: {empty:?}");
        for _ in 0..2000 {
            let mut b = Block::empty(0);
            let spread = [1_000i64, 86_400_000, 1 << 50, i64::MAX][rng.random_range(0..4)];
            let n = rng.random_range(1..64);
            let mut times: Vec<i64> = (0..n).map(|_| (base_s * 1000).saturating_add(rng.random_range(-spread..=spread.saturating_sub(1)))).collect();
            for extreme in [i64::MIN, i64::MAX, 0, -1] {
                if rng.random_bool(0.05) {
                    times.push(extreme);
                }
            }
            for &t in &times {
                b.note(base_s, t);
            }
            let (lo, hi) = b.bounds(base_s);
            for &t in &times {
                assert!(lo <= t && t <= hi, "{t} outside {lo}..={hi}");
            }
            // And not much wider than the times, where they fit the range.
            let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
            if (min / 1000 - base_s).abs() < i64::from(i32::MAX) && (max / 1000 - base_s).abs() < i64::from(i32::MAX) {
                assert!(min - lo < 1000 && hi - max < 1000, "{min}..={max} widened to {lo}..={hi}");
            }
        }
    }
}
