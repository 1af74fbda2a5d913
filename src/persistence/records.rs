//! The value stored per entity: its state, its outbox, how far it has consumed
//! its inbox and which envelopes it has seen — all in one value, so that
//! handling a message is one single-key insert (atomic, and fast in sled).
//! Customers and order-history views keep their per-order pieces apart, as
//! parts, once they have more than a few (see `parts`), so that their records
//! do not grow with the orders.
//!
//! Invariant: after a record is durable, its `outbox` holds every message the
//! handled inputs produced that is not known to be delivered, and
//! `inbox_cursor` is the sequence of the last inbox entry whose effects are in
//! `state`. State without its outbox (or the reverse) cannot be observed.

use crate::domain::{Envelope, OrderId, RecordedEvent};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How many recent envelope ids an entity remembers for deduplication. Beyond
/// the window, duplicates are still harmless: every handler is idempotent per
/// order (see `domain`).
pub const SEEN_WINDOW: usize = 64;

/// The stored form of one entity of any service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRecord<S> {
    /// `None` until the entity exists (a customer that was never created
    /// still records how far its inbox was consumed).
    pub state: Option<S>,
    /// Sequence of the last consumed inbox entry (0: none).
    pub inbox_cursor: u64,
    /// Messages produced but not known to be delivered.
    pub outbox: Vec<Envelope>,
    /// Ids of recently handled envelopes, oldest first.
    pub seen: VecDeque<u128>,
    /// Commits since creation (each handles one message or a batch), for
    /// metrics and tests.
    pub handled: u64,
}

impl<S> Default for EntityRecord<S> {
    fn default() -> Self {
        Self {
            state: None,
            inbox_cursor: 0,
            outbox: Vec::new(),
            seen: VecDeque::new(),
            handled: 0,
        }
    }
}

impl<S> EntityRecord<S> {
    /// Whether this envelope id was handled recently.
    pub fn has_seen(&self, id: u128) -> bool {
        self.seen.contains(&id)
    }

    /// Remembers an envelope id, forgetting the oldest past the window.
    pub fn remember(&mut self, id: u128) {
        self.seen.push_back(id);
        while self.seen.len() > SEEN_WINDOW {
            self.seen.pop_front();
        }
    }

    /// Drops delivered envelopes from the outbox.
    pub fn trim_outbox(&mut self, delivered: &std::collections::HashSet<u128>) -> bool {
        let before = self.outbox.len();
        self.outbox.retain(|e| !delivered.contains(&e.id));
        before != self.outbox.len()
    }
}

/// The Order service's state: the order's event log (the record; the order is
/// its fold).
///
/// Everything an order shows (`OrderView`) follows from `id`, `saga_id` (set at
/// creation) and `events` (only ever appended): a long-poll relies on that to
/// know a record with as many events as a durable commit had is durable
/// (`Runtime::get_order_known`). A field the view shows must change only
/// together with a new event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: OrderId,
    pub saga_id: String,
    pub events: Vec<RecordedEvent>,
    /// Set once a CancelOrder saga was started (the order stays APPROVED,
    /// semantically locked, until that saga cancels it).
    pub cancel_requested: bool,
}
