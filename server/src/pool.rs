//! The ingest worker pool: parsing and appending large batches happens on a few threads of lower
//! CPU priority (nice 10), so console reads on the async workers stay fast while ingest runs flat
//! out. Under `durability: always` the threads mostly wait on fsync, and more of them let group
//! commit gather more requests into one sync.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

pub struct Pool {
    tx: SyncSender<Job>,
}

/// Nice value of pool threads; reads run at the default 0.
const NICE: i32 = 10;

impl Pool {
    /// `queue` bounds waiting jobs (callers are bounded by the ingest semaphore anyway).
    pub fn new(name: &str, threads: usize, queue: usize) -> Pool {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    // SAFETY: setpriority on this thread's own id; failure only leaves it at nice 0.
                    unsafe {
                        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE);
                    }
                    loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        job();
                    }
                })
                .expect("spawn an ingest thread");
        }
        Pool { tx }
    }

    /// Runs `f` on the pool; `None` if the pool is gone or the job panicked.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            if let Ok(v) = r {
                let _ = done.send(v);
            }
        });
        let tx = self.tx.clone();
        // The queue is sized to the ingest semaphore, so this does not block in practice.
        tokio::task::block_in_place(move || tx.send(job)).ok()?;
        result.await.ok()
    }
}
