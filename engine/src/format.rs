//! The on-disk format: segment header, frame header, payload encoding. The only module that knows
//! bytes; `docs/format.md` has the byte tables and the version history, and the golden tests at the
//! bottom pin them.
//!
//! Invariants:
//! - Every frame is `crc u32 | payload_len u16 | kind u8 | seq_delta u32 | payload`, little endian.
//!   The kind byte says which optional parts an event payload carries, so a typical event pays
//!   nothing for fields it does not have.
//!   The CRC (crc32 seeded with the segment's random salt) covers everything after it, header
//!   fields and payload in one run, so a flipped length, kind or sequence number fails the check,
//!   and bytes left from another file (another salt) never validate.
//! - An all-zero frame header marks the end of the written part of a preallocated segment.
//! - `payload_len <= FRAME_PAYLOAD_BYTES_MAX`; a reader never trusts a length beyond that.
//! - Payloads are bincode 2 (`standard()`: varint, little endian) of the structs below and nothing
//!   else uses bincode.

use serde::{Deserialize, Serialize};

pub const SEGMENT_MAGIC: [u8; 8] = *b"TKBDSEG\x1a";
/// The version this code writes.
pub const FORMAT_VERSION: u16 = 1;
/// The oldest version this code reads.
pub const FORMAT_VERSION_OLDEST_READABLE: u16 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const FRAME_HEADER_BYTES: usize = 11;
pub const FRAME_PAYLOAD_BYTES_MAX: usize = u16::MAX as usize;

/// Frame types (the low two bits of the kind byte).
pub const KIND_EVENT: u8 = 1;
pub const KIND_DICT: u8 = 2;
pub const KIND_TYPE_MASK: u8 = 0x03;
/// Event frames: a time to first token follows the fixed part of the payload.
pub const KIND_FLAG_TTFT: u8 = 0x04;
/// Event frames: cache-write and unclassified token counts follow.
pub const KIND_FLAG_RARE_TOKENS: u8 = 0x08;
/// Event frames: the optional strings (`EventExtras`) follow.
pub const KIND_FLAG_EXTRAS: u8 = 0x10;
pub const KIND_EVENT_FLAGS: u8 = KIND_FLAG_TTFT | KIND_FLAG_RARE_TOKENS | KIND_FLAG_EXTRAS;
/// Bits that must be zero in this version.
pub const KIND_RESERVED: u8 = 0x60;
/// Set on the last frame of an appended batch: a batch whose end marker is missing at the tail of
/// the newest segment was never acknowledged and is cut at recovery.
pub const KIND_FLAG_BATCH_END: u8 = 0x80;

/// Offsets within a frame header.
pub const FRAME_CRC_AT: usize = 0;
pub const FRAME_LEN_AT: usize = 4;
pub const FRAME_KIND_AT: usize = 6;
pub const FRAME_SEQ_AT: usize = 7;
/// The CRC covers the frame from here to the end of its payload.
pub const FRAME_CRC_FROM: usize = FRAME_LEN_AT;

const _: () = assert!(FRAME_HEADER_BYTES == 4 + 2 + 1 + 4);
const _: () = assert!(FRAME_CRC_AT + 4 == FRAME_LEN_AT && FRAME_LEN_AT + 2 == FRAME_KIND_AT);
const _: () = assert!(FRAME_KIND_AT + 1 == FRAME_SEQ_AT && FRAME_SEQ_AT + 4 == FRAME_HEADER_BYTES);
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(8) && SEGMENT_HEADER_BYTES >= 36);
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(KIND_TYPE_MASK & KIND_EVENT_FLAGS == 0 && KIND_TYPE_MASK & KIND_RESERVED == 0);
const _: () = assert!(KIND_EVENT_FLAGS & KIND_RESERVED == 0 && (KIND_EVENT_FLAGS | KIND_RESERVED) & KIND_FLAG_BATCH_END == 0);
const _: () = assert!(KIND_TYPE_MASK | KIND_EVENT_FLAGS | KIND_RESERVED | KIND_FLAG_BATCH_END == 0xff);

/// Whether a kind byte is one this version writes.
#[inline]
pub fn kind_is_valid(kind: u8) -> bool {
    match kind & KIND_TYPE_MASK {
        KIND_EVENT => kind & KIND_RESERVED == 0,
        KIND_DICT => kind & (KIND_RESERVED | KIND_EVENT_FLAGS) == 0,
        _ => false,
    }
}

/// The segment header, at offset 0 of every segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub version: u16,
    /// Random per-file CRC seed: stale bytes from another file never validate here.
    pub salt: u32,
    /// The sequence number of the first event this segment may hold; frames carry `seq - base_seq`.
    pub base_seq: u64,
    /// Wall-clock creation time (UTC ms); also the base of the events' timestamp deltas.
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    TooShort,
    BadMagic,
    BadChecksum,
    UnsupportedVersion(u16),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooShort => write!(f, "segment header is truncated"),
            HeaderError::BadMagic => write!(f, "not a tokenboard segment (bad magic)"),
            HeaderError::BadChecksum => write!(f, "segment header checksum mismatch"),
            HeaderError::UnsupportedVersion(v) => write!(
                f,
                "segment format version {v} is not readable (this build reads {FORMAT_VERSION_OLDEST_READABLE}..={FORMAT_VERSION})"
            ),
        }
    }
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&(SEGMENT_HEADER_BYTES as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.salt.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[..SEGMENT_HEADER_BYTES - 4]);
        b[SEGMENT_HEADER_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::TooShort);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let stored = u32::from_le_bytes(b[SEGMENT_HEADER_BYTES - 4..SEGMENT_HEADER_BYTES].try_into().unwrap());
        if crc32fast::hash(&b[..SEGMENT_HEADER_BYTES - 4]) != stored {
            return Err(HeaderError::BadChecksum);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if !(FORMAT_VERSION_OLDEST_READABLE..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        Ok(SegmentHeader {
            version,
            salt: u32::from_le_bytes(b[12..16].try_into().unwrap()),
            base_seq: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            created_ms: i64::from_le_bytes(b[24..32].try_into().unwrap()),
        })
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u16,
    pub kind: u8,
    pub seq_delta: u32,
    pub crc: u32,
}

impl FrameHeader {
    pub fn kind_type(&self) -> u8 {
        self.kind & KIND_TYPE_MASK
    }

    pub fn is_batch_end(&self) -> bool {
        self.kind & KIND_FLAG_BATCH_END != 0
    }

    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_len as usize
    }

    /// Reads the header at the start of `b` (which must hold at least `FRAME_HEADER_BYTES`).
    #[inline]
    pub fn read(b: &[u8]) -> FrameHeader {
        FrameHeader {
            crc: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            payload_len: u16::from_le_bytes([b[4], b[5]]),
            kind: b[6],
            seq_delta: u32::from_le_bytes([b[7], b[8], b[9], b[10]]),
        }
    }

    pub fn is_zero(b: &[u8]) -> bool {
        b[..FRAME_HEADER_BYTES].iter().all(|&x| x == 0)
    }
}

/// Why a frame failed to validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFault {
    /// Fewer bytes remain than the header or the payload needs.
    Truncated,
    UnknownKind(u8),
    ChecksumMismatch,
}

impl std::fmt::Display for FrameFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFault::Truncated => write!(f, "frame runs past the end of the file"),
            FrameFault::UnknownKind(k) => write!(f, "unknown frame kind {k:#04x}"),
            FrameFault::ChecksumMismatch => write!(f, "frame checksum mismatch"),
        }
    }
}

/// The CRC of a frame: over `frame[FRAME_CRC_FROM..]`, the header fields and the payload.
#[inline]
pub fn frame_crc(salt: u32, frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(salt);
    h.update(&frame[FRAME_CRC_FROM..]);
    h.finalize()
}

/// Validates the frame at the start of `b`: returns its header and payload, or the fault.
#[inline]
pub fn check_frame(salt: u32, b: &[u8]) -> Result<(FrameHeader, &[u8]), FrameFault> {
    if b.len() < FRAME_HEADER_BYTES {
        return Err(FrameFault::Truncated);
    }
    let h = FrameHeader::read(b);
    if !kind_is_valid(h.kind) {
        return Err(FrameFault::UnknownKind(h.kind));
    }
    let end = h.frame_bytes();
    if b.len() < end {
        return Err(FrameFault::Truncated);
    }
    if frame_crc(salt, &b[..end]) != h.crc {
        return Err(FrameFault::ChecksumMismatch);
    }
    Ok((h, &b[FRAME_HEADER_BYTES..end]))
}

/// Appends one frame to `out`. The payload must already be bounded by the caller.
pub fn write_frame(out: &mut Vec<u8>, salt: u32, kind: u8, seq_delta: u32, payload: &[u8]) {
    write_frame_with(out, salt, kind, seq_delta, |o| {
        o.extend_from_slice(payload);
        0
    });
}

/// Appends a frame whose payload `payload` writes straight into `out` (no copy), returning kind
/// flags to add to `kind`.
#[inline]
pub fn write_frame_with(out: &mut Vec<u8>, salt: u32, kind: u8, seq_delta: u32, payload: impl FnOnce(&mut Vec<u8>) -> u8) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    let flags = payload(out);
    let len = out.len() - start - FRAME_HEADER_BYTES;
    assert!(len <= FRAME_PAYLOAD_BYTES_MAX, "frame payload over the bound");
    let header = &mut out[start..start + FRAME_HEADER_BYTES];
    header[FRAME_LEN_AT..FRAME_LEN_AT + 2].copy_from_slice(&(len as u16).to_le_bytes());
    header[FRAME_KIND_AT] = kind | flags;
    header[FRAME_SEQ_AT..FRAME_SEQ_AT + 4].copy_from_slice(&seq_delta.to_le_bytes());
    let crc = frame_crc(salt, &out[start..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Attributes of an event that repeat across many events, stored once per segment in a dict
/// frame and referred to by a local id. Strings are local string ids of the same segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShapeRecord {
    /// Local string ids, indexed by `Dim` except that `Dim::Key` is carried per event (its slot
    /// here is always 0).
    pub dims: [u32; crate::event::Dim::COUNT],
    pub status: u16,
    /// Bit 0 success, bit 1 stream, bit 2 timestamp clamped; bits 3..=4 quality.
    pub flags: u8,
}

pub const SHAPE_FLAG_SUCCESS: u8 = 1;
pub const SHAPE_FLAG_STREAM: u8 = 2;
pub const SHAPE_FLAG_TS_CLAMPED: u8 = 4;
pub const SHAPE_QUALITY_SHIFT: u8 = 3;

/// A dict frame: new local strings and shapes, numbered from the given first ids on. Dict frames
/// carry the sequence delta of the event that follows them and consume no sequence number.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DictRecord<'a> {
    pub first_string_id: u32,
    #[serde(borrow)]
    pub strings: Vec<&'a str>,
    pub first_shape_id: u32,
    pub shapes: Vec<ShapeRecord>,
}

/// The rarely present strings of an event.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventExtras<'a> {
    #[serde(borrow)]
    pub event_id: Option<&'a str>,
    #[serde(borrow)]
    pub request_id: Option<&'a str>,
    #[serde(borrow)]
    pub error_message: Option<&'a str>,
}

/// The fixed part of an event frame's payload. After it, in this order and only when the frame's
/// kind says so: `ttft_ms: u32` (`KIND_FLAG_TTFT`), `[cache_write, unclassified]: [u64; 2]`
/// (`KIND_FLAG_RARE_TOKENS`), `EventExtras` (`KIND_FLAG_EXTRAS`), each bincode-encoded.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// `ts_ms - SegmentHeader::created_ms`.
    pub ts_delta_ms: i64,
    pub shape: u32,
    /// Local string id of the client key id.
    pub key: u32,
    /// Input uncached, cache read, output, reasoning.
    pub tokens: [u64; 4],
    pub latency_ms: u32,
}

/// A whole event payload, decoded.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct EventPayload<'a> {
    pub ts_delta_ms: i64,
    pub shape: u32,
    pub key: u32,
    /// `Tokens::to_array` order: input uncached, cache read, cache write, output, reasoning,
    /// unclassified.
    pub tokens: [u64; 6],
    pub latency_ms: u32,
    pub ttft_ms: Option<u32>,
    pub extras: Option<EventExtras<'a>>,
}

impl<'a> EventPayload<'a> {
    /// Encodes into `out`; returns the kind flags the frame must carry.
    ///
    /// The fixed part, the TTFT and the rare tokens are written by hand in bincode's bytes (an
    /// `EventRecord`, a `u32`, a `[u64; 2]`; `hand_encoding_is_bincodes` pins that): this runs
    /// for every appended event, and bincode's serde encoder spent more on its calls than on the
    /// bytes. They are decoded by hand too where the bytes are as this writes them
    /// (`decode_fixed`), else by bincode.
    pub fn encode(&self, out: &mut Vec<u8>) -> u8 {
        let t = &self.tokens;
        let mut w = Varints::<EVENT_PARTS_BYTES_MAX>::new();
        w.put(((self.ts_delta_ms << 1) ^ (self.ts_delta_ms >> 63)) as u64);
        w.put(u64::from(self.shape));
        w.put(u64::from(self.key));
        for v in [t[0], t[1], t[3], t[4]] {
            w.put(v);
        }
        w.put(u64::from(self.latency_ms));
        let mut flags = 0;
        if let Some(ttft) = self.ttft_ms {
            w.put(u64::from(ttft));
            flags |= KIND_FLAG_TTFT;
        }
        if t[2] != 0 || t[5] != 0 {
            w.put(t[2]);
            w.put(t[5]);
            flags |= KIND_FLAG_RARE_TOKENS;
        }
        out.extend_from_slice(w.bytes());
        if let Some(extras) = &self.extras {
            encode_payload(extras, out);
            flags |= KIND_FLAG_EXTRAS;
        }
        flags
    }

    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<EventPayload<'a>, PayloadError> {
        match Self::decode_fixed(kind, payload) {
            Some((p, used)) => p.with_extras(kind, &payload[used..]),
            None => Self::decode_by_bincode(kind, payload),
        }
    }

    /// The extras, if the kind says so, from `rest`, which must hold nothing else.
    fn with_extras(mut self, kind: u8, mut rest: &'a [u8]) -> Result<EventPayload<'a>, PayloadError> {
        if kind & KIND_FLAG_EXTRAS != 0 {
            self.extras = Some(decode_part(&mut rest)?);
        }
        if !rest.is_empty() {
            return Err(PayloadError(format!("{} trailing bytes", rest.len())));
        }
        Ok(self)
    }

    /// The parts before the extras, read by hand, and the bytes they took; `None` unless every
    /// varint is in the shortest form for its value, as `encode` (and bincode) writes it: any
    /// other bytes go to bincode, which decides. Reading an event is most of a scan's work, and
    /// bincode's serde decoder spent more on its calls than on the bytes (a filtered read decodes
    /// millions of events).
    #[inline]
    fn decode_fixed(kind: u8, b: &[u8]) -> Option<(EventPayload<'a>, usize)> {
        let mut r = VarintReader { b, pos: 0 };
        let z = r.u64()?;
        let ts_delta_ms = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let shape = r.u32()?;
        let key = r.u32()?;
        let f = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
        let latency_ms = r.u32()?;
        let mut p = EventPayload { ts_delta_ms, shape, key, tokens: [f[0], f[1], 0, f[2], f[3], 0], latency_ms, ttft_ms: None, extras: None };
        if kind & KIND_FLAG_TTFT != 0 {
            p.ttft_ms = Some(r.u32()?);
        }
        if kind & KIND_FLAG_RARE_TOKENS != 0 {
            p.tokens[2] = r.u64()?;
            p.tokens[5] = r.u64()?;
        }
        Some((p, r.pos))
    }

    /// `decode` all by bincode: the reference the hand decoder must agree with (tests, fuzzing).
    #[doc(hidden)]
    pub fn decode_by_bincode(kind: u8, payload: &'a [u8]) -> Result<EventPayload<'a>, PayloadError> {
        let mut rest = payload;
        let fixed: EventRecord = decode_part(&mut rest)?;
        let f = fixed.tokens;
        let mut p = EventPayload {
            ts_delta_ms: fixed.ts_delta_ms,
            shape: fixed.shape,
            key: fixed.key,
            tokens: [f[0], f[1], 0, f[2], f[3], 0],
            latency_ms: fixed.latency_ms,
            ttft_ms: None,
            extras: None,
        };
        if kind & KIND_FLAG_TTFT != 0 {
            p.ttft_ms = Some(decode_part(&mut rest)?);
        }
        if kind & KIND_FLAG_RARE_TOKENS != 0 {
            let [cache_write, unclassified]: [u64; 2] = decode_part(&mut rest)?;
            p.tokens[2] = cache_write;
            p.tokens[5] = unclassified;
        }
        p.with_extras(kind, rest)
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

#[derive(Debug)]
pub struct PayloadError(pub String);

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "payload does not decode: {}", self.0)
    }
}

/// The most bytes of an event payload's parts written by hand: 11 varints (8 fixed, the TTFT, two
/// rare token counts) of at most 9 bytes.
const EVENT_PARTS_BYTES_MAX: usize = 11 * 9;

/// Reads varints as `Varints` writes them: `None` at the end of the bytes, or where a value is
/// not in its shortest form or too wide for its type (bincode decides those bytes).
struct VarintReader<'b> {
    b: &'b [u8],
    pos: usize,
}

impl VarintReader<'_> {
    #[inline(always)]
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let v = self.b.get(self.pos + 1..self.pos + 1 + N)?.try_into().ok()?;
        self.pos += 1 + N;
        Some(v)
    }

    #[inline(always)]
    fn u64(&mut self) -> Option<u64> {
        let first = *self.b.get(self.pos)?;
        match first {
            0..=250 => {
                self.pos += 1;
                Some(u64::from(first))
            }
            251 => Some(u64::from(u16::from_le_bytes(self.take()?))).filter(|&v| v >= 251),
            252 => Some(u64::from(u32::from_le_bytes(self.take()?))).filter(|&v| v > u64::from(u16::MAX)),
            253 => Some(u64::from_le_bytes(self.take()?)).filter(|&v| v > u64::from(u32::MAX)),
            _ => None,
        }
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }
}

/// Unsigned integers (any width) as bincode's `standard()` varint writes them, into a buffer on
/// the stack: below 251 one byte, else a marker (251, 252, 253 for u16, u32, u64) and the value
/// little-endian. Signed ones are zigzagged first, as bincode does.
struct Varints<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Varints<N> {
    fn new() -> Self {
        Varints { buf: [0; N], len: 0 }
    }

    /// Panics past `N` bytes (a caller's bug: `N` is sized for the most it writes).
    #[inline(always)]
    fn put(&mut self, v: u64) {
        let dst: &mut [u8; 9] = (&mut self.buf[self.len..self.len + 9]).try_into().expect("9 bytes");
        if v < 251 {
            dst[0] = v as u8;
            self.len += 1;
            return;
        }
        let (marker, n) = if v <= u64::from(u16::MAX) {
            (251, 2)
        } else if v <= u64::from(u32::MAX) {
            (252, 4)
        } else {
            (253, 8)
        };
        dst[0] = marker;
        dst[1..].copy_from_slice(&v.to_le_bytes());
        self.len += 1 + n;
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

pub fn encode_payload<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    bincode::serde::encode_into_std_write(value, out, bincode_config())
        .expect("writing to a Vec cannot fail");
}

/// Decodes one value from the front of `rest` and advances it.
fn decode_part<'a, T: Deserialize<'a>>(rest: &mut &'a [u8]) -> Result<T, PayloadError> {
    match bincode::serde::borrow_decode_from_slice::<T, _>(rest, bincode_config()) {
        Ok((v, used)) => {
            *rest = &rest[used..];
            Ok(v)
        }
        Err(e) => Err(PayloadError(e.to_string())),
    }
}

pub fn decode_payload<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, PayloadError> {
    match bincode::serde::borrow_decode_from_slice::<T, _>(payload, bincode_config()) {
        Ok((v, used)) if used == payload.len() => Ok(v),
        Ok((_, used)) => Err(PayloadError(format!("{} trailing bytes", payload.len() - used))),
        Err(e) => Err(PayloadError(e.to_string())),
    }
}

/// Encodes the state saved at clean shutdown (see `saved`).
pub(crate) fn encode_saved<T: Serialize, W: std::io::Write>(value: &T, out: &mut W) -> Result<usize, bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(value, out, bincode_config())
}

/// Decodes the saved state; `None` unless all of `bytes` is one value.
pub(crate) fn decode_saved<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match bincode::serde::decode_from_slice::<T, _>(bytes, bincode_config()) {
        Ok((v, used)) if used == bytes.len() => Some(v),
        _ => None,
    }
}

/// Like `decode_saved`, borrowing byte strings from `bytes`.
pub(crate) fn decode_saved_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    match bincode::serde::borrow_decode_from_slice::<T, _>(bytes, bincode_config()) {
        Ok((v, used)) if used == bytes.len() => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The event payload written by hand is byte for byte what bincode writes for the same
    /// parts, at every varint width boundary and for random values; and the frame written in
    /// place is the frame `write_frame` writes around a separately encoded payload.
    #[test]
    fn hand_encoding_is_bincodes() {
        use proptest::prelude::*;
        fn by_bincode(p: &EventPayload) -> (Vec<u8>, u8) {
            let t = &p.tokens;
            let mut out = Vec::new();
            encode_payload(&EventRecord { ts_delta_ms: p.ts_delta_ms, shape: p.shape, key: p.key, tokens: [t[0], t[1], t[3], t[4]], latency_ms: p.latency_ms }, &mut out);
            let mut flags = 0;
            if let Some(v) = p.ttft_ms {
                encode_payload(&v, &mut out);
                flags |= KIND_FLAG_TTFT;
            }
            if t[2] != 0 || t[5] != 0 {
                encode_payload(&[t[2], t[5]], &mut out);
                flags |= KIND_FLAG_RARE_TOKENS;
            }
            if let Some(x) = &p.extras {
                encode_payload(x, &mut out);
                flags |= KIND_FLAG_EXTRAS;
            }
            (out, flags)
        }
        let check = |p: &EventPayload| {
            let mut out = Vec::new();
            let flags = p.encode(&mut out);
            assert_eq!((out.clone(), flags), by_bincode(p), "{p:?}");
            assert_eq!(&EventPayload::decode(flags, &out).unwrap(), p);
            assert_eq!(&EventPayload::decode_by_bincode(flags, &out).unwrap(), p);
            let mut framed = Vec::new();
            write_frame_with(&mut framed, 0x5eed, KIND_EVENT, 9, |o| p.encode(o));
            let mut expected = Vec::new();
            write_frame(&mut expected, 0x5eed, KIND_EVENT | flags, 9, &out);
            assert_eq!(framed, expected);
        };
        let edges_u64 = [0, 1, 250, 251, 252, 255, 256, 65_535, 65_536, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX];
        let edges_i64 = [0, 1, -1, 125, -125, 126, -126, 32_767, -32_768, 32_768, i64::from(i32::MAX), i64::from(i32::MIN), i64::MAX, i64::MIN];
        for (i, &u) in edges_u64.iter().enumerate() {
            let narrow = u.min(u64::from(u32::MAX)) as u32;
            check(&EventPayload {
                ts_delta_ms: edges_i64[i % edges_i64.len()],
                shape: narrow,
                key: narrow,
                tokens: [u, u, u, u, u, u],
                latency_ms: narrow,
                ttft_ms: Some(narrow),
                extras: None,
            });
        }
        for &ts in &edges_i64 {
            check(&EventPayload { ts_delta_ms: ts, ..EventPayload::default() });
        }
        proptest!(ProptestConfig::with_cases(2000), |(ts: i64, shape: u32, key: u32, tokens: [u64; 6], zero_rare: bool, latency: u32, ttft: Option<u32>, id: Option<String>, shift in 0u32..64)| {
            let mut tokens = tokens.map(|t| t >> shift);
            if zero_rare {
                tokens[2] = 0;
                tokens[5] = 0;
            }
            let extras = id.as_deref().map(|id| EventExtras { event_id: Some(id), request_id: None, error_message: None });
            check(&EventPayload { ts_delta_ms: ts >> shift, shape: shape >> (shift / 2), key, tokens, latency_ms: latency >> (shift / 2), ttft_ms: ttft, extras });
        });
    }

    /// The hand decoder never disagrees with bincode: on any bytes, whatever it reads bincode
    /// reads the same (it leaves the rest to bincode), and the whole decode matches bincode's.
    #[test]
    fn hand_decoding_is_bincodes() {
        use proptest::prelude::*;
        let same = |kind: u8, b: &[u8]| {
            let ours = EventPayload::decode(kind, b).map_err(|e| e.0);
            let theirs = EventPayload::decode_by_bincode(kind, b).map_err(|e| e.0);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => panic!("kind {kind:#x}, bytes {b:?}: hand {ours:?}, bincode {theirs:?}"),
            }
            if let Some((p, used)) = EventPayload::decode_fixed(kind, b) {
                assert!(used <= b.len());
                let t = &p.tokens;
                let mut rest = b;
                let fixed: EventRecord = decode_part(&mut rest).expect("bincode reads what the hand decoder read");
                assert_eq!(fixed, EventRecord { ts_delta_ms: p.ts_delta_ms, shape: p.shape, key: p.key, tokens: [t[0], t[1], t[3], t[4]], latency_ms: p.latency_ms });
                if kind & KIND_FLAG_TTFT != 0 {
                    assert_eq!(decode_part::<u32>(&mut rest).ok(), p.ttft_ms);
                }
                if kind & KIND_FLAG_RARE_TOKENS != 0 {
                    assert_eq!(decode_part::<[u64; 2]>(&mut rest).ok(), Some([t[2], t[5]]));
                }
                assert_eq!(b.len() - rest.len(), used);
            }
        };
        // Every marker, each width, in and out of its shortest form, at every position.
        let widths: [&[u8]; 12] = [&[7], &[250], &[251, 250, 0], &[251, 251, 0], &[251, 255, 255], &[252, 255, 255, 0, 0], &[252, 0, 0, 1, 0], &[252, 255, 255, 255, 255], &[253, 255, 255, 255, 255, 0, 0, 0, 0], &[253, 0, 0, 0, 0, 1, 0, 0, 0], &[254, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[255]];
        for at in 0..11 {
            for w in widths {
                for kind in [0, KIND_FLAG_TTFT, KIND_FLAG_TTFT | KIND_FLAG_RARE_TOKENS, KIND_FLAG_EXTRAS] {
                    let mut b = Vec::new();
                    for i in 0..11 {
                        b.extend_from_slice(if i == at { w } else { &[3] });
                    }
                    for cut in 0..=b.len() {
                        same(kind, &b[..cut]);
                    }
                }
            }
        }
        // Random bytes, markers often.
        proptest!(ProptestConfig::with_cases(3000), |(kind: u8, b in proptest::collection::vec(prop_oneof![0u8..=255, 249u8..=255], 0..60))| {
            same(kind, &b);
        });
    }

    #[test]
    fn golden_segment_header() {
        let h = SegmentHeader { version: 1, salt: 0xA1B2C3D4, base_seq: 42, created_ms: 1_767_225_600_000 };
        let b = h.encode();
        assert_eq!(
            hex(&b),
            "544b42445345471a01004000d4c3b2a12a00000000000000\
             00a8da769b01000000000000000000000000000000000000000000000000000000000000aa4f7a4d"
        );
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn header_rejects_damage() {
        let h = SegmentHeader { version: 1, salt: 7, base_seq: 1, created_ms: 0 };
        let mut b = h.encode();
        b[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), Err(HeaderError::BadChecksum));
        let mut b = h.encode();
        b[0] = b'X';
        assert_eq!(SegmentHeader::decode(&b), Err(HeaderError::BadMagic));
        let mut future = h;
        future.version = FORMAT_VERSION + 1;
        assert_eq!(
            SegmentHeader::decode(&future.encode()),
            Err(HeaderError::UnsupportedVersion(FORMAT_VERSION + 1))
        );
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(HeaderError::TooShort));
    }

    #[test]
    fn golden_event_frame() {
        let rec = EventPayload {
            ts_delta_ms: 1500,
            shape: 3,
            key: 260,
            tokens: [1200, 0, 0, 300, 0, 0],
            latency_ms: 850,
            ttft_ms: None,
            extras: None,
        };
        let mut payload = Vec::new();
        let flags = rec.encode(&mut payload);
        assert_eq!(flags, 0);
        assert_eq!(hex(&payload), "fbb80b03fb0401fbb00400fb2c0100fb5203");
        let mut frame = Vec::new();
        write_frame(&mut frame, 0x01020304, KIND_EVENT | flags | KIND_FLAG_BATCH_END, 9, &payload);
        assert_eq!(hex(&frame[..FRAME_HEADER_BYTES]), "8da5917512008109000000");
        let (h, p) = check_frame(0x01020304, &frame).unwrap();
        assert_eq!(h.seq_delta, 9);
        assert!(h.is_batch_end());
        assert_eq!(EventPayload::decode(h.kind, p).unwrap(), rec);
    }

    #[test]
    fn golden_dict_and_optional_parts() {
        let shape = ShapeRecord { dims: [1, 2, 3, 3, 4, 5, 0, 0, 0, 6], status: 429, flags: SHAPE_FLAG_STREAM | (2 << SHAPE_QUALITY_SHIFT) };
        let dict = DictRecord { first_string_id: 1, strings: vec!["POST", "/v1/chat"], first_shape_id: 0, shapes: vec![shape] };
        let mut payload = Vec::new();
        encode_payload(&dict, &mut payload);
        assert_eq!(hex(&payload), "010204504f5354082f76312f63686174000101020303040500000006fbad0112");
        let back: DictRecord = decode_payload(&payload).unwrap();
        assert_eq!(back, dict);

        let rec = EventPayload {
            ts_delta_ms: -5,
            shape: 0,
            key: 0,
            tokens: [0, 0, 7, 0, 0, 9],
            latency_ms: 0,
            ttft_ms: Some(100),
            extras: Some(EventExtras { event_id: Some("e1"), request_id: None, error_message: Some("x") }),
        };
        let mut payload = Vec::new();
        let flags = rec.encode(&mut payload);
        assert_eq!(flags, KIND_FLAG_TTFT | KIND_FLAG_RARE_TOKENS | KIND_FLAG_EXTRAS);
        assert_eq!(hex(&payload), "09000000000000006407090102653100010178");
        assert_eq!(EventPayload::decode(KIND_EVENT | flags, &payload).unwrap(), rec);
        // A payload that does not match its kind is refused, never misread.
        assert!(EventPayload::decode(KIND_EVENT, &payload).is_err());
        assert!(EventPayload::decode(KIND_EVENT | KIND_FLAG_TTFT, &payload).is_err());
    }

    #[test]
    fn kind_bytes() {
        assert!(kind_is_valid(KIND_EVENT));
        assert!(kind_is_valid(KIND_EVENT | KIND_EVENT_FLAGS | KIND_FLAG_BATCH_END));
        assert!(kind_is_valid(KIND_DICT | KIND_FLAG_BATCH_END));
        assert!(!kind_is_valid(KIND_DICT | KIND_FLAG_TTFT));
        assert!(!kind_is_valid(KIND_EVENT | 0x20));
        assert!(!kind_is_valid(0));
        assert!(!kind_is_valid(3));
    }

    #[test]
    fn frame_checks() {
        let mut frame = Vec::new();
        write_frame(&mut frame, 5, KIND_EVENT, 1, b"abc");
        assert!(check_frame(5, &frame).is_ok());
        assert_eq!(check_frame(6, &frame).unwrap_err(), FrameFault::ChecksumMismatch);
        assert_eq!(check_frame(5, &frame[..frame.len() - 1]).unwrap_err(), FrameFault::Truncated);
        for bit in 0..(frame.len() * 8) {
            let mut f = frame.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            assert!(check_frame(5, &f).is_err(), "bit {bit} flip validated");
        }
        assert!(decode_payload::<EventRecord>(b"\xff\xff").is_err());
    }
}
