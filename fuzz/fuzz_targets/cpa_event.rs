//! The CLIProxyAPI event mapper: JSON built from the fuzzer's numbers in the shape of a usage
//! event. Every accepted event is valid, its buckets are the breakdown's, and its total is the
//! breakdown's total whenever the breakdown's parts add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenboard_server::ingest::Mapper;
use tokenboard_server::secrets::Fingerprinter;

fuzz_target!(|data: &[u8]| {
    let mut n = data.chunks(4).map(|c| {
        let mut b = [0u8; 4];
        b[..c.len()].copy_from_slice(c);
        u64::from(u32::from_le_bytes(b)) % 1_000_000
    });
    let mut next = || n.next().unwrap_or(0);
    let (uncached, read, write, out, reasoning, unclassified) = (next(), next(), next(), next(), next(), next());
    let extra = next() % 3;
    let total = uncached + read + write + out + reasoning + unclassified + if extra == 2 { next() } else { 0 };
    let quality = ["complete", "inconsistent", "unclassified", "weird"][(next() % 4) as usize];
    let failed = next() % 2 == 1;
    let text_len = (next() % 3000) as usize;
    let json = format!(
        r#"{{"timestamp":"2026-08-22T14:03:11.{:09}+08:00","latency_ms":{},"ttft_ms":{},"source":"acct-{}","auth_index":"{:016x}","tokens":{{"input_tokens":{},"output_tokens":{},"total_tokens":{}}},"failed":{failed},"fail":{{"status_code":{},"body":"{}"}},"accounting_version":2,"token_breakdown":{{"schema_version":2,"quality":"{quality}","total_tokens":{total},"input":{{"total_tokens":{},"uncached_tokens":{uncached},"cache_read_tokens":{read},"cache_write_tokens":{write}}},"output":{{"total_tokens":{},"non_reasoning_tokens":{out},"reasoning_tokens":{reasoning}}},"unclassified_tokens":{unclassified}}},"provider":"p{}","model":"m{}","alias":"a","endpoint":"POST /v1/x","api_key":"sk-{}","request_id":"{:08x}"}}"#,
        next(), next(), next() % 5, next(), next(), next(), next(), total,
        if failed { 400 + next() % 200 } else { 200 },
        "e".repeat(text_len),
        uncached + read + write, out + reasoning, next() % 7, next() % 9, next(), next()
    );
    let fp = Fingerprinter::fixed([1; 32]);
    let mapper = Mapper { fp: &fp, now_ms: 1_800_000_000_000 };
    let ev = mapper.one(json.as_bytes()).expect("a well-formed usage event maps").expect("not a control message");
    ev.validate().expect("valid");
    let t = ev.tokens;
    assert_eq!((t.input_uncached, t.cache_read, t.cache_write, t.output, t.reasoning), (uncached, read, write, out, reasoning));
    assert_eq!(t.total(), total.max(uncached + read + write + out + reasoning + unclassified), "no token is lost or invented");
    assert_eq!(ev.success, !failed);
    assert!(ev.error_message.as_ref().is_none_or(|m| m.len() <= 1024));
    assert!(ev.event_id.is_some(), "a derived id for de-duplication");
    assert!(!format!("{ev:?}").contains("sk-"), "the client key is never kept in clear");
});
