//! The RESP2 reply parser over arbitrary bytes: never panics, never allocates past its bounds,
//! and what it parses re-encodes into what it read for the commands we send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenboard_server::resp::{self, Reply};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut r = tokio::io::BufReader::new(data);
        for _ in 0..64 {
            if resp::read_reply(&mut r).await.is_err() {
                break;
            }
        }
        // A command of the fuzzer's arguments round-trips as an array of bulk strings.
        let args: Vec<&[u8]> = data.split(|b| *b == 0).take(8).collect();
        let encoded = resp::encode(&args);
        let back = resp::read_reply(&mut tokio::io::BufReader::new(&encoded[..])).await.expect("own encoding parses");
        assert_eq!(back, Reply::Array(Some(args.iter().map(|a| Reply::Bulk(Some(a.to_vec()))).collect())));
    });
});
