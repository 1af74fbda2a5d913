//! Opens one sled database per service under the data directory and gives
//! typed, single-key access to entity records.
//!
//! Layout: `<data>/customer/`, `<data>/order/`, `<data>/saga/`, `<data>/view/`.
//! No service reads or writes another's database; messages cross between them
//! only through the relay (inbox appends).

use super::codec::{self, CodecError};
use super::flusher::{Durability, FlushError, FlushTurns, Flusher, Lane, Ticket};
use super::keys;
use super::records::EntityRecord;
use crate::domain::Service;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A storage failure. Callers treat these as infrastructure errors (the actor
/// fails and is restarted); business outcomes never come through here.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Flush(#[from] FlushError),
    #[error("cannot open {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("storage is full or read-only: {0}")]
    NoSpace(String),
}

impl StoreError {
    /// Whether the storage failed for good (a failed flush: see `flusher`).
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Flush(_))
    }
}

impl StoreError {
    /// Whether the error is the disk being full (answered with 503).
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace(_) => true,
            StoreError::Sled(sled::Error::Io(e)) => is_no_space_io(e),
            StoreError::Flush(f) => f.0.contains("No space left"),
            _ => false,
        }
    }
}

/// Removes the `snap.*.generating` files a kill left behind.
///
/// sled 0.34.7 writes a snapshot to `snap.<lsn>.generating`, fsyncs it and
/// renames it to `snap.<lsn>`; a leftover `.generating` file is never a
/// complete snapshot. But sled reads it anyway when it has the highest LSN
/// and then refuses to open ("Read corrupted data", sled issue #1527), which
/// the crash-cycle harness hit with a SIGKILL during start-up. Without it sled
/// uses the previous snapshot and replays the log, as after any crash.
fn remove_unfinished_snapshots(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %path.display(), "removing an unfinished sled snapshot left by a crash");
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn is_no_space_io(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.to_string().contains("No space left")
}

/// One service's database: its trees and its flusher.
#[derive(Clone)]
pub struct ServiceDb {
    pub name: &'static str,
    pub db: sled::Db,
    pub entities: sled::Tree,
    pub inbox: sled::Tree,
    pub deadletters: sled::Tree,
    pub idempotency: sled::Tree,
    /// Entities that start-up recovery must visit (see [`Self::mark_active`]).
    pub active: sled::Tree,
    /// Entities by field value, for filtered lists (see `lists`).
    pub lists: sled::Tree,
    /// Pieces of entity states kept under their own keys (see `parts`).
    pub parts: sled::Tree,
    pub flusher: Flusher,
    /// Whether `active` is complete (see [`Self::active_index_complete`]).
    index_complete: Completion,
    /// Entries in `active`: counted at open, then kept by the (un)marks.
    active_count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Whether `lists` is complete (see `ServiceDb::list_index_complete`).
    pub(crate) lists_complete: Completion,
    /// Serialises inbox appends (see `inbox_append`).
    pub(crate) append_lock: std::sync::Arc<std::sync::Mutex<()>>,
}

/// A one-way "this index is complete" flag: a meta key in the default tree
/// (written after everything it vouches for, so sled's prefix recovery never
/// has the key without the entries), cached in memory.
#[derive(Clone)]
pub(crate) struct Completion {
    key: &'static [u8],
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Completion {
    fn read(db: &sled::Db, key: &'static [u8]) -> Result<Self, StoreError> {
        Ok(Self {
            key,
            done: std::sync::Arc::new(db.contains_key(key)?.into()),
        })
    }

    pub(crate) fn get(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn set(&self, db: &sled::Db) -> Result<(), StoreError> {
        db.insert(self.key, &[1u8])?;
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl ServiceDb {
    /// Opens (creating if needed) the database in `dir`, flushing on its own.
    pub fn open(
        dir: &Path,
        name: &'static str,
        mode: Durability,
        cache_bytes: u64,
    ) -> Result<Self, StoreError> {
        Self::open_with_turns(dir, name, mode, cache_bytes, None)
    }

    /// Opens the database in `dir`; with `turns`, its flushes take turns with
    /// the other databases that share them (see [`FlushTurns`]).
    pub fn open_with_turns(
        dir: &Path,
        name: &'static str,
        mode: Durability,
        cache_bytes: u64,
        turns: Option<(FlushTurns, Lane)>,
    ) -> Result<Self, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: dir.to_owned(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        remove_unfinished_snapshots(dir).map_err(|e| open_err(&e))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| open_err(&e))?;
        let flusher = Flusher::start(db.clone(), dir.to_owned(), mode, name, turns)
            .map_err(|e| open_err(&e))?;
        let active = db.open_tree(keys::TREE_ACTIVE)?;
        let active_count = std::sync::Arc::new((active.len() as u64).into());
        Ok(Self {
            name,
            entities: db.open_tree(keys::TREE_ENTITIES)?,
            inbox: db.open_tree(keys::TREE_INBOX)?,
            deadletters: db.open_tree(keys::TREE_DEADLETTERS)?,
            idempotency: db.open_tree(keys::TREE_IDEMPOTENCY)?,
            active,
            active_count,
            lists: db.open_tree(keys::TREE_LISTS)?,
            parts: db.open_tree(keys::TREE_PARTS)?,
            index_complete: Completion::read(&db, keys::META_ACTIVE_INDEX)?,
            lists_complete: Completion::read(&db, keys::META_LIST_INDEX)?,
            db,
            flusher,
            append_lock: Default::default(),
        })
    }

    /// Loads an entity record; a missing entity is an empty record.
    pub fn load<S: DeserializeOwned>(&self, id: &str) -> Result<EntityRecord<S>, StoreError> {
        match self.entities.get(keys::entity(id))? {
            Some(v) => Ok(codec::decode(&v)?),
            None => Ok(EntityRecord::default()),
        }
    }

    /// Loads an entity record if it exists.
    pub fn get<S: DeserializeOwned>(
        &self,
        id: &str,
    ) -> Result<Option<EntityRecord<S>>, StoreError> {
        match self.entities.get(keys::entity(id))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Writes an entity record: one single-key insert. Await the ticket with
    /// [`Flusher::durable`] before anything depending on it leaves the process.
    pub fn save<S: Serialize>(
        &self,
        id: &str,
        rec: &EntityRecord<S>,
    ) -> Result<Ticket, StoreError> {
        let bytes = codec::encode(rec)?;
        let guard = self.flusher.begin_write();
        self.entities.insert(keys::entity(id), bytes)?;
        Ok(guard.finish())
    }

    /// Writes a record only if no record exists yet (rare path: creation).
    /// Returns `Ok(None)` if one already existed.
    pub fn create<S: Serialize>(
        &self,
        id: &str,
        rec: &EntityRecord<S>,
    ) -> Result<Option<Ticket>, StoreError> {
        let bytes = codec::encode(rec)?;
        let guard = self.flusher.begin_write();
        let swapped =
            self.entities
                .compare_and_swap(keys::entity(id), None as Option<&[u8]>, Some(bytes))?;
        let ticket = guard.finish();
        Ok(swapped.is_ok().then_some(ticket))
    }

    /// Iterates every entity record in key order, starting after `after`.
    /// Records that do not decode are reported, not skipped silently.
    pub fn scan<S: DeserializeOwned>(
        &self,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, EntityRecord<S>), StoreError>> + '_ {
        let start: Vec<u8> = match after {
            Some(a) => {
                let mut k = keys::entity(a);
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        self.entities.range(start..).map(|item| {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k).into_owned();
            Ok((id, codec::decode(&v)?))
        })
    }

    /// Lists `id` among the entities start-up recovery visits. Call it before
    /// the insert of a record that needs recovery (an outbox to resend, a
    /// deadline to re-arm): sled recovers a prefix of its log, so whenever
    /// that record is durable the mark is too. Unmark only after a record that
    /// needs nothing is durable; a stale mark costs recovery one read (and,
    /// in the order database, one slot of admission control and one record
    /// read per `GET /orders?customerId`, until the entity passivates).
    pub fn mark_active(&self, id: &str) -> Result<(), StoreError> {
        if self.active.insert(keys::entity(id), &[])?.is_none() {
            self.active_count
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    /// Removes `id` from the recovery index (see [`Self::mark_active`]).
    pub fn unmark_active(&self, id: &str) -> Result<(), StoreError> {
        if self.active.remove(keys::entity(id))?.is_some() {
            // Saturating: a count below zero would refuse every new order.
            let _ = self.active_count.fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| Some(n.saturating_sub(1)),
            );
        }
        Ok(())
    }

    /// How many entities are in the recovery index: for orders, those not
    /// settled yet or with messages not yet delivered (admission control).
    pub fn active_count(&self) -> u64 {
        self.active_count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether `id` is in the recovery index.
    pub fn is_marked_active(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.active.contains_key(keys::entity(id))?)
    }

    /// Every id in the recovery index.
    pub fn active_ids(&self) -> Result<Vec<String>, StoreError> {
        self.active_ids_after(None).collect()
    }

    /// Ids in the recovery index in id order, starting after `after`.
    pub fn active_ids_after<'a>(
        &'a self,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<String, StoreError>> + 'a {
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(keys::entity(a)),
            None => std::ops::Bound::Unbounded,
        };
        self.active
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
    }

    /// Whether the recovery index is complete (false for data written before
    /// it existed: recovery then scans every record once and builds it).
    pub fn active_index_complete(&self) -> bool {
        self.index_complete.get()
    }

    /// Records that the recovery index is complete (after every mark).
    pub fn set_active_index_complete(&self) -> Result<(), StoreError> {
        self.index_complete.set(&self.db)
    }

    /// Loads an entity record and whether it is in the recovery index.
    ///
    /// Invariant: an entity outside a complete index has had every envelope
    /// of its outbox delivered (it is marked before any record with an outbox
    /// is written and unmarked only once everything is delivered). Outboxes
    /// are trimmed lazily, so such a record may still hold delivered
    /// envelopes; they are dropped here, which spares the write that would
    /// trim them at passivation.
    pub fn load_indexed<S: DeserializeOwned>(
        &self,
        id: &str,
    ) -> Result<(EntityRecord<S>, bool), StoreError> {
        let mut rec = self.load::<S>(id)?;
        let marked = self.is_marked_active(id)?;
        if !marked && self.active_index_complete() {
            rec.outbox.clear();
        }
        Ok((rec, marked))
    }

    /// Waits for a ticket to be durable.
    pub async fn durable(&self, t: Ticket) -> Result<(), StoreError> {
        Ok(self.flusher.durable(t).await?)
    }

    /// Waits until everything a reader of this database may have seen is
    /// durable (see [`Flusher::read_barrier`]).
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        Ok(self.flusher.read_barrier().await?)
    }
}

/// The four service databases.
#[derive(Clone)]
pub struct Store {
    pub dir: PathBuf,
    /// The turns the databases take to flush (`storage.flush_in_turn`).
    pub turns: Option<FlushTurns>,
    pub customer: ServiceDb,
    pub order: ServiceDb,
    pub saga: ServiceDb,
    pub view: ServiceDb,
}

impl Store {
    /// Opens every service database under `dir`; they take turns flushing.
    pub fn open(dir: &Path, mode: Durability, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, mode, cache_bytes, true)
    }

    /// Opens every service database under `dir`. With `flush_in_turn`
    /// (`storage.flush_in_turn`), the four databases share one [`FlushTurns`]:
    /// order, saga and customer in the saga lane, the view (on no saga's path)
    /// in the background lane.
    pub fn open_with(
        dir: &Path,
        mode: Durability,
        cache_bytes: u64,
        flush_in_turn: bool,
    ) -> Result<Self, StoreError> {
        if mode == Durability::None {
            tracing::warn!("storage.durability = none: acknowledged writes are LOST on a crash; benchmarks only");
        }
        let per_db = (cache_bytes / 4).max(1 << 20);
        let turns = flush_in_turn.then(FlushTurns::default);
        let open = |name: &'static str, lane| {
            let turns = turns.clone().map(|t| (t, lane));
            ServiceDb::open_with_turns(&dir.join(name), name, mode, per_db, turns)
        };
        let (customer, order) = (open("customer", Lane::Saga)?, open("order", Lane::Saga)?);
        let (saga, view) = (open("saga", Lane::Saga)?, open("view", Lane::Background)?);
        Ok(Self {
            dir: dir.to_owned(),
            turns,
            customer,
            order,
            saga,
            view,
        })
    }

    /// The database of a service.
    pub fn service(&self, s: Service) -> &ServiceDb {
        match s {
            Service::Customer => &self.customer,
            Service::Order => &self.order,
            Service::Saga => &self.saga,
            Service::View => &self.view,
        }
    }

    /// The first flush failure of any database (they are final), if any.
    pub fn failure(&self) -> Option<FlushError> {
        self.all().into_iter().find_map(|db| db.flusher.failure())
    }

    /// Waits until a flush of any database fails.
    pub async fn failed(&self) -> FlushError {
        let waits = self.all().map(|db| Box::pin(db.flusher.failed()));
        futures::future::select_all(waits).await.0
    }

    fn all(&self) -> [&ServiceDb; 4] {
        [&self.customer, &self.order, &self.saga, &self.view]
    }

    /// Flushes every database and stops the flushers (shutdown).
    pub fn close(&self) -> Result<(), StoreError> {
        let mut result = Ok(());
        for db in self.all() {
            if db.flusher.failure().is_none() {
                if let Err(e) = db.db.flush() {
                    result = Err(e.into());
                }
            }
            db.flusher.stop();
        }
        result
    }
}
