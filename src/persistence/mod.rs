//! Storage on sled 0.34.7: one database per service, durable inboxes, entity
//! records that carry their outbox, dead letters, and the group-commit flusher.
//!
//! # What is durable when
//!
//! A write is visible to readers as soon as sled's `insert` returns, but it is
//! only *durable* once the service's [`Flusher`] reports its ticket flushed.
//! Nothing may leave the process (an HTTP answer, a relay hand-off, a reply)
//! before that. Every hot-path commit is a single-key insert (records with
//! many per-order pieces also write those apart, as [`parts`]): sled's
//! transactions and batches serialise on a global lock (~5,000 writes/s here)
//! while single-key inserts under a shared flush reach ~50,000/s.
//!
//! This module never imports `actors` or `http`.

pub mod codec;
pub mod deadletters;
pub mod flusher;
pub mod idempotency;
pub mod inbox;
pub mod keys;
pub mod lists;
pub mod parts;
pub mod records;
pub mod space;
pub mod store;

pub use codec::CodecError;
pub use flusher::{Durability, FlushTurns, Flusher, Lane, Ticket, MAX_PASSED};
pub use idempotency::{IdempotencyRecord, Reservation};
pub use inbox::InboxSpan;
pub use lists::ListTerm;
pub use parts::PartWrite;
pub use records::{EntityRecord, OrderRecord, SEEN_WINDOW};
pub use space::SpaceGuard;
pub use store::{ServiceDb, Store, StoreError};
