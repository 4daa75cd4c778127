//! The CLIProxyAPI collector against a fake proxy that follows PROTOCOL.md to the byte.

mod common;
mod fake_cpa;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use fake_cpa::Fake;
use serde_json::Value;

const KEY: &str = "test-management-key";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi").join(name)).unwrap()
}

fn sample_events() -> Vec<String> {
    String::from_utf8(fixture("usage-events.ndjson")).unwrap().lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// A copy of a sample event made unique by its request id.
fn variant(sample: &str, i: usize) -> String {
    let mut v: Value = serde_json::from_str(sample).unwrap();
    v["request_id"] = Value::from(format!("gen{i:08}"));
    v.to_string()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn collector(dir: &std::path::Path, fake: &Fake, extra: &str) -> Server {
    let yaml = format!(
        "sources:\n  cliproxyapi:\n    - name: cpa-test\n      address: {}\n      management_key_env: TB_TEST_CPA_KEY\n{extra}",
        fake.address()
    );
    Server::start(dir, &[("TB_TEST_CPA_KEY", KEY), ("TOKENBOARD_LOG_RETENTION_DAYS", "0")], Some(&yaml))
}

fn calls(server: &Server) -> u64 {
    server.data("/api/console/stats")["api_call_count"].as_u64().unwrap()
}

#[test]
fn the_fake_replays_the_sample_sessions_byte_for_byte() {
    let events = sample_events();
    for (session, setup) in [("resp-pop-session", 0), ("resp-subscribe-session", 1)] {
        let fake = Fake::start(KEY);
        {
            let mut st = fake.state.lock().unwrap();
            if setup == 0 {
                st.queue.extend([events[0].clone(), events[1].clone()]);
            } else {
                st.on_subscribe = vec![events[2].clone(), "{\"refresh\":true}".to_string()];
            }
        }
        let client = fixture(&format!("{session}.client.bin"));
        let want = fixture(&format!("{session}.server.bin"));
        let mut conn = std::net::TcpStream::connect(fake.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(&client).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while got.len() < want.len() {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "{session}");
    }
}

#[test]
fn subscribes_drains_the_queue_and_maps_every_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start(KEY);
    let events = sample_events();
    // Two events were queued before any subscriber came.
    fake.state.lock().unwrap().queue.extend([events[0].clone(), events[1].clone()]);
    let server = collector(tmp.path(), &fake, "");
    wait_for("a subscription", Duration::from_secs(20), || fake.subscribers() == 1);
    for e in &events[2..] {
        fake.publish(e);
    }
    fake.publish("{\"refresh\":true}");
    wait_for("every event", Duration::from_secs(20), || calls(&server) == events.len() as u64);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(calls(&server), events.len() as u64, "control messages are not events");
    assert!(fake.state.lock().unwrap().queue.is_empty(), "the queue was drained");

    // Every sample maps to exactly the buckets of its token_breakdown.
    let rows: Vec<Value> = server
        .raw("/api/console/export?format=ndjson")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    for line in &events {
        let e: Value = serde_json::from_str(line).unwrap();
        let row = rows
            .iter()
            .find(|r| r["request_id"].as_str().unwrap_or("") == e["request_id"].as_str().unwrap() && r["model"] == e["model"] && r["duration"] == e["latency_ms"])
            .unwrap_or_else(|| panic!("no row for {line}"));
        let b = &e["token_breakdown"];
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        assert_eq!(n(&row["input_uncached"]), n(&b["input"]["uncached_tokens"]));
        assert_eq!(n(&row["cache_read"]), n(&b["input"]["cache_read_tokens"]));
        assert_eq!(n(&row["cache_write"]), n(&b["input"]["cache_write_tokens"]));
        assert_eq!(n(&row["output"]), n(&b["output"]["non_reasoning_tokens"]));
        assert_eq!(n(&row["reasoning"]), n(&b["output"]["reasoning_tokens"]));
        assert_eq!(n(&row["unclassified"]), n(&b["unclassified_tokens"]));
        // The invariants of accounting v2 hold for what was stored.
        assert_eq!(n(&row["input_uncached"]) + n(&row["cache_read"]) + n(&row["cache_write"]), n(&b["input"]["total_tokens"]));
        assert_eq!(n(&row["output"]) + n(&row["reasoning"]), n(&b["output"]["total_tokens"]));
        assert_eq!(n(&row["tokens"]), n(&b["total_tokens"]));
        let quality = b["quality"].as_str().unwrap();
        assert_eq!(row["quality"], if ["complete", "inconsistent"].contains(&quality) { quality } else { "unclassified" });
        assert_eq!(row["success"], !e["failed"].as_bool().unwrap());
        assert_eq!(row["model_alias"], e["alias"]);
        match e["auth_index"].as_str().filter(|a| !a.is_empty()) {
            Some(a) => assert_eq!(row["credential"], a),
            // No credential index: a fingerprint of the upstream account stands in.
            None => assert!(row["credential"].as_str().unwrap().contains('#') || e["source"] == ""),
        }
        assert_eq!(row["instance"], "cpa-test");
        let text = row.to_string();
        for secret in ["api_key", "source", "access_token_sha256"] {
            if let Some(s) = e[secret].as_str().filter(|s| s.len() >= 8) {
                assert!(!text.contains(s), "{secret} is stored in clear");
            }
        }
    }
    let sources = server.data("/api/console/sources");
    let s = &sources[0];
    assert_eq!((s["name"].as_str(), s["subscribed"].as_bool(), s["events"].as_u64()), (Some("cpa-test"), Some(true), Some(events.len() as u64)));
    let metrics = String::from_utf8(server.raw("/metrics")).unwrap();
    assert!(metrics.contains("tokenboard_source_subscribed{source=\"cpa-test\"} 1"), "{metrics}");
    assert!(!server.logs().contains(KEY), "the management key is never logged");
}

#[test]
fn a_dropped_subscriber_reconnects_and_drains_what_was_queued_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start(KEY);
    let events = sample_events();
    let server = collector(tmp.path(), &fake, "");
    wait_for("a subscription", Duration::from_secs(20), || fake.subscribers() == 1);
    for i in 0..300 {
        fake.publish(&variant(&events[i % events.len()], i));
    }
    fake.drop_subscribers();
    // With no subscriber, CPA queues; the collector drains after it resubscribes.
    for i in 300..700 {
        fake.publish(&variant(&events[i % events.len()], i));
    }
    wait_for("resubscription", Duration::from_secs(20), || fake.state.lock().unwrap().subscriptions >= 2 && fake.subscribers() == 1);
    for i in 700..1000 {
        fake.publish(&variant(&events[i % events.len()], i));
    }
    wait_for("all 1000 events", Duration::from_secs(30), || calls(&server) == 1000);
    let s = &server.data("/api/console/sources")[0];
    assert!(s["reconnects"].as_u64().unwrap() >= 1);
}

#[test]
fn a_wrong_key_backs_off_instead_of_getting_banned() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start("the-real-key");
    let server = collector(tmp.path(), &fake, "");
    wait_for("a refused login", Duration::from_secs(20), || !fake.state.lock().unwrap().failed_auths.is_empty());
    std::thread::sleep(Duration::from_secs(4));
    let failed = fake.state.lock().unwrap().failed_auths.len();
    assert!(failed <= 2, "{failed} refused logins within seconds: the collector must back off");
    let s = &server.data("/api/console/sources")[0];
    assert!(s["auth_failures"].as_u64().unwrap() >= 1);
    assert!(s["state"].as_str().unwrap().contains("refused"), "{s}");
    assert!(!server.logs().contains(KEY));
}

#[test]
fn http_poll_mode_collects_and_skips_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start(KEY);
    let events = sample_events();
    let server = collector(tmp.path(), &fake, "      mode: poll\n      poll_transport: http\n      poll_interval_ms: 100\n      batch: 7\n");
    for i in 0..50 {
        fake.publish(&variant(&events[i % events.len()], i));
    }
    wait_for("50 events over HTTP", Duration::from_secs(20), || calls(&server) == 50);
    // And RESP polling.
    let tmp2 = tempfile::tempdir().unwrap();
    let fake2 = Fake::start(KEY);
    let server2 = collector(tmp2.path(), &fake2, "      mode: poll\n      poll_interval_ms: 100\n");
    for i in 0..50 {
        fake2.publish(&variant(&events[i % events.len()], i));
    }
    wait_for("50 events over RESP polling", Duration::from_secs(20), || calls(&server2) == 50);
    assert_eq!(fake2.subscribers(), 0, "poll mode never subscribes");
}

#[test]
fn a_killed_collector_restarts_without_double_counting() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start(KEY);
    let events = sample_events();
    let mut server = collector(tmp.path(), &fake, "");
    wait_for("a subscription", Duration::from_secs(20), || fake.subscribers() == 1);
    let sent: Vec<String> = (0..2000).map(|i| variant(&events[i % events.len()], i)).collect();
    for e in &sent[..1000] {
        fake.publish(e);
    }
    wait_for("1000 events", Duration::from_secs(30), || calls(&server) == 1000);
    server.kill9();
    // Once CPA has seen the subscriber go (it reads EOF), what it publishes is queued.
    wait_for("the proxy to notice", Duration::from_secs(10), || fake.subscribers() == 0);
    for e in &sent[1000..] {
        fake.publish(e);
    }
    server.start_again();
    wait_for("all 2000 events after restart", Duration::from_secs(30), || calls(&server) == 2000);
    // The proxy sends some again (an operator re-imports, a fork replays): nothing counts twice.
    wait_for("a subscription", Duration::from_secs(20), || fake.subscribers() == 1);
    for e in &sent[..500] {
        fake.publish(e);
    }
    wait_for("the duplicates to be seen", Duration::from_secs(30), || server.data("/api/console/sources")[0]["duplicates"].as_u64() == Some(500));
    assert_eq!(calls(&server), 2000);
}

/// A TLS front for the fake proxy, as CPA with `tls.enable` would be: returns its port and the
/// path of the CA certificate to trust.
fn tls_front(fake: std::net::SocketAddr, dir: &std::path::Path) -> (u16, std::path::PathBuf) {
    use std::sync::Arc;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((conn, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(conn).await else { return };
                    // No ALPN was offered, as CPA needs for RESP over TLS.
                    assert!(tls.get_ref().1.alpn_protocol().is_none());
                    let Ok(mut plain) = tokio::net::TcpStream::connect(fake).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    (port, ca)
}

#[test]
fn collects_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start(KEY);
    let (port, ca) = tls_front(fake.addr, tmp.path());
    let events = sample_events();
    fake.state.lock().unwrap().queue.extend(events[..3].iter().cloned());
    let yaml = format!(
        "sources:\n  cliproxyapi:\n    - name: cpa-tls\n      address: localhost:{port}\n      management_key_env: TB_TEST_CPA_KEY\n      tls: true\n      tls_ca_file: {}\n",
        ca.display()
    );
    let server = Server::start(tmp.path(), &[("TB_TEST_CPA_KEY", KEY), ("TOKENBOARD_LOG_RETENTION_DAYS", "0")], Some(&yaml));
    wait_for("a subscription over TLS", Duration::from_secs(20), || fake.subscribers() == 1);
    for e in &events[3..] {
        fake.publish(e);
    }
    wait_for("every event over TLS", Duration::from_secs(20), || calls(&server) == events.len() as u64);
    // A certificate that is not trusted is refused, and the state says why.
    let tmp2 = tempfile::tempdir().unwrap();
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(tmp2.path().join("other.pem"), other_ca.cert.pem()).unwrap();
    let yaml = format!(
        "sources:\n  cliproxyapi:\n    - name: cpa-untrusted\n      address: localhost:{port}\n      management_key_env: TB_TEST_CPA_KEY\n      tls: true\n      tls_ca_file: {}\n",
        tmp2.path().join("other.pem").display()
    );
    let untrusted = Server::start(tmp2.path(), &[("TB_TEST_CPA_KEY", KEY)], Some(&yaml));
    wait_for("a refused handshake", Duration::from_secs(20), || {
        untrusted.data("/api/console/sources")[0]["state"].as_str().is_some_and(|s| s.contains("TLS"))
    });
    assert_eq!(calls(&untrusted), 0);
}
