//! `tokenboard serve`: open the data directory, make sure an admin token exists, serve until
//! SIGINT or SIGTERM, then stop accepting, finish requests in flight, fsync and mark clean.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokenboard_engine::Engine;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::http::{AppState, Shared, now_ms};
use crate::keys::{KeyStore, Scope};
use crate::secrets::Fingerprinter;
use crate::log;

/// Where the event log lives inside the data directory.
pub fn events_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("events")
}

/// The environment variable that supplies the first admin token instead of a generated one.
pub const ADMIN_TOKEN_ENV: &str = "TOKENBOARD_ADMIN_TOKEN";

fn bootstrap_admin(keys: &KeyStore, config: &Config) -> Result<(), String> {
    if keys.has_admin() {
        return Ok(());
    }
    let from_env = std::env::var(ADMIN_TOKEN_ENV).ok().filter(|t| !t.trim().is_empty());
    if let Some(t) = &from_env
        && (t.trim().len() < 16 || t.trim().len() > 512 || t.chars().any(char::is_whitespace))
    {
        return Err(format!("{ADMIN_TOKEN_ENV} must be 16 to 512 characters without spaces"));
    }
    let max = config.console.max_keys.max(keys.len() + 1);
    let (rec, secret) = keys
        .create("admin", "created at first start", Scope::Admin, max, now_ms(), from_env.clone())
        .map_err(|e| format!("cannot create the admin token: {e}"))?;
    if from_env.is_some() {
        log::info(&format!("admin token {} taken from {ADMIN_TOKEN_ENV}; only its hash is stored", rec.masked));
    } else {
        // Printed once, on stdout, not through the log.
        println!("Tokenboard created an admin token. It is shown only this once; store it now:\n\n    {secret}\n");
        log::info(&format!("created admin token {} (printed once on stdout)", rec.masked));
    }
    Ok(())
}

pub fn run(config: Config) -> Result<(), String> {
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("storage.data_dir {}: cannot create: {e}", data_dir.display()))?;
    let fp = Arc::new(Fingerprinter::load_or_create(&data_dir).map_err(|e| format!("storage.data_dir {}: fingerprint key: {e}", data_dir.display()))?);
    let (keys, problems) = KeyStore::open(&data_dir, fp.clone()).map_err(|e| format!("storage.data_dir {}: key log: {e}", data_dir.display()))?;
    for p in problems {
        log::warn(&p);
    }
    bootstrap_admin(&keys, &config)?;

    let mut opts = config.engine_options();
    opts.dir = events_dir(&data_dir);
    // The server runs retention itself, to count what it deletes.
    opts.retention_interval_ms = None;
    let started = Instant::now();
    let (engine, report) = Engine::open(opts).map_err(|e| format!("cannot open the event log: {e}"))?;
    log::info(&format!(
        "opened {} in {:.2}s: {} events in {} segments{}",
        events_dir(&data_dir).display(),
        started.elapsed().as_secs_f64(),
        report.events,
        report.segments,
        if report.restored {
            " (loaded the state saved at the last clean stop)"
        } else if report.clean_shutdown || report.segments == 0 {
            " (rebuilt from the log)"
        } else {
            " (rebuilt after an unclean stop)"
        }
    ));
    for issue in &report.issues {
        log::warn(&format!("recovery: {}: {:?}", issue.segment.display(), issue.kind));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("tokenboard").build().map_err(|e| format!("cannot start the runtime: {e}"))?;
    let live = crate::live::Hub::start(&engine);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool_threads = if config.storage.durability == "always" { cores.max(32) } else { cores };
    let state: Shared = Arc::new(AppState {
        ingest_pool: crate::pool::Pool::new("tokenboard-ingest", pool_threads, config.ingest.max_inflight),
        ingest_slots: Arc::new(Semaphore::new(config.ingest.max_inflight)),
        slice_slots: Arc::new(Semaphore::new(2)),
        config: config.clone(),
        engine: engine.clone(),
        keys,
        fp,
        metrics: Default::default(),
        live,
        sources: Default::default(),
        started: Instant::now(),
    });
    let result = runtime.block_on(serve(state.clone()));
    // Requests are finished or abandoned: flush, fsync and mark the log clean.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match engine.close() {
        Ok(()) => log::info("stopped; the event log is synced and marked clean"),
        Err(e) => log::error(&format!("closing the event log failed: {e}")),
    }
    result
}

async fn serve(st: Shared) -> Result<(), String> {
    let addr = format!("{}:{}", st.config.server.bind, st.config.console.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("console.port: cannot listen on {addr}: {e}"))?;
    log::info(&format!(
        "listening on http://{addr}{}",
        if st.config.console.enabled { format!(" (console at {})", st.config.console.path) } else { String::new() }
    ));
    let retention = tokio::spawn(retention_loop(st.clone()));
    let _ = st.sources.set(crate::collector::start(&st));
    let app = crate::http::router(st.clone());
    let timeout = Duration::from_secs(st.config.server.shutdown_timeout_secs);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        log::info("shutting down: no new connections; finishing requests in flight");
        let _ = stop_tx.send(());
    });
    let served = tokio::spawn(async move { server.await });
    let _ = stop_rx.await.ok();
    retention.abort();
    match tokio::time::timeout(timeout, served).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("server error: {e}")),
        Ok(Err(e)) => Err(format!("server task failed: {e}")),
        Err(_) => {
            log::warn(&format!("requests still running after {}s (server.shutdown_timeout_secs); closing anyway", timeout.as_secs()));
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Retention at start and then every `console.cleanup_interval` hours.
async fn retention_loop(st: Shared) {
    let every = Duration::from_secs(u64::from(st.config.console.cleanup_interval) * 3600);
    loop {
        let st2 = st.clone();
        let r = tokio::task::spawn_blocking(move || st2.engine.enforce_retention()).await;
        match r {
            Ok(Ok(rep)) if rep.segments_deleted > 0 => {
                st.metrics.retention_segments_deleted.fetch_add(rep.segments_deleted as u64, Ordering::Relaxed);
                st.metrics.retention_events_deleted.fetch_add(rep.events_deleted, Ordering::Relaxed);
                log::info(&format!("retention deleted {} segments ({} events, {} bytes)", rep.segments_deleted, rep.events_deleted, rep.bytes_deleted));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error(&format!("retention failed: {e}")),
            Err(e) => log::error(&format!("retention task failed: {e}")),
        }
        tokio::time::sleep(every).await;
    }
}
