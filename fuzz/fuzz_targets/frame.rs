//! Frame and payload decoding: never panics, never accepts a frame whose CRC does not match,
//! every accepted event payload decodes within the format's bounds, and on any bytes the hand
//! payload decoder agrees with bincode's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenboard_engine::format::{self, EventPayload, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let salt = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let mut rest = &data[4..];
    // Walk the bytes as a run of frames, the way a reader does.
    while rest.len() >= FRAME_HEADER_BYTES {
        match format::check_frame(salt, rest) {
            Ok((h, payload)) => {
                let end = h.frame_bytes();
                assert!(payload.len() <= FRAME_PAYLOAD_BYTES_MAX);
                assert_eq!(format::frame_crc(salt, &rest[..end]), h.crc, "a frame with a bad CRC was accepted");
                if h.kind_type() == format::KIND_EVENT {
                    let _ = EventPayload::decode(h.kind, payload);
                }
                rest = &rest[end..];
            }
            Err(_) => rest = &rest[1..],
        }
    }
    // Any bytes as an event payload: the hand decoder agrees with bincode's.
    let kind = data[0];
    match (EventPayload::decode(kind, &data[4..]), EventPayload::decode_by_bincode(kind, &data[4..])) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("hand decoder {a:?}, bincode {b:?}"),
    }
    // Anything the writer frames is accepted back unchanged.
    let payload = &data[4..data.len().min(4 + 1024)];
    let mut out = Vec::new();
    format::write_frame(&mut out, salt, format::KIND_EVENT, 7, payload);
    let (h, p) = format::check_frame(salt, &out).expect("own frame");
    assert_eq!((h.seq_delta, p), (7, payload));
});
