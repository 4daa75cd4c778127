//! The offline tools: verify, import, export, replay and loadgen, run as a user would.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).env_remove("TOKENBOARD_TOKEN").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi").join(name).to_string_lossy().into_owned()
}

#[test]
fn import_export_verify_and_replay_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();

    // CLIProxyAPI events and a v1 export, twice: the second time is all duplicates.
    for _ in 0..2 {
        let (ok, _, err) = run(&["import", &fixture("usage-events.ndjson"), "--data-dir", d]);
        assert!(ok, "{err}");
        let (ok, _, err) = run(&["import", &fixture("v1-usage-export.json"), "--data-dir", d]);
        assert!(ok, "{err}");
    }
    let (_, _, err) = run(&["import", &fixture("v1-usage-export.json"), "--data-dir", d]);
    assert!(err.contains("0 accepted"), "{err}");
    let v1: Value = serde_json::from_str(&std::fs::read_to_string(fixture("v1-usage-export.json")).unwrap()).unwrap();
    let v1_details: usize = v1["usage"]["apis"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|a| a["models"].as_object().unwrap().values())
        .map(|m| m["details"].as_array().map_or(0, Vec::len))
        .sum();
    let cpa_events = std::fs::read_to_string(fixture("usage-events.ndjson")).unwrap().lines().filter(|l| !l.trim().is_empty()).count();

    let (ok, out, err) = run(&["export", d, "--format", "ndjson"]);
    assert!(ok, "{err}");
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), v1_details + cpa_events);
    // v1 totals survive: every detail's total_tokens is in the log.
    let v1_tokens: u64 = v1["usage"]["apis"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|a| a["models"].as_object().unwrap().values())
        .flat_map(|m| m["details"].as_array().cloned().unwrap_or_default())
        .map(|d| d["tokens"]["total_tokens"].as_u64().unwrap())
        .sum();
    let imported_v1: u64 = rows.iter().filter(|r| r["event_id"].as_str().unwrap().starts_with("cpa-v1:")).map(|r| r["tokens"].as_u64().unwrap()).sum();
    assert_eq!(imported_v1, v1_tokens);
    let (ok, csv, _) = run(&["export", d, "--format", "csv", "--status", "error"]);
    assert!(ok);
    assert_eq!(csv.lines().count() - 1, rows.iter().filter(|r| r["success"] == false).count());

    let (ok, out, err) = run(&["replay", d, "--tz", "Asia/Shanghai"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("calls {}", rows.len())), "{out}");
    assert!(out.contains("+08:00"), "buckets in the zone: {out}");

    let (ok, out, _) = run(&["verify", d]);
    assert!(ok, "{out}");
    assert!(out.contains("ok"));

    // Flip a byte inside the first frames: verify names the segment and the offset, exits 1.
    let seg = std::fs::read_dir(data.join("events")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "seg")).unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[64 + 40] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let (ok, out, _) = run(&["verify", d]);
    assert!(!ok, "{out}");
    assert!(out.contains("corruption at offset"), "{out}");
    assert!(out.contains(seg.file_name().unwrap().to_str().unwrap()), "{out}");

    // Bad flags get clear errors.
    let (ok, _, err) = run(&["export", d, "--format", "xml"]);
    assert!(!ok && err.contains("--format"), "{err}");
    let (ok, _, err) = run(&["export", d, "--tz", "Mars/Base"]);
    assert!(!ok && err.contains("--tz"), "{err}");
    let (ok, _, err) = run(&["import", "/nonexistent.ndjson", "--data-dir", d]);
    assert!(!ok && err.contains("/nonexistent.ndjson"), "{err}");
    let (ok, _, err) = run(&["import", &fixture("usage-events.ndjson")]);
    assert!(!ok && err.contains("--to") && err.contains("--data-dir"), "{err}");
    for cmd in ["serve", "verify", "replay", "export", "import", "loadgen"] {
        let (ok, out, _) = run(&[cmd, "--help"]);
        assert!(ok && out.contains("Usage"), "{cmd} --help");
    }
}

#[test]
fn loadgen_import_and_replay_against_running_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Server::start(&tmp.path().join("a"), &[], None);
    let url = a.url("");
    let (ok, out, err) = run(&["loadgen", "--to", &url, "--token", ADMIN, "--events", "3000", "--batch", "250", "--rate", "0", "--concurrency", "4", "--backfill-days", "3"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("3000 events"), "{out}");
    let stats = a.data("/api/console/stats?top=100");
    assert_eq!(stats["api_call_count"], 3000);
    assert!(stats["models"].as_array().unwrap().len() > 5, "realistic spread of models");
    assert!(stats["error_count"].as_u64().unwrap() > 0, "some errors");
    assert!(stats["ttft"]["count"].as_u64().unwrap() > 0, "streaming calls");
    // Import over HTTP, then replay A's log into B: B ends with the same numbers.
    let (ok, _, err) = run(&["import", &fixture("usage-events.ndjson"), "--to", &url, "--token", ADMIN]);
    assert!(ok, "{err}");
    let want = a.data("/api/console/stats?top=100");
    a.stop();
    let b = Server::start(&tmp.path().join("b"), &[], None);
    let a_data = tmp.path().join("a/data");
    let (ok, _, err) = run(&["replay", a_data.to_str().unwrap(), "--to", &b.url(""), "--token", ADMIN, "--batch", "700"]);
    assert!(ok, "{err}");
    let got = b.data("/api/console/stats?top=100");
    for field in ["api_call_count", "total_tokens", "error_count", "tokens", "models", "keys", "providers", "latency"] {
        assert_eq!(got[field], want[field], "{field}");
    }
    // Replaying again adds nothing.
    let (ok, _, err) = run(&["replay", a_data.to_str().unwrap(), "--to", &b.url(""), "--token", ADMIN]);
    assert!(ok && err.contains("0 accepted"), "{err}");
    // A wrong token is reported, not retried forever.
    let (ok, _, err) = run(&["loadgen", "--to", &b.url(""), "--token", "tb_wrong", "--events", "10"]);
    assert!(!ok && err.contains("401"), "{err}");
}
