//! The ingest body parser over arbitrary bytes: never panics; a rejected body says which event
//! and field; an accepted one holds only events that pass the engine's validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenboard_server::ingest::{BodyError, Mapper};
use tokenboard_server::secrets::Fingerprinter;

fuzz_target!(|data: &[u8]| {
    let fp = Fingerprinter::fixed([9; 32]);
    let mapper = Mapper { fp: &fp, now_ms: 1_800_000_000_000 };
    for ndjson in [false, true] {
        match mapper.parse_body(data, ndjson, 1000) {
            Ok(parsed) => {
                for ev in &parsed.events {
                    ev.validate().expect("accepted events are valid");
                    assert!(ev.tokens.to_array().iter().try_fold(0u64, |a, &t| a.checked_add(t)).is_some());
                }
            }
            Err(BodyError::Items(errors)) => {
                assert!(!errors.is_empty() && errors.len() <= 100);
                for e in &errors {
                    assert!(!e.message.is_empty(), "every error says what is wrong");
                }
            }
            Err(BodyError::Body(msg)) => assert!(!msg.is_empty()),
            Err(BodyError::TooManyEvents { max }) => assert_eq!(max, 1000),
        }
    }
});
