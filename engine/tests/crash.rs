//! Kill -9 a writer process at random points, many times, and check that every batch it had
//! acknowledged (under `Durability::Always` and under the default `Interval`) is there after
//! reopen, and nothing is duplicated.
//!
//! The writer is this same test binary, re-executed with `TOKENBOARD_CRASH_CHILD` set: it then runs
//! only `crash_child_writer`, which appends forever and prints `ack <batch> <last_seq>` after each
//! acknowledged append.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokenboard_engine::{Durability, Engine, EngineOptions, Retention};

const CHILD_ENV: &str = "TOKENBOARD_CRASH_CHILD";

fn child_options(dir: &std::path::Path, round: u64) -> EngineOptions {
    let mut o = EngineOptions::new(dir);
    // Even rounds acknowledge after fdatasync; odd rounds use the default `interval` policy, which
    // acknowledges after the write: a killed process loses nothing either way (the page cache
    // survives it; only a power loss would not).
    o.durability = if round.is_multiple_of(2) { Durability::Always } else { Durability::Interval { every_ms: 200 } };
    o.segment_bytes_max = 256 * 1024; // rolls happen often, so kills land mid-roll too
    o.retention = Retention::none();
    o
}

/// The writer side: only does something inside a re-executed child.
#[test]
fn crash_child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (dir, round) = spec.split_once('|').unwrap();
    let round: u64 = round.parse().unwrap();
    let (engine, _) = Engine::open(child_options(std::path::Path::new(dir), round)).unwrap();
    let engine = Arc::new(engine);
    let mut rng = SmallRng::seed_from_u64(round);
    // Several threads, so group commit is exercised under the kill too.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            let mut rng = SmallRng::seed_from_u64(rng.random());
            std::thread::spawn(move || {
                let mut stdout = std::io::stdout();
                for b in 0u64.. {
                    let n = rng.random_range(1..40);
                    let batch_name = format!("r{round}-t{t}-b{b}");
                    let mut evs = events(rng.random(), n, T0, 1);
                    for (i, ev) in evs.iter_mut().enumerate() {
                        ev.event_id = Some(format!("{batch_name}-{i}of{n}"));
                    }
                    let out = engine.append(&evs).unwrap();
                    use std::io::Write;
                    let _ = writeln!(stdout, "ack {batch_name} {n} {}", out.last_seq);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut acked: HashMap<String, usize> = HashMap::new();
    let rounds = 24;
    let start = Instant::now();
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, format!("{}|{round}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it write for a random while, then kill it without warning.
        let wait = Duration::from_millis(rng.random_range(20..250));
        std::thread::sleep(wait);
        // Kill at a moment it is surely mid-write: after it has acknowledged something.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = Vec::new();
        while lines.is_empty() && Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
                lines.push(l);
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        assert!(!lines.is_empty(), "round {round}: the writer acknowledged nothing");
        for l in lines {
            let parts: Vec<&str> = l.split(' ').collect();
            if parts.len() == 4 && parts[0] == "ack" {
                acked.insert(parts[1].to_string(), parts[2].parse().unwrap());
            }
        }

        // Reopen as after a crash and check.
        let (engine, report) = Engine::open(child_options(dir.path(), round)).unwrap();
        assert_eq!(report.corruptions(), 0, "round {round}: {:?}", report.issues);
        let all = all_events(&engine);
        let mut ids = HashSet::new();
        let mut last_seq = 0;
        let mut per_batch: HashMap<String, (usize, usize)> = HashMap::new();
        for ev in &all {
            assert!(ev.seq > last_seq, "round {round}: sequence numbers must increase");
            last_seq = ev.seq;
            let id = ev.event_id.as_deref().unwrap().to_string();
            assert!(ids.insert(id.clone()), "round {round}: event {id} stored twice");
            let (batch, pos) = id.rsplit_once('-').unwrap();
            let n: usize = pos.split_once("of").unwrap().1.parse().unwrap();
            let e = per_batch.entry(batch.to_string()).or_insert((0, n));
            e.0 += 1;
        }
        for (batch, n) in &acked {
            assert_eq!(per_batch.get(batch).map(|p| p.0), Some(*n), "round {round}: acknowledged batch {batch} incomplete after kill -9");
        }
        // Batches are atomic: any batch present is complete, acknowledged or not.
        for (batch, (have, want)) in &per_batch {
            assert_eq!(have, want, "round {round}: batch {batch} is partly stored");
        }
        drop(engine);
    }
    eprintln!("{rounds} kills, {} acknowledged batches checked in {:?}", acked.len(), start.elapsed());
    assert!(acked.len() as u64 > rounds, "the test must exercise many batches");
}
