//! Dead letters: messages whose handling failed too often, kept with their
//! error so an operator can inspect and redeliver them. Rare path.

use super::codec;
use super::keys;
use super::store::{ServiceDb, StoreError};
use super::Ticket;
use crate::domain::{Envelope, Millis};
use serde::{Deserialize, Serialize};

/// A message that was set aside, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The envelope id (also the dead letter's id).
    pub id: u128,
    /// The entity whose inbox held it.
    pub entity: String,
    /// The envelope, if it could be decoded.
    pub envelope: Option<Envelope>,
    pub error: String,
    pub attempts: u32,
    pub at: Millis,
}

impl ServiceDb {
    /// Stores a dead letter.
    pub fn deadletter_put(&self, dl: &DeadLetter) -> Result<Ticket, StoreError> {
        let bytes = codec::encode(dl)?;
        let guard = self.flusher.begin_write();
        self.deadletters.insert(keys::deadletter(dl.id), bytes)?;
        Ok(guard.finish())
    }

    /// Up to `limit` dead letters with an id above `after`.
    pub fn deadletter_list(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let start = after
            .map(|a| keys::deadletter(a.saturating_add(1)).to_vec())
            .unwrap_or_default();
        let mut out = Vec::new();
        for item in self.deadletters.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            out.push(codec::decode(&v)?);
        }
        Ok(out)
    }

    /// Removes and returns a dead letter.
    pub fn deadletter_take(&self, id: u128) -> Result<Option<DeadLetter>, StoreError> {
        let key = keys::deadletter(id);
        let Some(v) = self.deadletters.get(key)? else {
            return Ok(None);
        };
        // Decode first: an undecodable dead letter stays for the operator to see.
        let dl = codec::decode(&v)?;
        self.deadletters.remove(key)?;
        Ok(Some(dl))
    }
}
