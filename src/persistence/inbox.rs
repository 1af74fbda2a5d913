//! Durable per-entity inboxes: append, read the pending entries of an
//! entity, drop consumed ones, and find every entity with pending work.
//!
//! Messages between services do not come through here any more (the relay
//! queues them in memory; their senders' outboxes are their durable copy, see
//! `actors::relay`). The durable inbox holds what has no sender outbox:
//! dead letters an operator redelivers, and entries written by earlier
//! versions, which are still consumed first.
//!
//! Invariants: entries of one entity are read in append order (keys end in a
//! sequence from sled's monotonic `generate_id`, which never goes back after a
//! restart). An entry is *pending* while its sequence is above the entity's
//! `inbox_cursor`; removing consumed entries is housekeeping and need not be
//! durable (the cursor already says they are consumed). Actors remove what
//! they consumed by key; start-up recovery removes what a crash left behind.

use super::codec;
use super::keys;
use super::store::{ServiceDb, StoreError};
use super::Ticket;
use crate::domain::Envelope;
use std::collections::BTreeMap;

/// One pending inbox entry: its sequence and the envelope, or why it does not decode.
pub type InboxEntry = (u64, Result<Envelope, String>);

/// The sequences of an entity's inbox entries: lowest and highest present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxSpan {
    pub first: u64,
    pub last: u64,
}

impl ServiceDb {
    /// Appends an envelope to its receiver's inbox. Returns the entry's
    /// sequence and the ticket to await for durability.
    pub fn inbox_append(&self, env: &Envelope) -> Result<(u64, Ticket), StoreError> {
        let bytes = codec::encode(env)?;
        let guard = self.flusher.begin_write();
        // Sequence and insert under one lock: otherwise a lower sequence could
        // become visible after a higher one that a consumer already passed.
        let _order = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.db.generate_id()?.saturating_add(1);
        self.inbox.insert(keys::inbox(&env.to.entity, seq), bytes)?;
        Ok((seq, guard.finish()))
    }

    /// Up to `limit` entries of `entity` with a sequence above `after`, in
    /// order. An entry that does not decode is returned as an error value so
    /// the caller can dead-letter it instead of stopping.
    pub fn inbox_pending(
        &self,
        entity: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let start = keys::inbox(entity, after.saturating_add(1));
        let prefix = keys::inbox_prefix(entity);
        let mut out = Vec::new();
        for item in self.inbox.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let Some((_, seq)) = keys::parse_inbox(&k) else {
                continue;
            };
            out.push((
                seq,
                codec::decode::<Envelope>(&v).map_err(|e| e.to_string()),
            ));
        }
        Ok(out)
    }

    /// Number of entries of `entity` above `after` (its inbox depth).
    pub fn inbox_depth(&self, entity: &str, after: u64) -> Result<usize, StoreError> {
        let start = keys::inbox(entity, after.saturating_add(1));
        let prefix = keys::inbox_prefix(entity);
        let mut n = 0;
        for item in self.inbox.range(start..) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Removes the consumed entries of `entity` (sequence `<= upto`). Not
    /// flushed: losing this removal in a crash only leaves entries the cursor
    /// already skips.
    pub fn inbox_remove_consumed(&self, entity: &str, upto: u64) -> Result<(), StoreError> {
        let prefix = keys::inbox_prefix(entity);
        let end = keys::inbox(entity, upto.saturating_add(1));
        let mut doomed = Vec::new();
        for item in self.inbox.range(prefix..end) {
            doomed.push(item?.0);
        }
        for k in doomed {
            self.inbox.remove(k)?;
        }
        Ok(())
    }

    /// Removes these consumed entries of `entity` by key (no range scan: the
    /// actor knows what it consumed). Not flushed, as above.
    pub fn inbox_remove(&self, entity: &str, seqs: &[u64]) -> Result<(), StoreError> {
        for &seq in seqs {
            self.inbox.remove(keys::inbox(entity, seq))?;
        }
        Ok(())
    }

    /// For every entity that has inbox entries, the lowest and the highest
    /// sequence present. Start-up recovery compares them with each entity's
    /// cursor: entries at or below it are consumed ones a crash left behind.
    pub fn inbox_heads(&self) -> Result<BTreeMap<String, InboxSpan>, StoreError> {
        let mut heads: BTreeMap<String, InboxSpan> = BTreeMap::new();
        for item in self.inbox.iter() {
            let (k, _) = item?;
            if let Some((id, seq)) = keys::parse_inbox(&k) {
                heads
                    .entry(id.to_owned())
                    .and_modify(|s| {
                        s.first = s.first.min(seq);
                        s.last = s.last.max(seq);
                    })
                    .or_insert(InboxSpan {
                        first: seq,
                        last: seq,
                    });
            }
        }
        Ok(heads)
    }
}
