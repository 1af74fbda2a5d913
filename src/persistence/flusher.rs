//! Group commit: one flusher thread per database coalesces every waiting
//! writer into a single `db.flush()`.
//!
//! Protocol: a writer inserts, then takes a [`Ticket`] (`written += 1`), then
//! awaits [`Flusher::durable`]. The flusher thread drains every queued waiter,
//! snapshots `written`, flushes, and marks that snapshot durable: every ticket
//! taken before the snapshot belongs to an insert that happened before the
//! flush started, so it is covered. Readers call [`Flusher::read_barrier`] so
//! that what they saw is durable before they answer.
//!
//! Never calls `flush_async` (it deadlocks with concurrent callers in 0.34.7).
//!
//! Flushers can take turns ([`FlushTurns`], `storage.flush_in_turn`, on by
//! default): the four databases share one, so one of them makes a group-commit
//! flush at a time and each waits for the one before it to end (the final
//! flush at shutdown takes no turn). A flush costs about the
//! same however many writes it covers (sled hands one log write to its I/O
//! pool, whose `notify_all` wakes all seven of its threads, then
//! `sync_file_range`s), so while one database flushes the others gather their
//! writers into bigger groups: at 64 sagas in flight, 0.83 flushes per saga
//! instead of 2.9 and about a third less server CPU per saga (BENCHMARKS.md).
//! The view waits in the background lane: it is on no saga's path, so order,
//! saga and customer flushes that are waiting go first, at most
//! [`MAX_PASSED`] of them in a row.
//!
//! A failed flush is final: sled's I/O errors are sticky (every later
//! operation on that database fails), and after a failed fsync the kernel may
//! have dropped dirty pages, so retrying could acknowledge lost writes. The
//! flusher answers that flush's waiters and every later one with the error,
//! never marks anything durable again, and reports the failure through
//! [`Flusher::failed`] so the process can stop (`durasaga serve` exits 75).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// How hard a commit works to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `db.flush()` (sled writes and `sync_file_range`s): survives `kill -9`.
    #[default]
    Flush,
    /// `db.flush()` then `fsync` of the database files: also survives power
    /// loss. An fsync error stops the process.
    Fsync,
    /// No flush at all. Benchmark baseline only: loses recent writes on a crash.
    None,
}

/// A position in the database's write order; durable once flushed past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Why a flush failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("flush failed: {0}")]
pub struct FlushError(pub String);

/// Turns to flush, shared by several flushers: one flush at a time, in
/// arrival order within a lane. A [`Lane::Background`] flusher (the view, off
/// the path of a saga) lets waiting [`Lane::Saga`] flushers go first, but
/// never more than [`MAX_PASSED`] of them in a row. Cheap to clone.
#[derive(Clone, Default)]
pub struct FlushTurns {
    inner: Arc<TurnState>,
}

/// Which lane of [`FlushTurns`] a flusher waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A database on the path of a saga: order, saga, customer.
    Saga,
    /// A database nobody waits on for a saga step: the view.
    Background,
}

/// How many saga-lane flushes may overtake a waiting background flush.
pub const MAX_PASSED: u32 = 3;

/// The queue of [`FlushTurns`] and the condition its waiters sleep on.
#[derive(Default)]
struct TurnState {
    queue: Mutex<TurnQueue>,
    turn_changed: Condvar,
}

/// Who holds the turn and who waits for it.
#[derive(Default)]
struct TurnQueue {
    /// Whether a flush holds the turn.
    busy: bool,
    /// The ticket of the next caller.
    next_id: u64,
    /// Tickets waiting in the saga lane, in arrival order.
    saga: std::collections::VecDeque<u64>,
    /// Tickets waiting in the background lane, in arrival order.
    background: std::collections::VecDeque<u64>,
    /// Saga-lane turns granted while a background flush waited.
    passed: u32,
}

impl TurnQueue {
    /// The waiter whose turn is next, if the turn is free.
    fn next(&self) -> Option<u64> {
        if self.busy {
            return None;
        }
        match (self.saga.front(), self.background.front()) {
            (Some(_), Some(&b)) if self.passed >= MAX_PASSED => Some(b),
            (Some(&s), _) => Some(s),
            (None, b) => b.copied(),
        }
    }
}

/// The current turn; the next in line gets it when this is dropped.
pub struct Turn<'a> {
    state: &'a TurnState,
}

impl FlushTurns {
    /// Waits for this caller's turn in `lane`.
    pub fn take(&self, lane: Lane) -> Turn<'_> {
        let state = &*self.inner;
        let mut q = state.queue.lock().unwrap_or_else(|e| e.into_inner());
        let me = q.next_id;
        q.next_id += 1;
        match lane {
            Lane::Saga => q.saga.push_back(me),
            Lane::Background => q.background.push_back(me),
        }
        while q.next() != Some(me) {
            q = state
                .turn_changed
                .wait(q)
                .unwrap_or_else(|e| e.into_inner());
        }
        q.busy = true;
        match lane {
            Lane::Saga => {
                q.saga.pop_front();
                if !q.background.is_empty() {
                    q.passed += 1;
                }
            }
            Lane::Background => {
                q.background.pop_front();
                q.passed = 0;
            }
        }
        Turn { state }
    }

    /// How many callers hold or wait for a turn.
    pub fn queued(&self) -> usize {
        let q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.saga.len() + q.background.len() + usize::from(q.busy)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut q = self.state.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.busy = false;
        drop(q);
        self.state.turn_changed.notify_all();
    }
}

struct Waiter {
    reply: oneshot::Sender<Result<(), FlushError>>,
}

/// Counters a metrics reader can sample.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Waits handed to the flusher thread (counted before it sees them).
    pub requests: AtomicU64,
    pub flushes: AtomicU64,
    pub waiters: AtomicU64,
    pub flush_micros: AtomicU64,
}

/// What the flusher thread shares with the writers. It holds no sender, so
/// the thread ends (after a final flush) once every [`Flusher`] is gone.
struct Counters {
    written: AtomicU64,
    durable: AtomicU64,
    inflight: AtomicU64,
    mode: Durability,
    stats: FlushStats,
    /// Set once, by the first failed flush.
    failure: tokio::sync::watch::Sender<Option<FlushError>>,
}

struct Handle {
    counters: Arc<Counters>,
    lane: Option<Lane>,
    tx: Mutex<Option<mpsc::Sender<Waiter>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Handle {
    /// The last clone is gone: let the thread make its final flush and wait
    /// for it, so the database is released when the store is dropped.
    fn drop(&mut self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The group-commit flusher of one sled database. Cheap to clone.
#[derive(Clone)]
pub struct Flusher {
    inner: Arc<Handle>,
}

/// Marks a write in progress so readers do not skip the barrier (see
/// [`Flusher::read_barrier`]).
pub struct WriteGuard<'a> {
    flusher: &'a Flusher,
}

impl WriteGuard<'_> {
    /// Ends the write and returns its ticket.
    pub fn finish(self) -> Ticket {
        let c = &self.flusher.inner.counters;
        let t = c.written.fetch_add(1, SeqCst) + 1;
        c.inflight.fetch_sub(1, SeqCst);
        std::mem::forget(self);
        Ticket(t)
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // The write failed; count it anyway so barriers stay conservative.
        let c = &self.flusher.inner.counters;
        c.written.fetch_add(1, SeqCst);
        c.inflight.fetch_sub(1, SeqCst);
    }
}

impl Flusher {
    /// Starts the flusher thread for `db`. `dir` is the database directory,
    /// used to fsync in `Durability::Fsync` mode. With `turns`, each flush
    /// waits for its turn among the flushers that share them.
    pub fn start(
        db: sled::Db,
        dir: PathBuf,
        mode: Durability,
        name: &str,
        turns: Option<(FlushTurns, Lane)>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let counters = Arc::new(Counters {
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            mode,
            stats: FlushStats::default(),
            failure: tokio::sync::watch::Sender::new(None),
        });
        let thread_counters = counters.clone();
        let lane = turns.as_ref().map(|(_, lane)| *lane);
        let thread = std::thread::Builder::new()
            .name(format!("flusher-{name}"))
            .spawn(move || run(db, dir, rx, thread_counters, turns))?;
        Ok(Self {
            inner: Arc::new(Handle {
                counters,
                lane,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Call before an insert; `finish()` the guard after it.
    pub fn begin_write(&self) -> WriteGuard<'_> {
        self.inner.counters.inflight.fetch_add(1, SeqCst);
        WriteGuard { flusher: self }
    }

    /// The lane this flusher waits in for its turn, if it takes turns.
    pub fn lane(&self) -> Option<Lane> {
        self.inner.lane
    }

    /// The durability mode.
    pub fn mode(&self) -> Durability {
        self.inner.counters.mode
    }

    /// Flush statistics.
    pub fn stats(&self) -> &FlushStats {
        &self.inner.counters.stats
    }

    /// The failure that stopped this database's flushes, if any.
    pub fn failure(&self) -> Option<FlushError> {
        self.inner.counters.failure.borrow().clone()
    }

    /// Waits until a flush fails (forever if none does).
    pub async fn failed(&self) -> FlushError {
        let mut rx = self.inner.counters.failure.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until the write behind `ticket` is durable.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), FlushError> {
        let c = &self.inner.counters;
        if c.mode == Durability::None || c.durable.load(SeqCst) >= ticket.0 {
            return Ok(());
        }
        self.wait_for_flush().await
    }

    /// Waits until everything a reader may have seen is durable: returns at
    /// once if no write is in progress and all finished writes are flushed,
    /// otherwise joins the next flush.
    pub async fn read_barrier(&self) -> Result<(), FlushError> {
        let c = &self.inner.counters;
        if c.mode == Durability::None {
            return Ok(());
        }
        if c.inflight.load(SeqCst) == 0 && c.durable.load(SeqCst) >= c.written.load(SeqCst) {
            return Ok(());
        }
        self.wait_for_flush().await
    }

    async fn wait_for_flush(&self) -> Result<(), FlushError> {
        let (reply, rx) = oneshot::channel();
        self.inner.counters.stats.requests.fetch_add(1, SeqCst);
        {
            let guard = self
                .inner
                .tx
                .lock()
                .map_err(|_| FlushError("flusher lock poisoned".into()))?;
            let Some(tx) = guard.as_ref() else {
                return Err(FlushError("flusher stopped".into()));
            };
            tx.send(Waiter { reply })
                .map_err(|_| FlushError("flusher stopped".into()))?;
        }
        rx.await.map_err(|_| FlushError("flusher stopped".into()))?
    }

    /// Stops the thread after it has served every queued waiter and made a
    /// final flush, and waits for it (so the database can be reopened).
    pub fn stop(&self) {
        if let Ok(mut g) = self.inner.tx.lock() {
            g.take();
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn run(
    db: sled::Db,
    dir: PathBuf,
    rx: mpsc::Receiver<Waiter>,
    inner: Arc<Counters>,
    turns: Option<(FlushTurns, Lane)>,
) {
    // Without flushes there is nothing to take turns for.
    let turns = turns.filter(|_| inner.mode != Durability::None);
    while let Ok(first) = rx.recv() {
        // Wait for the turn before gathering: writers that arrive meanwhile
        // join this flush.
        // (A database that failed flushes no more: it needs no turn.)
        let failed = inner.failure.borrow().is_some();
        let turn = turns
            .as_ref()
            .filter(|_| !failed)
            .map(|(t, lane)| t.take(*lane));
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        // Every ticket of a queued waiter was taken before this load.
        let snapshot = inner.written.load(SeqCst);
        let started = Instant::now();
        let earlier = inner.failure.borrow().clone();
        let result = match earlier {
            Some(e) => Err(e),
            None => flush_guarded(&db, &dir, inner.mode),
        };
        drop(turn);
        match &result {
            Ok(()) => {
                inner.durable.fetch_max(snapshot, SeqCst);
            }
            Err(e) => {
                if inner.failure.borrow().is_none() {
                    tracing::error!(error = %e, dir = %dir.display(),
                        "flush failed; nothing is acknowledged from now on and the process must stop");
                    inner.failure.send_replace(Some(e.clone()));
                }
            }
        }
        inner.stats.flushes.fetch_add(1, SeqCst);
        inner.stats.waiters.fetch_add(batch.len() as u64, SeqCst);
        inner
            .stats
            .flush_micros
            .fetch_add(started.elapsed().as_micros() as u64, SeqCst);
        crate::metrics::observe_flush(batch.len());
        for w in batch {
            let _ = w.reply.send(result.clone());
        }
    }
    // Final flush when the flusher is dropped: nothing more is written after.
    if inner.failure.borrow().is_none() {
        let _ = flush_guarded(&db, &dir, inner.mode);
    }
}

/// [`flush_once`], with a panic inside sled turned into a failed flush like
/// any other, so that the process stops instead of running on with a dead
/// flusher.
fn flush_guarded(db: &sled::Db, dir: &std::path::Path, mode: Durability) -> Result<(), FlushError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| flush_once(db, dir, mode)))
        .unwrap_or_else(|_| Err(FlushError("the flush panicked".into())))
}

fn flush_once(db: &sled::Db, dir: &std::path::Path, mode: Durability) -> Result<(), FlushError> {
    if crate::fault::take_flush_panic(dir) {
        panic!("injected flush panic ({})", dir.display());
    }
    match mode {
        Durability::None => Ok(()),
        Durability::Flush => db
            .flush()
            .map(|_| ())
            .map_err(|e| FlushError(e.to_string())),
        Durability::Fsync => {
            db.flush().map_err(|e| FlushError(e.to_string()))?;
            // An fsync error means the kernel may have dropped dirty pages:
            // the caller never retries it (see the module docs).
            fsync_dir_files(dir)
                .map_err(|e| FlushError(format!("fsync of {} failed: {e}", dir.display())))
        }
    }
}

/// fsyncs every regular file of a sled directory (and `blobs/`), then the directory.
fn fsync_dir_files(dir: &std::path::Path) -> std::io::Result<()> {
    if crate::fault::fsync_should_fail() {
        return Err(std::io::Error::other("injected fsync failure"));
    }
    for sub in [dir.to_path_buf(), dir.join("blobs")] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                match std::fs::File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // sled removed it (e.g. an old blob) after we listed it: nothing to sync.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        match std::fs::File::open(&sub) {
            Ok(d) => d.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
