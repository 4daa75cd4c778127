//! The views and the live segment's bitmaps, folded on a thread of their own. A large append
//! hands its stored events to that thread and returns, so the caller's next batch is interned,
//! encoded and written while this one is added to the views and the bitmaps; the two cores share
//! the work. Small appends (a single event, say) are folded by the appender itself, since waking
//! a thread would cost more than the fold.
//!
//! Order is kept: batches are folded in sequence order, an inline fold first waits for the queue
//! to drain, and subscribers get each batch from whoever folded it, right after the fold.
//!
//! Readers never see views or bitmaps behind the log: every read first waits until they hold
//! every event written before it took the state lock (`Fold::read_through`). Other writers
//! (retention, a segment roll, saving the state at close) wait the same way. While a reader
//! reads, the fold thread is idle: it only folds what appenders handed over, a reader waited for
//! all of that, and no append can hand over more while the reader holds the state lock.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::event::StoredEvent;
use crate::index::SegmentIndex;
use crate::segment::Segment;
use crate::views::{Sign, Views};

/// Batches at least this large are folded on the fold thread; smaller ones inline.
const ASYNC_MIN_EVENTS: usize = 128;

/// Batches, and events, handed to the fold thread and not yet folded before an appender waits:
/// bounds the memory in flight (about 5 MB of events) and how far the views can fall behind (a
/// reader waits for them). Deep enough to ride out a burst of the fold (the hour it freezes when
/// an event starts the next one, a bitmap container it compacts) or a stretch of the kernel's
/// write-back on its core: at 2 batches of 1000 the appender waited a quarter of its time and
/// batch append ran at 3.6–3.8 M events/s; at 32, 4.3–4.5 M/s (`examples/append_cpu`).
const QUEUE_BATCHES: usize = 32;
const QUEUE_EVENTS: usize = 32 * 1024;

/// How long the fold thread stays awake for the next batch before it sleeps: an appender that
/// feeds a running thread does not pay for waking it (a futex wake cost about 15 µs per batch on
/// this machine's 2 virtual cores, 4 % of a 1000-event append). While it waits the thread yields
/// its core to any other runnable thread.
const STAY_AWAKE: Duration = Duration::from_micros(500);

fn next_batch<T>(rx: &Receiver<T>) -> Option<T> {
    let since = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(batch) => return Some(batch),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if since.elapsed() < STAY_AWAKE => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// What the fold keeps up to date.
pub(crate) struct Folded {
    pub(crate) views: Views,
    /// A read-only copy of the live segment that holds its bitmaps (a sealed segment keeps its
    /// own). After an open from the saved state they are still in that file: they are loaded
    /// when a log query, the first fold or a roll needs them (or rebuilt from this copy's events
    /// if they do not load), so the open and the first totals do not wait for them. (The copy's
    /// block index and dictionary, a duplicate until the next roll, are not in the heap figures.)
    live: Segment,
}

impl Folded {
    /// The copy of the live segment that holds its bitmaps (`index`, `saved_index`, …).
    pub(crate) fn live(&self) -> &Segment {
        &self.live
    }

    /// Starts the bitmaps of a new live segment (`next`, a copy from `Segment::detach_index`)
    /// and returns those of the one before.
    pub(crate) fn start_segment(&mut self, next: Segment) -> SegmentIndex {
        std::mem::replace(&mut self.live, next).take_index()
    }
}

pub(crate) struct Fold {
    folded: RwLock<Folded>,
    /// One more than the sequence number of the last event folded in (so 0 can mean "nothing").
    applied: AtomicU64,
    progress: Mutex<()>,
    progressed: Condvar,
    /// Threads in `wait_for`: the fold thread wakes them only if there are any (a futex wake per
    /// batch otherwise).
    waiters: AtomicUsize,
    /// Set if folding a batch panicked: the views are then unusable, and waiting for them panics
    /// instead of hanging.
    failed: AtomicBool,
    subscribers: Mutex<Vec<SyncSender<Arc<[StoredEvent]>>>>,
}

/// The appenders' end: held inside the engine's state, so it is used under the write lock.
pub(crate) struct FoldQueue {
    tx: SyncSender<(Vec<StoredEvent>, u64)>,
    /// The last sequence number handed to the views, inline or queued.
    pub(crate) through: u64,
    /// The batches handed to the fold thread that may not be folded yet: last sequence number
    /// and events, oldest first; and their events in all.
    in_flight: std::collections::VecDeque<(u64, usize)>,
    in_flight_events: usize,
}

impl Fold {
    /// Starts the fold thread over `views`, which hold every event through `last_seq`, and the
    /// bitmaps of the live segment, held by `live` (see `Segment::detach_index`).
    pub(crate) fn start(views: Views, live: Segment, last_seq: u64) -> std::io::Result<(Arc<Fold>, FoldQueue)> {
        let fold = Arc::new(Fold {
            folded: RwLock::new(Folded { views, live }),
            applied: AtomicU64::new(last_seq + 1),
            progress: Mutex::new(()),
            progressed: Condvar::new(),
            waiters: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let worker = fold.clone();
        std::thread::Builder::new().name("tokenboard-fold".into()).spawn(move || worker.run(rx))?;
        Ok((fold, FoldQueue { tx, through: last_seq, in_flight: Default::default(), in_flight_events: 0 }))
    }

    /// The fold thread: ends when the queue's sender (the engine's state) is dropped.
    fn run(&self, rx: Receiver<(Vec<StoredEvent>, u64)>) {
        while let Some((batch, last_seq)) = next_batch(&rx) {
            if self.fold(batch, last_seq).is_err() {
                return;
            }
        }
    }

    /// Folds and publishes a batch, then records that everything through `last_seq` is folded.
    /// If that panics the views are unusable: they are marked failed (every wait panics from
    /// then on) and the panic is returned.
    fn fold(&self, batch: Vec<StoredEvent>, last_seq: u64) -> std::thread::Result<()> {
        let folded = std::panic::catch_unwind(AssertUnwindSafe(|| self.fold_and_publish(batch)));
        match folded {
            Ok(()) => self.advance(last_seq),
            Err(_) => self.fail(),
        }
        folded
    }

    /// Records that everything through `seq` is folded, and wakes whoever waits for it.
    fn advance(&self, seq: u64) {
        self.applied.store(seq + 1, Ordering::SeqCst);
        // SeqCst here and in `wait_for`: either this sees the waiter, or the waiter sees `applied`.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            self.progressed.notify_all();
        }
    }

    /// A fold panicked: the views are unusable, and every wait panics from now on.
    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        let _g = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        self.progressed.notify_all();
    }

    fn fold_and_publish(&self, batch: Vec<StoredEvent>) {
        {
            let mut f = self.folded.write().unwrap_or_else(|e| e.into_inner());
            let Folded { views, live } = &mut *f;
            let base_seq = live.base_seq();
            let live_index = live.index_mut();
            for ev in &batch {
                views.apply(ev, Sign::Add);
                live_index.add((ev.seq - base_seq) as u32, ev);
            }
        }
        self.publish(batch);
    }

    /// Folds `batch` (the events after `queue.through`, through `last_seq`), on the fold thread if
    /// it is large, else here. The caller holds the engine's write lock.
    pub(crate) fn submit(&self, queue: &mut FoldQueue, batch: Vec<StoredEvent>, last_seq: u64) {
        if batch.len() >= ASYNC_MIN_EVENTS {
            // Forget the batches folded already; then wait for the oldest while this one would
            // take the events in flight past the bound (a batch larger than it goes alone).
            let applied = self.applied.load(Ordering::Acquire);
            while let Some(&(last, n)) = queue.in_flight.front() {
                if last >= applied && queue.in_flight_events + batch.len() <= QUEUE_EVENTS {
                    break;
                }
                self.wait_for(last);
                queue.in_flight.pop_front();
                queue.in_flight_events -= n;
            }
            let n = batch.len();
            if queue.tx.send((batch, last_seq)).is_err() {
                self.wait_for(u64::MAX); // the thread is gone: only after a panic, which this reports
            }
            queue.in_flight.push_back((last_seq, n));
            queue.in_flight_events += n;
        } else {
            self.wait_for(queue.through);
            queue.in_flight.clear();
            queue.in_flight_events = 0;
            if let Err(panic) = self.fold(batch, last_seq) {
                std::panic::resume_unwind(panic);
            }
        }
        queue.through = last_seq;
    }

    /// Blocks until every event through `seq` is in the views.
    pub(crate) fn wait_for(&self, seq: u64) {
        let seq = seq.saturating_add(1);
        if self.applied.load(Ordering::Acquire) >= seq {
            return;
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        while self.applied.load(Ordering::SeqCst) < seq {
            if self.failed.load(Ordering::Acquire) {
                drop(g);
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                panic!("folding events into the views panicked on the fold thread");
            }
            g = self.progressed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        drop(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// The views and live bitmaps, holding every event handed over through `queue.through`.
    pub(crate) fn read_through(&self, queue: &FoldQueue) -> RwLockReadGuard<'_, Folded> {
        self.wait_for(queue.through);
        self.folded.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The same for a change other than an append; the caller holds the engine's write lock.
    pub(crate) fn write_through(&self, queue: &FoldQueue) -> RwLockWriteGuard<'_, Folded> {
        self.wait_for(queue.through);
        self.folded.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Decodes what the views keep undecoded in the saved state, a day at a time, each under the
    /// read lock for a moment (a fold waits at most that long); gives up once `stopped`.
    pub(crate) fn load_saved(&self, stopped: &dyn Fn() -> bool) {
        loop {
            for i in 0.. {
                if stopped() {
                    return;
                }
                let f = self.folded.read().unwrap_or_else(|e| e.into_inner());
                if !f.views.load_saved_day(i) {
                    break;
                }
            }
            // Retention may have shifted the days meanwhile.
            if !self.folded.read().unwrap_or_else(|e| e.into_inner()).views.holds_saved() {
                return;
            }
        }
    }

    fn publish(&self, stored: Vec<StoredEvent>) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if subs.is_empty() {
            return;
        }
        let batch: Arc<[StoredEvent]> = stored.into();
        subs.retain(|tx| match tx.try_send(batch.clone()) {
            Ok(()) => true,
            // A subscriber that falls this far behind is dropped; it sees the channel close and
            // must reload before subscribing again.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        });
    }

    pub(crate) fn subscribe(&self, queue_max: usize) -> Receiver<Arc<[StoredEvent]>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue_max);
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }
}
