//! Idempotency keys: a client-chosen key bound to a fingerprint of the
//! validated request and to the id of the entity it created. Rare path (one
//! compare-and-swap per keyed request). The binding is made durable by the
//! flush of the create command that follows it in the same database (sled
//! recovers a prefix of its log; RELIABILITY.md, "Idempotency keys").
//!
//! Invariant: the first request with a key decides the entity id; every later
//! request with that key either names the same request (and gets the same
//! entity) or is refused, even across crashes.

use super::codec;
use super::store::{ServiceDb, StoreError};
use super::Ticket;
use crate::domain::Millis;
use serde::{Deserialize, Serialize};

/// What a key is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// A canonical description of the validated request.
    pub fingerprint: String,
    /// The entity the first request created (or is creating).
    pub entity_id: String,
    pub created_at: Millis,
}

/// The outcome of reserving a key.
#[derive(Debug)]
pub enum Reservation {
    /// The key is new and now bound to the given record. The ticket is that
    /// of the binding; a later durable commit in the same database covers it.
    Reserved(Ticket),
    /// The key was bound before.
    Existing(IdempotencyRecord),
}

impl ServiceDb {
    /// Binds `key` to `rec` unless it is bound already.
    pub fn idempotency_reserve(
        &self,
        key: &str,
        rec: &IdempotencyRecord,
    ) -> Result<Reservation, StoreError> {
        let bytes = codec::encode(rec)?;
        loop {
            let guard = self.flusher.begin_write();
            let swapped = self.idempotency.compare_and_swap(
                key.as_bytes(),
                None as Option<&[u8]>,
                Some(bytes.clone()),
            )?;
            let ticket = guard.finish();
            match swapped {
                Ok(()) => return Ok(Reservation::Reserved(ticket)),
                Err(cas) => match cas.current {
                    Some(v) => return Ok(Reservation::Existing(codec::decode(&v)?)),
                    // Purged between the attempt and now: nothing of ours is
                    // written, so try again.
                    None => continue,
                },
            }
        }
    }

    /// Forgets keys created before `before`; returns how many.
    pub fn idempotency_purge(&self, before: Millis) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.idempotency.iter() {
            let (k, v) = item?;
            let old = match codec::decode::<IdempotencyRecord>(&v) {
                Ok(r) => r.created_at < before,
                Err(_) => true,
            };
            if old {
                self.idempotency.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
