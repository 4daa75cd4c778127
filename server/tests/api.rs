//! Black-box tests of the HTTP API against the real binary: concurrent ingest checked against a
//! reference computed here, auth on every route, bad input, and secrets.

mod common;

use std::collections::{BTreeMap, HashMap};

use chrono::TimeZone;
use common::*;
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;
/// 2026-10-01T00:00:00Z
const T0: i64 = 1_790_812_800_000;

fn reference_days(events: &[TestEvent], tz: chrono_tz::Tz) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for e in events {
        let d = tz.timestamp_millis_opt(e.ts_ms).unwrap().format("%Y-%m-%d").to_string();
        let slot: &mut (u64, u64) = m.entry(d).or_default();
        slot.0 += 1;
        slot.1 += e.total();
    }
    m
}

fn local_midnight(tz: chrono_tz::Tz, date: chrono::NaiveDate) -> i64 {
    tz.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap()).earliest().unwrap().timestamp_millis()
}

#[test]
fn concurrent_ingest_then_every_read_agrees_with_a_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[], None);
    let events = test_events(42, 8000, T0, 12 * DAY);

    // Four clients, each sending its share in a different body shape.
    std::thread::scope(|s| {
        for (c, share) in events.chunks(2000).enumerate() {
            let server = &server;
            s.spawn(move || {
                for (i, batch) in share.chunks(97 + c * 31).enumerate() {
                    let (status, v) = match (c + i) % 4 {
                        0 => server.ingest(&ndjson(batch), "application/x-ndjson"),
                        1 => server.ingest(Value::Array(batch.iter().map(TestEvent::json).collect()).to_string().as_bytes(), "application/json"),
                        2 => {
                            let (s, b) = server.request(
                                "POST",
                                "/api/ingest/events",
                                Some(ADMIN),
                                Some((&gzip(&ndjson(batch)), "application/x-ndjson")),
                                &[("Content-Encoding", "gzip")],
                            );
                            (s, serde_json::from_slice(&b).unwrap())
                        }
                        _ => {
                            // One event per request.
                            let mut last = (200, Value::Null);
                            for e in batch {
                                last = server.ingest(e.json().to_string().as_bytes(), "application/json");
                                assert_eq!(last.0, 200, "{}", last.1);
                            }
                            (last.0, json!({"data": {"accepted": batch.len(), "duplicates": 0}}))
                        }
                    };
                    assert_eq!(status, 200, "{v}");
                    assert_eq!(v["data"]["accepted"], batch.len(), "{v}");
                }
            });
        }
    });
    // Sending a batch again stores nothing twice.
    let (s, v) = server.ingest(&ndjson(&events[..500]), "application/x-ndjson");
    assert_eq!((s, v["data"]["accepted"].as_u64(), v["data"]["duplicates"].as_u64()), (200, Some(0), Some(500)), "{v}");

    // Totals.
    let stats = server.data("/api/console/stats?top=1000");
    assert_eq!(stats["api_call_count"], events.len());
    assert_eq!(stats["total_tokens"], events.iter().map(TestEvent::total).sum::<u64>());
    assert_eq!(stats["error_count"], events.iter().filter(|e| !e.success()).count());
    assert_eq!(stats["tokens"]["cache_read"], events.iter().map(|e| e.tokens[1]).sum::<u64>());
    // Per model and per key.
    for (field, group, of) in [("models", "model", (|e: &TestEvent| e.model.clone()) as fn(&TestEvent) -> String), ("keys", "key", |e| e.key.clone())] {
        let mut want: HashMap<String, (u64, u64)> = HashMap::new();
        for e in &events {
            let w = want.entry(of(e)).or_default();
            w.0 += 1;
            w.1 += e.total();
        }
        let got: HashMap<String, (u64, u64)> = stats[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].as_str().unwrap().to_string(), (m["call_count"].as_u64().unwrap(), m["token_count"].as_u64().unwrap())))
            .collect();
        assert_eq!(got, want, "{group}");
    }
    // Top-N with the rest as "other".
    let top = server.data("/api/console/stats?top=3");
    let models = top["models"].as_array().unwrap();
    assert_eq!(models.len(), 4);
    assert_eq!(models[3]["name"], "other");
    assert_eq!(models.iter().map(|m| m["call_count"].as_u64().unwrap()).sum::<u64>(), events.len() as u64);

    // Daily trends in four zones, over whole local days.
    for zone in ["UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata"] {
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let want = reference_days(&events, tz);
        let first = chrono::NaiveDate::parse_from_str(want.keys().next().unwrap(), "%Y-%m-%d").unwrap();
        let last = chrono::NaiveDate::parse_from_str(want.keys().last().unwrap(), "%Y-%m-%d").unwrap();
        let from = local_midnight(tz, first);
        let to = local_midnight(tz, last.succ_opt().unwrap());
        let t = server.data(&format!("/api/console/usage-trend?from={from}&to={to}&tz={zone}&granularity=day"));
        let labels: Vec<&str> = t["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        let mut got = BTreeMap::new();
        for (i, l) in labels.iter().enumerate() {
            let calls = t["callData"][i].as_u64().unwrap();
            if calls > 0 {
                got.insert(l.to_string(), (calls, t["tokenData"][i].as_u64().unwrap()));
            }
        }
        assert_eq!(got, want, "{zone}");
        assert_eq!(labels.len() as i64, (last - first).num_days() + 1, "{zone}: one bucket per local day");
    }
    // Hourly buckets at +05:30 over a partial range.
    let tz: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    let (from, to) = (T0 + 3 * DAY + 1_234_567, T0 + 4 * DAY + 7_654_321);
    let t = server.data(&format!("/api/console/usage-trend?from={from}&to={to}&tz=Asia/Kolkata&granularity=hour"));
    let starts = t["starts"].as_array().unwrap();
    for (i, s) in starts.iter().enumerate() {
        let s = s.as_i64().unwrap();
        let e = t["ends"][i].as_i64().unwrap();
        let want = events.iter().filter(|ev| ev.ts_ms >= s && ev.ts_ms < e).count() as u64;
        assert_eq!(t["callData"][i].as_u64().unwrap(), want, "bucket {i}");
        if i > 0 {
            assert_eq!(tz.timestamp_millis_opt(s).unwrap().format("%M:%S").to_string(), "00:00", "hour buckets start on local hours");
        }
    }

    // A filtered read and a range read.
    let m = "model-3";
    let f = server.data(&format!("/api/console/stats?model={m}&from={}&to={}", T0 + DAY, T0 + 5 * DAY));
    let want: Vec<_> = events.iter().filter(|e| e.model == m && e.ts_ms >= T0 + DAY && e.ts_ms < T0 + 5 * DAY).collect();
    assert_eq!(f["api_call_count"], want.len());
    assert_eq!(f["total_tokens"], want.iter().map(|e| e.total()).sum::<u64>());
    let f = server.data("/api/console/stats?status=5xx");
    assert_eq!(f["api_call_count"], events.iter().filter(|e| e.status >= 500).count());
    let f = server.data("/api/console/stats?model=never-seen");
    assert_eq!(f["api_call_count"], 0);

    // Every log page, newest first, by cursor.
    let mut seen = 0;
    let mut cursor = String::new();
    let mut last_id = u64::MAX;
    loop {
        let (s, v) = server.get(&format!("/api/console/logs?limit=1000&key=key-5{cursor}"));
        assert_eq!(s, 200);
        for row in v["data"].as_array().unwrap() {
            let id = row["id"].as_u64().unwrap();
            assert!(id < last_id, "newest first");
            last_id = id;
            assert_eq!(row["key"], "key-5");
            for field in ["timestamp", "method", "endpoint", "status", "tokens", "duration", "model", "error"] {
                assert!(row.get(field).is_some(), "log rows carry {field}");
            }
            seen += 1;
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, events.iter().filter(|e| e.key == "key-5").count());

    // Exports of the whole log and of a filter.
    let nd = server.raw("/api/console/export?format=ndjson");
    assert_eq!(nd.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), events.len());
    let csv = String::from_utf8(server.raw("/api/console/export?format=csv&model=model-1")).unwrap();
    assert_eq!(csv.lines().count() - 1, events.iter().filter(|e| e.model == "model-1").count());
    let doc: Value = serde_json::from_slice(&server.raw("/api/console/export?format=json&status=error")).unwrap();
    assert_eq!(doc["logs"].as_array().unwrap().len(), events.iter().filter(|e| !e.success()).count());
    assert_eq!(doc["stats"]["api_call_count"], events.iter().filter(|e| !e.success()).count());
}

/// Every route, the scope it needs, and a request that would otherwise succeed.
fn routes() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("POST", "/api/ingest/events", "ingest"),
        ("GET", "/api/console/stats", "read"),
        ("GET", "/api/console/usage-trend", "read"),
        ("GET", "/api/console/history", "read"),
        ("GET", "/api/console/logs", "read"),
        ("GET", "/api/console/keys", "read"),
        ("GET", "/api/console/export", "read"),
        ("GET", "/api/console/status", "read"),
        ("GET", "/api/console/sources", "read"),
        ("GET", "/api/console/stream", "read"),
        ("GET", "/metrics", "read"),
        ("POST", "/api/console/keys", "admin"),
        ("PATCH", "/api/console/keys/1", "admin"),
        ("DELETE", "/api/console/keys/1", "admin"),
        ("GET", "/api/openapi.json", "any"),
    ]
}

#[test]
fn every_route_needs_a_token_with_the_right_scope() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[], None);
    let mut tokens = HashMap::new();
    for scope in ["read", "ingest", "gateway"] {
        let (s, v) = server.post_json("/api/console/keys", ADMIN, &json!({"name": scope, "scope": scope}));
        assert_eq!(s, 201, "{v}");
        tokens.insert(scope, v["data"]["secret"].as_str().unwrap().to_string());
    }
    for (method, path, need) in routes() {
        let body = if method == "POST" || method == "PATCH" { Some((&b"{}"[..], "application/json")) } else { None };
        for token in [None, Some("tb_not_a_key"), Some("")] {
            let (s, b) = server.request(method, path, token, body, &[]);
            assert_eq!(s, 401, "{method} {path} with {token:?}");
            assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), json!({"code": 401, "msg": "Unauthorized"}));
        }
        for (scope, token) in &tokens {
            let allowed = match need {
                "any" => *scope != "gateway",
                n => n == *scope,
            };
            if allowed || path.ends_with("/stream") {
                continue;
            }
            let (s, b) = server.request(method, path, Some(token), body, &[]);
            assert_eq!(s, 403, "{method} {path} with a {scope} token: {}", String::from_utf8_lossy(&b));
            assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["code"], 403);
        }
    }
    // The OpenAPI document lists exactly these routes with these scopes.
    let doc = server.data_raw_json("/api/openapi.json");
    let mut documented: Vec<(String, String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let scope = op["x-scope"].as_str().unwrap().to_string();
            if scope != "none" {
                documented.push((method.to_uppercase(), path.replace("{id}", "1"), scope));
            }
        }
    }
    let mut expected: Vec<(String, String, String)> = routes().iter().map(|(m, p, s)| (m.to_string(), p.to_string(), s.to_string())).collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected);

    // And the right scope gets in.
    assert_eq!(server.request("GET", "/api/console/stats", Some(&tokens["read"]), None, &[]).0, 200);
    assert_eq!(server.request("POST", "/api/ingest/events", Some(&tokens["ingest"]), Some((b"{\"model\":\"m\"}", "application/json")), &[]).0, 200);
    // The console page and the health check need none.
    assert_eq!(server.request("GET", "/healthz", None, None, &[]).0, 200);
    assert_eq!(server.request("GET", "/console", None, None, &[]).0, 200);
    // A disabled key no longer opens anything.
    let read_id = server.data("/api/console/keys").as_array().unwrap().iter().find(|k| k["name"] == "read").unwrap()["id"].as_u64().unwrap();
    let (s, _) = server.request("PATCH", &format!("/api/console/keys/{read_id}"), Some(ADMIN), Some((b"{\"enabled\":false}", "application/json")), &[]);
    assert_eq!(s, 200);
    assert_eq!(server.request("GET", "/api/console/stats", Some(&tokens["read"]), None, &[]).0, 401);
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[("TOKENBOARD_MAX_BODY_BYTES", "4194304")], None);
    let (s, _) = server.ingest(&ndjson(&test_events(1, 10, T0, DAY)), "application/x-ndjson");
    assert_eq!(s, 200);
    let before = server.data("/api/console/stats");

    let huge = "x".repeat(100_000);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"model\": ".to_vec(), ""),
        (b"not json at all".to_vec(), ""),
        (br#"{"model":"ok"}
{"tokens":{"output":-3}}"#.to_vec(), "tokens.output"),
        (br#"[{"model":"ok"},{"status":"teapot"}]"#.to_vec(), "status"),
        (br#"{"tokens":-1}"#.to_vec(), "tokens"),
        (br#"{"latency_ms":1.5}"#.to_vec(), "latency_ms"),
        (br#"{"ts":"last tuesday"}"#.to_vec(), "ts"),
        (br#"{"quality":"superb"}"#.to_vec(), "quality"),
        (format!(r#"{{"model":"{huge}"}}"#).into_bytes(), "model"),
        (format!(r#"{{"error_message":"{huge}"}}"#).into_bytes(), "error_message"),
        (br#"{"status":70000}"#.to_vec(), "status"),
        (b"[1,2,3]".to_vec(), ""),
        (b"".to_vec(), ""),
    ];
    for (body, field) in &cases {
        let (s, v) = server.ingest(body, "application/json");
        assert_eq!(s, 400, "{}: {v}", String::from_utf8_lossy(&body[..body.len().min(80)]));
        assert_eq!(v["code"], 400);
        assert!(!v["msg"].as_str().unwrap().is_empty());
        if !field.is_empty() {
            assert!(v["errors"].as_array().unwrap().iter().any(|e| e["field"] == *field), "{field}: {v}");
        }
    }
    // 10 MB of otherwise valid events.
    let mut big = Vec::new();
    let mut i = 0;
    while big.len() < 10 << 20 {
        big.extend_from_slice(format!("{{\"model\":\"m\",\"event_id\":\"big-{i}\",\"request_id\":\"{}\"}}\n", "r".repeat(200)).as_bytes());
        i += 1;
    }
    let (s, _) = server.ingest(&big, "application/x-ndjson");
    assert!(s == 413 || s == 0, "a 10 MB body is refused: {s}");
    // A gzip bomb is stopped at the decoded limit.
    let bomb = gzip(&vec![b' '; 80 << 20]);
    let (s, b) = server.request("POST", "/api/ingest/events", Some(ADMIN), Some((&bomb, "application/json")), &[("Content-Encoding", "gzip")]);
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&b));
    let (s, _) = server.request("POST", "/api/ingest/events", Some(ADMIN), Some((b"{}", "application/json")), &[("Content-Encoding", "br")]);
    assert_eq!(s, 415);

    // Bad query parameters name themselves.
    for (path, param) in [
        ("/api/console/stats?from=yesterday", "from"),
        ("/api/console/stats?from=2000&to=1000", "to"),
        ("/api/console/stats?tz=Mars/Olympus", "tz"),
        ("/api/console/stats?top=0", "top"),
        ("/api/console/stats?status=9xx", "status"),
        ("/api/console/logs?limit=0", "limit"),
        ("/api/console/logs?limit=1001", "limit"),
        ("/api/console/logs?cursor=abc", "cursor"),
        ("/api/console/usage-trend?days=91", "days"),
        ("/api/console/usage-trend?granularity=year", "granularity"),
        ("/api/console/usage-trend?granularity=minute&from=0&to=9999999999999", "granularity"),
        ("/api/console/export?format=xml", "format"),
    ] {
        let (s, v) = server.get(path);
        assert_eq!(s, 400, "{path}: {v}");
        assert!(v["msg"].as_str().unwrap().starts_with(param), "{path}: {v}");
    }
    // Bad key requests.
    let (s, v) = server.post_json("/api/console/keys", ADMIN, &json!({"name": ""}));
    assert!(s == 400 && v["msg"].as_str().unwrap().starts_with("name"), "{v}");
    let (s, v) = server.post_json("/api/console/keys", ADMIN, &json!({"name": "x", "scope": "root"}));
    assert!(s == 400 && v["msg"].as_str().unwrap().starts_with("scope"), "{v}");
    let (s, v) = server.post_json("/api/console/keys", ADMIN, &json!({"name": 5}));
    assert!(s == 400 && v["msg"].as_str().unwrap().starts_with("name"), "{v}");
    let (s, _) = server.request("DELETE", "/api/console/keys/999", Some(ADMIN), None, &[]);
    assert_eq!(s, 404);

    let after = server.data("/api/console/stats");
    assert_eq!(before, after, "rejected input changed nothing");
    assert_eq!(server.data("/api/console/keys").as_array().unwrap().len(), 1);
    // The server still serves.
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn secrets_never_leave_after_creation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path(), &[("TOKENBOARD_SEGMENT_MAX_MB", "1")], Some("console:\n  max_keys: 3\n"));
    let (s, v) = server.post_json("/api/console/keys", ADMIN, &json!({"name": "team-a", "description": "gateway key"}));
    assert_eq!(s, 201);
    let gw = v["data"]["secret"].as_str().unwrap().to_string();
    assert!(gw.starts_with("tb_") && gw.len() >= 40);
    let (_, v) = server.post_json("/api/console/keys", ADMIN, &json!({"name": "reader", "scope": "read"}));
    let reader = v["data"]["secret"].as_str().unwrap().to_string();
    // max_keys (3, the admin token included) is enforced with a clear error.
    let (s, v) = server.post_json("/api/console/keys", ADMIN, &json!({"name": "one-too-many"}));
    assert_eq!(s, 409, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("max_keys"), "{v}");

    // Calls made with the managed key are attributed to it; a raw upstream key is fingerprinted.
    let raw = "sk-upstream-secret-value-987654321";
    let mut body = String::new();
    for i in 0..5 {
        body.push_str(&json!({"model": "m", "api_key": gw, "tokens": {"output": 10}, "event_id": format!("a{i}")}).to_string());
        body.push('\n');
    }
    body.push_str(&json!({"model": "m", "api_key": raw, "tokens": {"output": 1}}).to_string());
    body.push('\n');
    let cpa = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi/usage-events.ndjson")).unwrap();
    body.push_str(&String::from_utf8(cpa).unwrap());
    let (s, v) = server.ingest(body.as_bytes(), "application/x-ndjson");
    assert_eq!(s, 200, "{v}");
    let keys = server.data("/api/console/keys");
    let team = keys.as_array().unwrap().iter().find(|k| k["name"] == "team-a").unwrap();
    assert_eq!(team["usage"]["calls"], 5);
    assert_eq!(team["usage"]["tokens"], 50);
    assert!(team["last_used"].is_string());
    let logs = server.data("/api/console/logs?limit=1000");
    assert_eq!(logs.as_array().unwrap().iter().filter(|r| r["key_name"] == "team-a").count(), 5);

    let mut seen = String::new();
    for path in [
        "/api/console/keys",
        "/api/console/stats?top=1000",
        "/api/console/logs?limit=1000",
        "/api/console/export?format=json",
        "/api/console/export?format=csv",
        "/api/console/export?format=ndjson",
        "/api/console/status",
        "/metrics",
    ] {
        seen.push_str(&String::from_utf8_lossy(&server.raw(path)));
    }
    server.restart();
    let mut secrets = vec![gw.as_str(), reader.as_str(), ADMIN, raw, "sk-test-client-alpha-0001", "dev.alpha@example.com"];
    // Every api_key and source value of the CLIProxyAPI samples.
    let sample_secrets: Vec<String> = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi/usage-events.ndjson"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            [v["api_key"].as_str().unwrap_or("").to_string(), v["source"].as_str().unwrap_or("").to_string()]
        })
        .filter(|s| s.len() >= 8)
        .collect();
    secrets.extend(sample_secrets.iter().map(String::as_str));
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(tmp.path().join("data")).unwrap().chain(std::fs::read_dir(tmp.path().join("data/events")).unwrap()) {
        let p = entry.unwrap().path();
        if p.is_file() {
            on_disk.extend(std::fs::read(&p).unwrap());
        }
    }
    let on_disk = String::from_utf8_lossy(&on_disk).into_owned();
    let logs = server.logs();
    for secret in secrets {
        assert!(!seen.contains(secret), "{secret} appears in a response");
        assert!(!logs.contains(secret), "{secret} appears in the server's output");
        assert!(!on_disk.contains(secret), "{secret} is stored in clear");
    }
}

#[test]
fn config_errors_name_the_key_and_the_original_keys_work() {
    let tmp = tempfile::tempdir().unwrap();
    for (yaml, key) in [
        ("console:\n  port: seventy\n", "console.port"),
        ("console:\n  colour: blue\n", "colour"),
        ("storage:\n  durability: maybe\n", "storage.durability"),
        ("server:\n  timezone: Nowhere/Land\n", "server.timezone"),
        ("console:\n  path: api\n", "console.path"),
    ] {
        let p = tmp.path().join("bad.yaml");
        std::fs::write(&p, yaml).unwrap();
        let out = std::process::Command::new(bin()).arg("-config").arg(&p).env("TOKENBOARD_DATA_DIR", tmp.path().join("d")).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{yaml}: {err}");
    }
    let out = std::process::Command::new(bin()).arg("serve").env("CONSOLE_PORT", "0").env("TOKENBOARD_DATA_DIR", tmp.path().join("d")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("console.port"));

    // The original section, with the path moved and a zone default.
    let server = Server::start(
        tmp.path(),
        &[("CONSOLE_PATH", "/board")],
        Some("console:\n  enabled: true\n  path: /ignored\n  max_keys: 10\n  log_retention_days: 7\n  cleanup_interval: 2\nserver:\n  timezone: Asia/Shanghai\n"),
    );
    assert_eq!(server.request("GET", "/board", None, None, &[]).0, 200);
    assert_eq!(server.data("/api/console/usage-trend?days=1")["range"]["tz"], "Asia/Shanghai");
    let help = std::process::Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for cmd in ["serve", "verify", "replay", "export", "import", "loadgen"] {
        assert!(help.contains(cmd), "--help lists {cmd}");
    }
}

#[test]
fn the_live_stream_pushes_new_rows_and_totals() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[], None);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(conn, "GET /api/console/stream?model=live-model HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(conn);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (s, _) = server.ingest(b"{\"model\":\"live-model\",\"tokens\":{\"output\":7}}\n{\"model\":\"other\"}", "application/x-ndjson");
    assert_eq!(s, 200);
    let mut got_row = false;
    let mut got_totals = false;
    let mut line = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(got_row && got_totals) {
        assert!(std::time::Instant::now() < deadline, "no rows and totals within 30 s");
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
        if line.contains("\"rows\"") {
            assert!(line.contains("live-model") && !line.contains("\"other\""), "{line}");
            got_row = true;
        }
        if line.contains("\"api_call_count\":2") {
            got_totals = true;
        }
    }
}

#[test]
fn first_start_without_config_prints_an_admin_token_once() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = || {
        std::process::Command::new(bin())
            .current_dir(tmp.path())
            .env("CONSOLE_PORT", port.to_string())
            .env("TOKENBOARD_BIND", "127.0.0.1")
            .env_remove("TOKENBOARD_ADMIN_TOKEN")
            .env_remove("TOKENBOARD_DATA_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut token = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("tb_")) {
            token = t.to_string();
            break;
        }
        line.clear();
    }
    assert!(token.len() >= 40, "a token was printed: {line}");
    // It works, and only its hash is in the data directory (./data, the default).
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://127.0.0.1:{port}/api/console/stats");
    let mut status = 0;
    for _ in 0..100 {
        if let Ok(r) = agent.get(&url).header("Authorization", format!("Bearer {token}")).call() {
            status = r.status().as_u16();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, 200);
    let keys_log = std::fs::read_to_string(tmp.path().join("data/keys.log")).unwrap();
    assert!(!keys_log.contains(&token));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    // A second start prints no token.
    let child = start();
    std::thread::sleep(std::time::Duration::from_millis(700));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let output = child.wait_with_output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!all.contains(&token), "{all}");
}

#[test]
fn too_many_ingest_requests_in_flight_get_503_with_retry_after() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[("TOKENBOARD_MAX_INFLIGHT", "1")], None);
    // A client that sends its headers and only half its body holds the one slot.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(slow, "POST /api/ingest/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{{\"model\":").unwrap();
    slow.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(conn, "POST /api/ingest/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("retry-after: 1"), "{reply}");
    // Once the slow client finishes, the slot is free again.
    write!(slow, "\"x\"}}").unwrap();
    slow.flush().unwrap();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(server.ingest(b"{\"model\":\"y\"}", "application/json").0, 200);
}
