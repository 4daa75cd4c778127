//! The binary under SIGKILL and retention: nothing acknowledged is lost or doubled, and old
//! segments leave the numbers exactly.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use serde_json::Value;

const DAY: i64 = 86_400_000;

fn exported_ids(server: &Server) -> Vec<String> {
    let nd = server.raw("/api/console/export?format=ndjson");
    nd.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap()["event_id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn sigkill_during_ingest_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    // Small segments so kills land around rolls too; `always` and `interval` both acknowledge
    // only what a process kill cannot take back.
    let mut server = Server::start(tmp.path(), &[("TOKENBOARD_SEGMENT_MAX_MB", "1")], None);
    let mut all_acked: Vec<String> = Vec::new();
    for (round, durability) in ["interval", "always", "interval"].iter().enumerate() {
        server.stop();
        server.env = vec![("TOKENBOARD_DURABILITY".into(), durability.to_string()), ("TOKENBOARD_SEGMENT_MAX_MB".into(), "1".into())];
        server.start_again();
        let acked: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for client in 0..3 {
                let (server, acked, stop) = (&server, &acked, &stop);
                s.spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let batch = test_events((round * 10 + client) as u64 * 1_000_000 + n, 50, chrono::Utc::now().timestamp_millis() - DAY, DAY)
                            .into_iter()
                            .enumerate()
                            .map(|(i, mut e)| {
                                e.id = format!("r{round}-c{client}-b{n}-{i}");
                                e
                            })
                            .collect::<Vec<_>>();
                        let (status, _) = server.ingest(&ndjson(&batch), "application/x-ndjson");
                        if status == 200 {
                            acked.lock().unwrap().extend(batch.iter().map(|e| e.id.clone()));
                        } else {
                            break;
                        }
                        n += 1;
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(700 + 300 * round as u64));
            server.sigkill();
            stop.store(true, Ordering::Relaxed);
        });
        server.start_again();
        let ids = exported_ids(&server);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        assert!(counts.values().all(|&c| c == 1), "round {round}: an event is stored twice");
        let stored: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let acked = acked.into_inner().unwrap();
        assert!(acked.len() > 100, "round {round}: the clients got going ({})", acked.len());
        all_acked.extend(acked);
        let lost: Vec<_> = all_acked.iter().filter(|id| !stored.contains(id.as_str())).collect();
        assert!(lost.is_empty(), "round {round}: {} acknowledged events lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(3)]);
        // The views agree with the log after recovery.
        assert_eq!(server.data("/api/console/stats")["api_call_count"], ids.len());
    }
    server.stop();
    assert!(server.logs().contains("marked clean"));
}

#[test]
fn retention_drops_old_segments_and_the_numbers_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("TOKENBOARD_SEGMENT_MAX_MB", "1"), ("TOKENBOARD_LOG_RETENTION_DAYS", "30")];
    let mut server = Server::start(tmp.path(), &env, None);
    let now = chrono::Utc::now().timestamp_millis();
    let old = test_events(7, 60_000, now - 50 * DAY, 5 * DAY);
    let recent = test_events(8, 2_000, now - 2 * DAY, DAY);
    // Old first, in time order, so the old events fill whole segments of their own.
    let mut old_sorted = old.clone();
    old_sorted.sort_by_key(|e| e.ts_ms);
    for chunk in old_sorted.chunks(5000).chain(recent.chunks(5000)) {
        let (s, v) = server.ingest(&ndjson(chunk), "application/x-ndjson");
        assert_eq!(s, 200, "{v}");
    }
    let before = server.data("/api/console/stats");
    assert_eq!(before["api_call_count"], old.len() + recent.len());
    let segments_before = server.data("/api/console/status")["segments"].as_u64().unwrap();
    assert!(segments_before >= 3, "{segments_before} segments");

    // Retention runs at start (and every cleanup_interval hours), here over the state the clean
    // stop saved.
    server.restart();
    assert!(server.logs().contains("loaded the state saved at the last clean stop"), "{}", server.logs());
    // The pass runs beside the first requests (it holds the engine's lock only to take each
    // segment out): wait for its report.
    let waited = std::time::Instant::now();
    while !server.logs().contains("retention deleted") {
        assert!(waited.elapsed() < std::time::Duration::from_secs(30), "no retention pass reported: {}", server.logs());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = server.data("/api/console/stats?top=1000");
    let calls = after["api_call_count"].as_u64().unwrap();
    assert!(calls < (old.len() + recent.len()) as u64, "old segments were dropped");
    assert!(calls >= recent.len() as u64, "no recent event was dropped");
    let status = server.data("/api/console/status");
    assert!(status["segments"].as_u64().unwrap() < segments_before);
    // Every number agrees with what is left: the export, the per-model sums, the recent range.
    let ids = exported_ids(&server);
    assert_eq!(ids.len() as u64, calls);
    let models: u64 = after["models"].as_array().unwrap().iter().map(|m| m["call_count"].as_u64().unwrap()).sum();
    assert_eq!(models, calls);
    let left: HashSet<String> = ids.into_iter().collect();
    let survivors_old = old.iter().filter(|e| left.contains(&e.id)).count() as u64;
    assert_eq!(survivors_old + recent.len() as u64, calls);
    let tokens_left: u64 = old.iter().chain(&recent).filter(|e| left.contains(&e.id)).map(TestEvent::total).sum();
    assert_eq!(after["total_tokens"], tokens_left);
    let recent_range = server.data(&format!("/api/console/stats?from={}", now - 3 * DAY));
    assert_eq!(recent_range["api_call_count"], recent.len());
    let metrics = String::from_utf8(server.raw("/metrics")).unwrap();
    let deleted = metrics.lines().find(|l| l.starts_with("tokenboard_retention_segments_deleted_total ")).unwrap();
    assert_ne!(deleted, "tokenboard_retention_segments_deleted_total 0");
    // The history still counts every call: what retention deleted from the daily rollups.
    let sum = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).sum::<u64>();
    let h = server.data("/api/console/history?days=90&group=model&top=1000");
    assert_eq!(h["labels"].as_array().unwrap().len(), 90);
    assert_eq!(sum(&h["callData"]), (old.len() + recent.len()) as u64);
    assert_eq!(sum(&h["rolledUp"]["callData"]), (old.len() + recent.len()) as u64 - calls);
    let all_tokens: u64 = old.iter().chain(&recent).map(TestEvent::total).sum();
    assert_eq!(sum(&h["tokenData"]), all_tokens);
    let per_model: u64 = h["rows"].as_array().unwrap().iter().map(|r| r["call_count"].as_u64().unwrap()).sum();
    assert_eq!(per_model, (old.len() + recent.len()) as u64);
    let keys = server.data("/api/console/history?days=90&group=key&top=5");
    let per_key: u64 = keys["rows"].as_array().unwrap().iter().map(|r| r["call_count"].as_u64().unwrap()).sum();
    assert_eq!(per_key, (old.len() + recent.len()) as u64, "the top 5 keys and other");
    assert_eq!(keys["rows"].as_array().unwrap().last().unwrap()["other"], true);
    let months = server.data("/api/console/history?days=90&granularity=month");
    assert_eq!(sum(&months["callData"]), (old.len() + recent.len()) as u64);
    let (s, v) = server.get("/api/console/history?group=team");
    assert_eq!((s, v["msg"].as_str().unwrap().starts_with("group:")), (400, true), "{v}");
    for (query, field) in [("days=3661", "days:"), ("days=7&from=2026-01-01", "days:"), ("from=2026-02-01&to=2026-01-01", "to:"), ("from=2016-01-01&to=2026-12-01", "from:"), ("from=2999-01-01", "from:")] {
        let (s, v) = server.get(&format!("/api/console/history?{query}"));
        assert_eq!((s, v["msg"].as_str().unwrap().starts_with(field)), (400, true), "{query}: {v}");
    }
    let (s, v) = server.get("/api/console/history?from=2026-13-01");
    assert_eq!((s, v["msg"].as_str().unwrap().starts_with("from:")), (400, true), "{v}");
}
