//! The views and the live segment's bitmaps, folded on a thread of their own. A large append
//! hands its stored events to that thread and returns, so the caller's next batch is interned,
//! encoded and written while this one is added to the views and the bitmaps; the two cores share
//! the work.
//!
//! Small appends (a single event, say) are too small to hand over one by one: waking the thread
//! would cost more than the fold. While the thread sleeps they are folded by the appender itself.
//! While it is awake (it stays awake a moment after each batch), or once small appends come
//! densely, their events are left pending (`Fold::pending`): they go to the thread as one batch
//! when enough have gathered, or when the next large batch is handed over; the thread folds what
//! is left when it runs out of work, and a reader folds it first if it comes sooner.
//!
//! Order is kept: batches are folded in sequence order. Whoever folds pending events (the
//! thread, a reader, an appender) first waits until everything handed over before them is
//! folded; subscribers get each batch from whoever folded it, right after the fold.
//!
//! Readers never see views or bitmaps behind the log: every read first makes sure they hold
//! every event written before it took the state lock (`Fold::read_through`). Other writers
//! (retention, a segment roll, saving the state at close) do the same. While a reader reads, the
//! fold thread is idle: it only folds what appenders handed over, a reader waited for all of
//! that, and no append can hand over more while the reader holds the state lock.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::event::StoredEvent;
use crate::index::SegmentIndex;
use crate::segment::Segment;
use crate::views::{Sign, Views};

/// Batches at least this large are folded on the fold thread; smaller ones gather in `pending`
/// (or are folded inline while the thread sleeps), and go to the thread once this many gathered.
pub(crate) const ASYNC_MIN_EVENTS: usize = 128;

/// Small appends of this many events within one reading of the engine's clock (a millisecond; a
/// tick of the default coarse clock, up to 4 ms) wake the sleeping fold thread, so that the
/// following ones are left pending for it; sparser ones fold inline (a wake costs more than many
/// inline folds).
const DENSE_EVENTS: usize = 64;

/// Batches, and events, handed to the fold thread and not yet folded before an appender waits
/// (the empty batches that only wake the thread take channel slots too, but are few):
/// bounds the memory in flight (about 5 MB of events) and how far the views can fall behind (a
/// reader waits for them). Deep enough to ride out a burst of the fold (the hour it freezes when
/// an event starts the next one, a bitmap container it compacts) or a stretch of the kernel's
/// write-back on its core: at 2 batches of 1000 the appender waited a quarter of its time and
/// batch append ran at 3.6–3.8 M events/s; at 32, 4.3–4.5 M/s (`examples/append_cpu`).
const QUEUE_BATCHES: usize = 32;
const QUEUE_EVENTS: usize = 32 * 1024;

/// The capacity, in events, of the emptied batch vectors kept for reuse: as many as can be in
/// flight (about 5 MB).
const SPARE_EVENTS: usize = QUEUE_EVENTS + 2 * 1024;

/// How long the fold thread stays awake for the next batch before it sleeps: an appender that
/// feeds a running thread does not pay for waking it (a futex wake cost about 15 µs per batch on
/// this machine's 2 virtual cores, 4 % of a 1000-event append). While it waits the thread yields
/// its core to any other runnable thread.
const STAY_AWAKE: Duration = Duration::from_micros(500);

/// A batch for the fold thread: its events and the last sequence number. An empty one only wakes
/// the thread for the events pending.
type Batch = (Vec<StoredEvent>, u64);

/// A lock held for a few instructions at a time (a push, a take), taken by a compare-and-swap
/// and released by a plain store: a `Mutex` releases with a second atomic swap (it must see
/// whether a thread sleeps on it), and each atomic instruction drains the store buffer; the
/// pending lock is taken on every one-event append. A thread that finds it held spins, then
/// yields. It does not poison: what it guards is a vector and a number, whole after a panic.
struct SpinLock<T> {
    held: AtomicBool,
    value: std::cell::UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and one guard exists at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}

struct SpinGuard<'a, T>(&'a SpinLock<T>);

impl<T> SpinLock<T> {
    fn new(value: T) -> SpinLock<T> {
        SpinLock { held: AtomicBool::new(false), value: std::cell::UnsafeCell::new(value) }
    }

    #[inline]
    fn lock(&self) -> SpinGuard<'_, T> {
        // SeqCst: `submit` and `next_batch` rely on the swap being a full fence (see there).
        let mut spins = 0u32;
        while self.held.compare_exchange_weak(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        SpinGuard(self)
    }
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock.
        unsafe { &*self.0.value.get() }
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard holds the lock, and is borrowed mutably.
        unsafe { &mut *self.0.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.0.held.store(false, Ordering::Release);
    }
}

/// Events of small appends not yet handed to the views (see the module's notes).
#[derive(Default)]
struct Pending {
    events: Vec<StoredEvent>,
    /// The last sequence number handed over before the first of them: they fold after it.
    after: u64,
}

impl Pending {
    fn last_seq(&self) -> u64 {
        self.events.last().expect("pending events").seq
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
    /// Small appends' events, in sequence order, after every batch handed over before them.
    pending: SpinLock<Pending>,
    /// Set while the fold thread sleeps for the next batch (and a moment before, while it checks
    /// for events pending).
    asleep: AtomicBool,
    /// Emptied batch vectors, for the next batches (see `recycle`).
    spare: Mutex<Vec<Vec<StoredEvent>>>,
}

/// The appenders' end: held inside the engine's state, so it is used under the write lock.
pub(crate) struct FoldQueue {
    tx: SyncSender<Batch>,
    /// The last sequence number handed to the views: folded inline, queued or pending.
    pub(crate) through: u64,
    /// The batches handed to the fold thread that may not be folded yet: last sequence number
    /// and events, oldest first; and their events in all.
    in_flight: std::collections::VecDeque<(u64, usize)>,
    in_flight_events: usize,
    /// Small appends' events counted (inline, or the one that tipped them into pending) in the
    /// engine clock's reading `dense_ms`, while the thread slept.
    dense_ms: i64,
    dense_events: usize,
}

impl FoldQueue {
    /// Whether small appends come densely: `n` more events at the clock's reading `now_ms`.
    fn dense(&mut self, n: usize, now_ms: i64) -> bool {
        if self.dense_ms != now_ms {
            self.dense_ms = now_ms;
            self.dense_events = 0;
        }
        self.dense_events += n;
        if self.dense_events < DENSE_EVENTS {
            return false;
        }
        self.dense_events = 0;
        true
    }
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
            pending: SpinLock::new(Pending::default()),
            asleep: AtomicBool::new(false),
            spare: Mutex::new(Vec::new()),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let worker = fold.clone();
        std::thread::Builder::new().name("tokenboard-fold".into()).spawn(move || worker.run(rx))?;
        let queue = FoldQueue { tx, through: last_seq, in_flight: Default::default(), in_flight_events: 0, dense_ms: i64::MIN, dense_events: 0 };
        Ok((fold, queue))
    }

    /// The fold thread: ends when the queue's sender (the engine's state) is dropped, folding
    /// what is still pending first, so that subscribers get every event; or once a fold failed.
    fn run(&self, rx: Receiver<Batch>) {
        while let Some((batch, last_seq)) = self.next_batch(&rx) {
            if !batch.is_empty() && self.fold(batch, last_seq).is_err() {
                return;
            }
        }
        if !self.failed.load(Ordering::Acquire) {
            let _ = self.fold_pending_on_thread(&rx);
        }
    }

    /// The next batch for the fold thread. It stays awake for `STAY_AWAKE` after the last one;
    /// then it folds the events pending and sleeps until the next batch. `None` once the
    /// queue's sender is gone or a fold panicked.
    fn next_batch(&self, rx: &Receiver<Batch>) -> Option<Batch> {
        let mut since = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(batch) => return Some(batch),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) if since.elapsed() < STAY_AWAKE => std::thread::yield_now(),
                Err(TryRecvError::Empty) => {
                    if !self.fold_pending_on_thread(rx) {
                        return None;
                    }
                    // SeqCst with `submit`: either an appender that leaves events pending sees
                    // this flag and wakes the thread, or the thread sees its events here. (The
                    // pending lock's release is a plain store, but its taking is a SeqCst swap:
                    // if the thread took it first, the appender's later swap, and so its load of
                    // the flag, come after this store; if the appender did, the thread sees its
                    // events.)
                    self.asleep.store(true, Ordering::SeqCst);
                    if !self.pending.lock().events.is_empty() {
                        self.asleep.store(false, Ordering::SeqCst);
                        since = Instant::now();
                        continue;
                    }
                    let batch = rx.recv().ok();
                    self.asleep.store(false, Ordering::SeqCst);
                    return batch;
                }
            }
        }
    }

    /// Takes the events pending, if any.
    fn take_pending(&self) -> Option<Pending> {
        let mut p = self.pending.lock();
        (!p.events.is_empty()).then(|| std::mem::take(&mut *p))
    }

    /// On the fold thread: folds the events pending, after the batches handed over before them
    /// (an appender may have queued one after the thread last looked). False if a fold panicked.
    fn fold_pending_on_thread(&self, rx: &Receiver<Batch>) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        let Some(p) = self.take_pending() else { return true };
        while self.applied.load(Ordering::Acquire) <= p.after {
            match rx.recv() {
                Ok((batch, last_seq)) if !batch.is_empty() => {
                    if self.fold(batch, last_seq).is_err() {
                        return false;
                    }
                }
                Ok(_) => {}
                // Only after a failed fold (the batches before the pending events were sent
                // before them, and a closed channel still hands over what it holds).
                Err(_) => return false,
            }
        }
        let last_seq = p.last_seq();
        self.fold(p.events, last_seq).is_ok()
    }

    /// Off the fold thread (a reader, a writer): folds the events pending here, after everything
    /// handed over before them.
    fn fold_pending_here(&self) {
        if let Some(p) = self.take_pending() {
            self.wait_for(p.after);
            let last_seq = p.last_seq();
            self.fold_here(p.events, last_seq);
        }
    }

    /// `fold` off the fold thread, where a panic in it goes on to the caller.
    fn fold_here(&self, batch: Vec<StoredEvent>, last_seq: u64) {
        if let Err(panic) = self.fold(batch, last_seq) {
            std::panic::resume_unwind(panic);
        }
    }

    /// Folds and publishes a batch, then records that everything through `last_seq` is folded.
    /// If that panics the views are unusable: they are marked failed (every wait panics from
    /// then on, and nothing more is folded) and the panic is returned.
    fn fold(&self, batch: Vec<StoredEvent>, last_seq: u64) -> std::thread::Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Box::new("an earlier fold into the views panicked"));
        }
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

    /// Hands `batch` (the events after `queue.through`, through `last_seq`) to the views: to the
    /// fold thread if it is large; else pending, or folded here while the thread sleeps (see the
    /// module's notes). `batch` is left empty: its events are moved out (a large batch's vector
    /// with them, and a small one's when they are folded here; else it is kept for reuse).
    /// `now_ms` is the engine's clock. The caller holds the engine's write lock.
    pub(crate) fn submit(&self, queue: &mut FoldQueue, batch: &mut Vec<StoredEvent>, last_seq: u64, now_ms: i64) {
        if batch.len() >= ASYNC_MIN_EVENTS {
            if let Some(p) = self.take_pending() {
                let last = p.last_seq();
                self.send(queue, p.events, last);
            }
            self.send(queue, std::mem::take(batch), last_seq);
        } else if self.asleep.load(Ordering::SeqCst) && !queue.dense(batch.len(), now_ms) {
            // The thread sleeps: fold here, after whatever is pending or still queued.
            self.fold_pending_here();
            self.wait_for(queue.through);
            queue.in_flight.clear();
            queue.in_flight_events = 0;
            self.fold_here(std::mem::take(batch), last_seq);
        } else {
            let full = {
                let mut p = self.pending.lock();
                if p.events.is_empty() {
                    p.after = queue.through;
                    if p.events.capacity() == 0 {
                        // Room for all that gather before they go (not a few reallocations).
                        p.events = self.batch_vec(ASYNC_MIN_EVENTS);
                    }
                }
                p.events.append(batch);
                crate::cpu::prefetch_for_write(p.events.spare_capacity_mut().first());
                (p.events.len() >= ASYNC_MIN_EVENTS).then(|| std::mem::take(&mut *p))
            };
            if let Some(p) = full {
                self.send(queue, p.events, last_seq);
            } else if self.asleep.load(Ordering::SeqCst) {
                // Wake the thread: it folds these once it runs out of batches. If the queue is
                // full it is awake anyway.
                let _ = queue.tx.try_send((Vec::new(), 0));
            }
        }
        queue.through = last_seq;
    }

    /// Queues a batch for the fold thread, first waiting for the oldest queued ones while it
    /// would take the events in flight past the bound (a batch larger than it goes alone).
    fn send(&self, queue: &mut FoldQueue, batch: Vec<StoredEvent>, last_seq: u64) {
        // Forget the batches folded already.
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
    }

    /// Blocks until every event through `seq` is in the views.
    pub(crate) fn wait_for(&self, seq: u64) {
        let seq = seq.saturating_add(1);
        if self.applied.load(Ordering::Acquire) >= seq && !self.failed.load(Ordering::Acquire) {
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

    /// Makes sure every event handed over through `queue.through` is folded: the events pending
    /// are folded here if the thread has not taken them. The caller holds the engine's state
    /// lock, so no append adds to them meanwhile.
    fn fold_through(&self, queue: &FoldQueue) {
        if self.applied.load(Ordering::Acquire) <= queue.through || self.failed.load(Ordering::Acquire) {
            self.fold_pending_here();
            self.wait_for(queue.through);
        }
    }

    /// The views and live bitmaps, holding every event handed over through `queue.through`.
    pub(crate) fn read_through(&self, queue: &FoldQueue) -> RwLockReadGuard<'_, Folded> {
        self.fold_through(queue);
        self.folded.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The same for a change other than an append; the caller holds the engine's write lock.
    pub(crate) fn write_through(&self, queue: &FoldQueue) -> RwLockWriteGuard<'_, Folded> {
        self.fold_through(queue);
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

    /// Hands a folded batch to the subscribers; with none, keeps its vector for a later batch.
    fn publish(&self, stored: Vec<StoredEvent>) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if subs.is_empty() {
            drop(subs);
            self.recycle(stored);
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

    /// Keeps an emptied batch vector for `batch_vec`, up to `SPARE_EVENTS` events of capacity
    /// in all. An appender then writes into memory that is already mapped: a fresh vector for
    /// each 1000-event batch cost the appender page faults, about 5 % of its time.
    fn recycle(&self, mut stored: Vec<StoredEvent>) {
        if stored.capacity() < ASYNC_MIN_EVENTS {
            return; // a small batch's: appends reuse their own (`State::stored_scratch`)
        }
        stored.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = spare.iter().map(Vec::capacity).sum();
        if held + stored.capacity() <= SPARE_EVENTS {
            spare.push(stored);
        }
    }

    /// An empty vector for a batch of `n` events, one used before if there is one.
    pub(crate) fn batch_vec(&self, n: usize) -> Vec<StoredEvent> {
        let mut v = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        v.reserve(n);
        v
    }

    pub(crate) fn subscribe(&self, queue_max: usize) -> Receiver<Arc<[StoredEvent]>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue_max);
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spin_lock_lets_one_thread_in_at_a_time() {
        // Unsynchronised read-modify-writes of a pair under the lock: a second thread inside
        // would lose increments or see the pair differ.
        let lock = Arc::new(SpinLock::new((0u64, 0u64)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        let mut g = lock.lock();
                        let pair = &mut *g;
                        let (a, b) = *pair;
                        assert_eq!(a, b, "another thread was inside");
                        pair.0 = a + 1;
                        std::hint::black_box(&mut *pair);
                        pair.1 = b + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), (200_000, 200_000));
    }
}
