//! How many CLIProxyAPI events per second the collector stores from one subscription.
//! `cargo bench -p tokenboard-server --bench collector` (TB_BENCH_CPA_EVENTS, default 300 000).
//! It starts the fake proxy of the tests, a release `tokenboard` subscribed to it, publishes the
//! events as fast as the socket takes them, and times until the server has stored them all.

#[path = "../tests/fake_cpa/mod.rs"]
mod fake_cpa;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let n: usize = std::env::var("TB_BENCH_CPA_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let key = "bench-management-key";
    let fake = fake_cpa::Fake::start(key);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, format!("sources:\n  cliproxyapi:\n    - name: bench\n      address: {}\n      management_key: {key}\n", fake.address())).unwrap();
    let token = "tb_bench_collector_token_0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("TOKENBOARD_DATA_DIR", dir.path().join("data"))
        .env("CONSOLE_PORT", port.to_string())
        .env("TOKENBOARD_BIND", "127.0.0.1")
        .env("TOKENBOARD_ADMIN_TOKEN", token)
        .env("TOKENBOARD_LOG_RETENTION_DAYS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.subscribers() == 0 {
        assert!(Instant::now() < deadline, "the collector did not subscribe");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sample = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi/event-codex-stream-cached-reasoning.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&sample).unwrap();
    let template = v.to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let stored = || -> u64 {
        let r = agent.get(&format!("http://127.0.0.1:{port}/api/console/stats")).header("Authorization", format!("Bearer {token}")).call();
        r.ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["data"]["api_call_count"].as_u64())
            .unwrap_or(0)
    };
    let start = Instant::now();
    for i in 0..n {
        fake.publish(&template.replacen("\"3f9a1c7e\"", &format!("\"{i:08x}\""), 1));
    }
    let published = start.elapsed();
    while stored() < n as u64 {
        assert!(start.elapsed() < Duration::from_secs(600), "stored only {} of {n}", stored());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    println!(
        "collector: {n} events of {} bytes from one subscription stored in {:.2}s = {:.0} events/s (publishing alone took {:.2}s)",
        template.len(),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        published.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
}
