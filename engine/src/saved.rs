//! The engine's in-memory state saved at clean shutdown, so the next open can skip the rebuild.
//!
//! `Engine::close` writes [`FILE`] (the views, the interner's strings, the dedup set, and each
//! segment's dictionary, block index and bitmaps) before the clean-shutdown marker. `open` reads
//! it only when that marker is there, and uses it only if it matches what is on disk: the same
//! segment files with the same lengths and headers, the same rollups, views holding as many
//! events as the segments. Otherwise, or if it fails its CRC or does not decode, the engine is
//! rebuilt from the log as always. `open` deletes the file whether it used it or not, so it
//! never describes a log that changed after it was written.
//!
//! What this trades: frames are not re-read at an open that uses the saved state, so a frame
//! damaged on disk while the engine was down is found when it is read (every decoded frame is
//! checked again) or by `verify`, not at open.
//!
//! Layout: `MAGIC` (8 bytes), `VERSION` (u32 LE), then for each of four parts its length (u64
//! LE) and CRC32 (u32 LE); then the parts: [`Saved`], the older half of the views' days and the
//! rest of the views, each in bincode (through `format`; the second and third are decoded on a
//! second thread), and the segments' indexes, each the bincode of a `SegmentIndex` with its own CRC in
//! its [`BlobRef`] (that part's CRC in the header is not checked: a blob is checked when loaded). They are the engine's own structures, so any change to them
//! bumps `VERSION` (the golden test below fails otherwise); an older file is then ignored and the
//! engine rebuilt once.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::format::{self, SegmentHeader};
use crate::segment::Block;

/// The file, in the engine's directory.
pub const FILE: &str = "state.saved";
/// Where it is written before the rename; a leftover is removed at open.
pub const TMP_FILE: &str = "state.saved.tmp";
const MAGIC: &[u8; 8] = b"TBSTATE\0";
/// Bump on any change to a saved structure (views, cells, histograms, segment index, dictionary).
pub const VERSION: u32 = 4;
const HEADER_BYTES: usize = 8 + 4 + PARTS * (8 + 4);

/// Everything `open` would otherwise rebuild but the views (the file's other part). Generic so
/// that `close` can save borrowed parts and `open` read owned ones in the same layout.
#[derive(Serialize, Deserialize)]
pub struct Saved<Str, Dedup, Seg> {
    pub folded_through_seq: u64,
    pub last_seq: u64,
    /// The interner's strings by symbol.
    pub strings: Vec<Str>,
    pub dedup: Dedup,
    /// Oldest first; the last one is the live segment.
    pub segments: Vec<Seg>,
}

/// One segment as the engine holds it, but its map and file.
#[derive(Serialize, Deserialize)]
pub struct SavedSegment<Dict, Index> {
    pub header: SegmentHeader,
    pub file_len: u64,
    pub committed_len: u64,
    pub n_events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub min_ts: i64,
    pub max_ts: i64,
    #[serde(with = "fixed")]
    pub blocks: Vec<Block>,
    pub dict: Dict,
    pub index: Index,
    pub sealed: bool,
    pub sealed_at_ms: Option<i64>,
    pub bytes_used: u64,
    pub skips: Vec<(u64, u64)>,
    pub ids_in_dedup: bool,
}

/// Parts of the file: the segments and the rest of `Saved`; the older half of the views' days;
/// the rest of the views; the segments' indexes (each with its own CRC, checked when loaded).
const PARTS: usize = 4;

/// Writes the parts to `dir/FILE` (through a temporary file and a rename, so a reader never
/// sees half of it).
pub fn write<A: Serialize, B: Serialize, C: Serialize>(dir: &Path, a: &A, b: &B, c: &C, blobs: &[Vec<u8>]) -> std::io::Result<()> {
    let tmp = dir.join(TMP_FILE);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&[0; HEADER_BYTES])?;
        let mut parts = [(0u64, 0u32); PARTS];
        for (i, part) in parts.iter_mut().enumerate() {
            // Buffered before the CRC, so it sums large chunks.
            let mut out = BufWriter::with_capacity(1 << 20, CrcWriter { inner: file, crc: crc32fast::Hasher::new(), len: 0 });
            match i {
                0 => format::encode_saved(a, &mut out).map_err(std::io::Error::other)?,
                1 => format::encode_saved(b, &mut out).map_err(std::io::Error::other)?,
                2 => format::encode_saved(c, &mut out).map_err(std::io::Error::other)?,
                _ => blobs.iter().try_for_each(|b| out.write_all(b)).map(|()| 0)?,
            };
            let w = out.into_inner().map_err(|e| e.into_error())?;
            *part = (w.len, w.crc.finalize());
            file = w.inner;
        }
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header(parts))?;
        drop(file);
        fs::rename(&tmp, dir.join(FILE))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A saved-state file whose header is of this version and whose part lengths add up.
pub struct SavedFile {
    map: Arc<Mmap>,
    parts: [(Range<usize>, u32); PARTS],
}

/// Maps `path` and checks its header; `None` if it is missing, of another version or cut short.
pub fn open(path: &Path) -> Option<SavedFile> {
    let file = File::open(path).ok()?;
    // SAFETY: the file is private to the engine, which holds the directory lock; `open` deletes
    // it right after mapping it, and nothing ever writes it in place.
    let map = unsafe { Mmap::map(&file) }.ok()?;
    let parts = check_header(&map)?;
    Some(SavedFile { map: Arc::new(map), parts })
}

impl SavedFile {
    /// The mapped file (for tests that build blobs of their own).
    #[cfg(test)]
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    /// Blob `r` of the last part, if inside it.
    pub fn blob(&self, r: &BlobRef) -> Option<SavedBytes> {
        let part = &self.parts[PARTS - 1].0;
        let start = part.start.checked_add(usize::try_from(r.offset).ok()?)?;
        let end = start.checked_add(usize::try_from(r.len).ok()?)?;
        (end <= part.end).then(|| SavedBytes::new(self.map.clone(), start..end))
    }

    /// Checks the CRC of each part and decodes it: the first on this thread (it may borrow from
    /// the file), the other two on another. `None` if any fails.
    pub fn decode<'a, A: Deserialize<'a>, B: DeserializeOwned + Send, C: DeserializeOwned + Send>(&'a self) -> Option<(A, B, C)> {
        decode_parts(&self.map, Some(&self.map), &self.parts)
    }
}

/// Bytes of the saved-state file that a structure keeps undecoded until first used (a segment's
/// bitmaps, a day's minute slots): the file stays mapped (it is already unlinked) while any are
/// held.
#[derive(Clone)]
pub struct SavedBytes {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl SavedBytes {
    pub fn new(map: Arc<Mmap>, range: Range<usize>) -> SavedBytes {
        SavedBytes { map, range }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// A value that may still be undecoded in the saved-state file, decoded on first use (or by the
/// background loader soon after the open).
pub struct Lazy<T> {
    value: std::sync::OnceLock<T>,
    saved: std::sync::Mutex<Option<SavedBytes>>,
}

/// The value if decoded, else the same saved bytes (never neither: a decode puts the value in
/// place before it lets the bytes go).
impl<T: Clone> Clone for Lazy<T> {
    fn clone(&self) -> Self {
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (self.value.get(), saved) {
            (Some(v), _) => Lazy::new(v.clone()),
            (None, Some(bytes)) => Lazy::saved(bytes),
            (None, None) => unreachable!("an undecoded value keeps its bytes"),
        }
    }
}

impl<T> Lazy<T> {
    pub fn new(value: T) -> Lazy<T> {
        Lazy { value: value.into(), saved: std::sync::Mutex::new(None) }
    }

    pub fn saved(bytes: SavedBytes) -> Lazy<T> {
        Lazy { value: std::sync::OnceLock::new(), saved: std::sync::Mutex::new(Some(bytes)) }
    }

    /// The value; on first use `load` makes it from the saved bytes. They stay until it is in
    /// place: a save meanwhile still has them (without waiting), and a load that panics leaves
    /// them for the next attempt.
    pub fn get_or_load(&self, load: impl FnOnce(&[u8]) -> T) -> &T {
        if let Some(v) = self.value.get() {
            return v;
        }
        let v = self.value.get_or_init(|| {
            let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone();
            load(saved.expect("an undecoded value keeps its bytes").bytes())
        });
        // In place: let go of the file (unmapped once every holder has let go).
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = None;
        v
    }

    /// The value, if decoded.
    pub fn loaded(&self) -> Option<&T> {
        self.value.get()
    }

    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.value.get_mut()
    }

    /// Calls `f` with the value if decoded, else with its saved bytes; never waits for a decode.
    pub fn with_saved<'a, R>(&'a self, f: impl FnOnce(Result<&'a T, &[u8]>) -> R) -> R {
        if let Some(v) = self.value.get() {
            return f(Ok(v));
        }
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        match saved.as_ref() {
            Some(b) => f(Err(b.bytes())),
            // The bytes go only once the value is in place.
            None => {
                drop(saved);
                f(Ok(self.value.get().expect("a value without saved bytes is decoded")))
            }
        }
    }
}

thread_local! {
    /// The file whose parts this thread is decoding, if it is a mapped saved-state file.
    static DECODING: std::cell::RefCell<Option<Arc<Mmap>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a decode) with `map` as the file that [`keep`] refers to on this thread.
fn decoding_from<R>(map: Option<&Arc<Mmap>>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DECODING.with(|d| *d.borrow_mut() = None);
        }
    }
    DECODING.with(|d| *d.borrow_mut() = map.cloned());
    let _reset = Reset;
    f()
}

/// `b`, a byte string borrowed from the saved-state file being decoded on this thread, as a
/// reference into that file; `None` when not decoding one (or `b` lies outside it), and the
/// caller decodes `b` at once instead.
pub fn keep(b: &[u8]) -> Option<SavedBytes> {
    DECODING.with(|d| {
        let d = d.borrow();
        let map = d.as_ref()?;
        let start = (b.as_ptr() as usize).checked_sub(map.as_ptr() as usize)?;
        let end = start.checked_add(b.len()).filter(|e| *e <= map.len())?;
        Some(SavedBytes { map: map.clone(), range: start..end })
    })
}

/// The parts' ranges and CRCs, if the header is sound.
fn check_header(bytes: &[u8]) -> Option<[(Range<usize>, u32); PARTS]> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(8) != VERSION {
        return None;
    }
    let mut at = HEADER_BYTES;
    let mut parts: [(Range<usize>, u32); PARTS] = Default::default();
    for (i, part) in parts.iter_mut().enumerate() {
        let len = usize::try_from(u64_at(12 + 12 * i)).ok()?;
        let end = at.checked_add(len).filter(|e| *e <= bytes.len())?;
        *part = (at..end, u32_at(20 + 12 * i));
        at = end;
    }
    (at == bytes.len()).then_some(parts)
}

/// `map`, when given, is the mapped file `bytes` are: byte strings that structures keep undecoded
/// then refer into it (see [`keep`]).
fn decode_parts<'a, A: Deserialize<'a>, B: DeserializeOwned + Send, C: DeserializeOwned + Send>(
    bytes: &'a [u8],
    map: Option<&Arc<Mmap>>,
    parts: &[(Range<usize>, u32); PARTS],
) -> Option<(A, B, C)> {
    let part = |i: usize| {
        let (range, crc) = &parts[i];
        let b = &bytes[range.clone()];
        (crc32fast::hash(b) == *crc).then_some(b)
    };
    // The last part is not checked here: each of its blobs carries its own CRC.
    std::thread::scope(|s| {
        // The segments' part is the largest to decode now that most of the views' days stay
        // undecoded (see `views::Lazy`): it gets this thread, both parts of the views the other.
        let bc = s.spawn(|| decoding_from(map, || (part(1).and_then(format::decode_saved::<B>), part(2).and_then(format::decode_saved::<C>))));
        let a = decoding_from(map, || part(0).and_then(format::decode_saved_borrowed::<A>));
        let (b, c) = bc.join().ok()?;
        Some((a?, b?, c?))
    })
}

fn header(parts: [(u64, u32); PARTS]) -> [u8; HEADER_BYTES] {
    let mut h = [0; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    for (i, (len, crc)) in parts.iter().enumerate() {
        h[12 + 12 * i..20 + 12 * i].copy_from_slice(&len.to_le_bytes());
        h[20 + 12 * i..24 + 12 * i].copy_from_slice(&crc.to_le_bytes());
    }
    h
}

/// A blob in the file's last part: a segment's index, loaded when first needed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct BlobRef {
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

/// The blobs' references, given their bytes in order.
pub fn blob_refs(blobs: &[Vec<u8>]) -> Vec<BlobRef> {
    let mut offset = 0;
    blobs
        .iter()
        .map(|b| {
            let r = BlobRef { offset, len: b.len() as u64, crc: crc32fast::hash(b) };
            offset += b.len() as u64;
            r
        })
        .collect()
}


struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// serde for arrays of any length (serde itself stops at 32), as a sequence.
pub mod arrays {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(a: &[T; N], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(a.iter())
    }

    /// Filled in place: no vector allocated per array (there is one per cell of the views).
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(d: D) -> Result<[T; N], D::Error> {
        struct Visit<T, const N: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for Visit<T, N> {
            type Value = [T; N];
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of {N}")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[T; N], A::Error> {
                let mut out: [Option<T>; N] = std::array::from_fn(|_| None);
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = Some(seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?);
                }
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(N + 1, &self));
                }
                Ok(out.map(|v| v.expect("every element was set")))
            }
        }
        d.deserialize_seq(Visit::<T, N>(std::marker::PhantomData))
    }
}

/// serde for long vectors of small plain records (a segment's blocks, its dictionary's strings
/// and shapes) as one byte string of fixed-width little-endian records: read back with a
/// bounds-checked copy per field instead of a varint and a serde call per field (on a 10M-event
/// log, decoding the blocks field by field was a tenth of the open from the saved state).
pub mod fixed {
    use serde::{Deserializer, Serializer};

    /// A record of `SIZE` bytes.
    pub trait Fixed: Sized {
        const SIZE: usize;
        fn put(&self, out: &mut Vec<u8>);
        /// `b` is `SIZE` bytes long.
        fn get(b: &[u8]) -> Self;
    }

    pub fn serialize<S: Serializer, T: Fixed>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(v.len() * T::SIZE);
        v.iter().for_each(|r| r.put(&mut out));
        s.serialize_bytes(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Fixed>(d: D) -> Result<Vec<T>, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<T: Fixed> serde::de::Visitor<'_> for Visit<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "records of {} bytes", T::SIZE)
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Vec<T>, E> {
                if !b.len().is_multiple_of(T::SIZE) {
                    return Err(E::invalid_length(b.len(), &self));
                }
                Ok(b.chunks_exact(T::SIZE).map(T::get).collect())
            }
        }
        d.deserialize_bytes(Visit(std::marker::PhantomData))
    }

    impl Fixed for u16 {
        const SIZE: usize = 2;
        fn put(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
        fn get(b: &[u8]) -> u16 {
            u16::from_le_bytes([b[0], b[1]])
        }
    }

    impl Fixed for u32 {
        const SIZE: usize = 4;
        fn put(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
        fn get(b: &[u8]) -> u32 {
            u32_at(b, 0)
        }
    }

    /// The little-endian integer at `b[at..]`.
    pub fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }
}

/// serde for byte strings as one string, not a sequence of numbers (`serde_bytes` in short).
pub mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(d: D) -> Result<T, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes).map(T::from)
    }
}

/// serde for roaring bitmaps in their portable format, read back without re-validating every
/// container (the whole file passed its CRC, and only the engine writes it).
pub mod bitmap {
    use roaring::RoaringBitmap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// A bitmap to save.
    pub struct Out<'a>(pub &'a RoaringBitmap);

    impl Serialize for Out<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut buf = Vec::with_capacity(self.0.serialized_size());
            self.0.serialize_into(&mut buf).map_err(serde::ser::Error::custom)?;
            s.serialize_bytes(&buf)
        }
    }

    /// A bitmap loaded.
    pub struct In(pub RoaringBitmap);

    impl<'de> Deserialize<'de> for In {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<In, D::Error> {
            struct Visit;
            impl serde::de::Visitor<'_> for Visit {
                type Value = In;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a roaring bitmap")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<In, E> {
                    RoaringBitmap::deserialize_unchecked_from(v).map(In).map_err(E::custom)
                }
            }
            d.deserialize_bytes(Visit)
        }
    }

    pub fn serialize<S: Serializer>(b: &RoaringBitmap, s: S) -> Result<S::Ok, S::Error> {
        Out(b).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RoaringBitmap, D::Error> {
        In::deserialize(d).map(|b| b.0)
    }
}

/// serde for maps of bitmaps, as [`bitmap`].
pub mod bitmap_map {
    use std::hash::Hash;

    use roaring::RoaringBitmap;
    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, K: Serialize>(m: &FxHashMap<K, RoaringBitmap>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, b)| (k, super::bitmap::Out(b))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, K: Deserialize<'de> + Eq + Hash>(d: D) -> Result<FxHashMap<K, RoaringBitmap>, D::Error> {
        let m = FxHashMap::<K, super::bitmap::In>::deserialize(d)?;
        Ok(m.into_iter().map(|(k, b)| (k, b.0)).collect())
    }

    struct Out<'a, K>(&'a FxHashMap<K, RoaringBitmap>);

    impl<K: Serialize> Serialize for Out<'_, K> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }

    struct In<K>(FxHashMap<K, RoaringBitmap>);

    impl<'de, K: Deserialize<'de> + Eq + Hash> Deserialize<'de> for In<K> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<In<K>, D::Error> {
            deserialize(d).map(In)
        }
    }

    /// An array of such maps.
    pub mod array {
        use super::*;

        pub fn serialize<S: Serializer, K: Serialize, const N: usize>(a: &[FxHashMap<K, RoaringBitmap>; N], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(a.iter().map(Out))
        }

        pub fn deserialize<'de, D: Deserializer<'de>, K: Deserialize<'de> + Eq + Hash, const N: usize>(
            d: D,
        ) -> Result<[FxHashMap<K, RoaringBitmap>; N], D::Error> {
            let v = Vec::<In<K>>::deserialize(d)?;
            let len = v.len();
            let maps: Vec<_> = v.into_iter().map(|m| m.0).collect();
            maps.try_into().map_err(|_| serde::de::Error::invalid_length(len, &"the array's length"))
        }
    }
}

/// Like [`arrays`], for a boxed array.
pub mod boxed_array {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(a: &[T; N], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(a.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(d: D) -> Result<Box<[T; N]>, D::Error> {
        let v = Vec::<T>::deserialize(d)?;
        let len = v.len();
        v.into_boxed_slice().try_into().map_err(|_| D::Error::invalid_length(len, &"the array's length"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Dim, Quality, StoredEvent, Sym, Tokens};
    use crate::index::SegmentIndex;
    use crate::segment::{DictDelta, SegmentDict, Shape};
    use crate::views::{Sign, Views};

    /// The saved structures, pinned: a change to any of them changes these bytes. Bump
    /// `VERSION` (so older files are ignored, not misread), then update the figures.
    #[test]
    fn the_saved_layout_is_pinned() {
        let mut views = Views::new();
        let mut index = SegmentIndex::default();
        let mut dict = SegmentDict::default();
        for i in 0..400u32 {
            let mut dims = [Sym::EMPTY; Dim::COUNT];
            dims[Dim::Model as usize] = Sym(1 + i % 3);
            dims[Dim::Endpoint as usize] = Sym(4);
            dims[Dim::Key as usize] = Sym(10 + i % 17);
            let ev = StoredEvent {
                seq: u64::from(i) + 1,
                ts_ms: 1_767_225_600_000 + i64::from(i) * 61_000,
                dims,
                status: if i % 9 == 0 { 500 } else { 200 },
                success: i % 9 != 0,
                stream: i % 2 == 0,
                quality: Quality::Complete,
                ts_clamped: false,
                tokens: Tokens { input_uncached: u64::from(i), output: 7, ..Tokens::default() },
                latency_ms: 100 + i * 13,
                ttft_ms: (i % 2 == 0).then_some(40 + i),
                event_id: None,
                request_id: None,
                error_message: None,
            };
            views.apply(&ev, Sign::Add);
            index.add(i, &ev);
            let shape = Shape { dims: { let mut d = dims; d[Dim::Key as usize] = Sym::EMPTY; d }, status: ev.status, flags: 0 };
            dict.local_ids(&shape, ev.dims[Dim::Key as usize], &mut DictDelta::default());
        }
        // A segment's blocks, as the saved state keeps them.
        #[derive(Serialize)]
        struct Blocks(#[serde(with = "fixed")] Vec<crate::segment::Block>);
        let mut blocks = vec![crate::segment::Block::empty(0), crate::segment::Block::empty(4096)];
        blocks[0].note(1_767_225_600, 1_767_225_600_000 - 1);
        blocks[0].note(1_767_225_600, 1_767_225_600_000 + 61_999);
        blocks[1].note(1_767_225_600, i64::MIN);
        let mut bytes = Vec::new();
        format::encode_saved(&(VERSION, views.saved_parts(), &index, &dict, Blocks(blocks)), &mut bytes).unwrap();
        assert_eq!((bytes.len(), crc32fast::hash(&bytes)), (28_446, 2_804_879_989), "the saved layout changed: bump saved::VERSION");
    }

    /// The compact forms read back what was written, and refuse bytes of the wrong shape.
    #[test]
    fn fixed_records_and_counters_round_trip() {
        use crate::segment::Block;
        use crate::views::cells::Counters;
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Both {
            #[serde(with = "fixed")]
            blocks: Vec<Block>,
            counters: Vec<Counters<16>>,
        }
        let blocks = vec![Block { offset: 7, min_s: -5, max_s: i32::MAX }, Block { offset: u32::MAX, min_s: i32::MIN, max_s: 0 }];
        let counters = vec![Counters([0; 16]), Counters(std::array::from_fn(|i| if i % 3 == 0 { u64::MAX >> i } else { 0 })), Counters([1; 16])];
        let both = Both { blocks, counters };
        let mut bytes = Vec::new();
        format::encode_saved(&both, &mut bytes).unwrap();
        assert_eq!(format::decode_saved::<Both>(&bytes), Some(both));
        // 13 bytes are not whole 12-byte blocks; a mask with a bit past the counters is refused.
        let mut bad = Vec::new();
        format::encode_saved(&(serde_bytes_of(&[0; 13]), Vec::<u8>::new()), &mut bad).unwrap();
        assert_eq!(format::decode_saved::<Both>(&bad), None);
        let mut bad = Vec::new();
        format::encode_saved(&(serde_bytes_of(&[]), vec![serde_bytes_of(&[0x80, 0x80, 0x04])]), &mut bad).unwrap();
        assert_eq!(format::decode_saved::<Both>(&bad), None, "bit 16 of the mask");
    }

    /// A byte string as serde writes one.
    fn serde_bytes_of(b: &[u8]) -> impl Serialize + '_ {
        struct B<'a>(&'a [u8]);
        impl Serialize for B<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        B(b)
    }

    #[test]
    fn damaged_or_foreign_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        type Parts = (Vec<String>, (u64, u16), Vec<u8>);
        let value: Parts = (vec!["a".into(), "bc".into()], (7, 9), vec![1, 2, 3]);
        let blobs = vec![b"first".to_vec(), b"second".to_vec()];
        write(dir.path(), &value.0, &value.1, &value.2, &blobs).unwrap();
        let path = dir.path().join(FILE);
        let decode = |bytes: &[u8]| check_header(bytes).and_then(|parts| decode_parts::<Vec<String>, (u64, u16), Vec<u8>>(bytes, None, &parts));
        let file = open(&path).unwrap();
        assert_eq!(file.decode::<Vec<String>, (u64, u16), Vec<u8>>(), Some(value));
        let refs = blob_refs(&blobs);
        assert_eq!(file.blob(&refs[1]).unwrap().bytes(), b"second");
        assert!(file.blob(&BlobRef { offset: 3, len: 9, crc: 0 }).is_none(), "past the end");
        let good = fs::read(&path).unwrap();
        // Flips in the blobs are found when one is loaded (its own CRC), not here; so is the
        // blob part's CRC field not checked.
        let blobs_at = good.len() - 11;
        let unchecked_crc = 20 + 12 * (PARTS - 1)..24 + 12 * (PARTS - 1);
        for i in (0..blobs_at).filter(|i| !unchecked_crc.contains(i)) {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode(&bad), None, "flip at byte {i}");
        }
        for len in 0..good.len() {
            assert_eq!(decode(&good[..len]), None, "cut at {len}");
        }
        assert!(open(&dir.path().join("missing")).is_none());
        assert!(!dir.path().join(TMP_FILE).exists());
    }
}
