//! Parts: pieces of an entity's state kept under their own keys, so that a
//! commit rewrites the piece that changed, not a value that grows with every
//! piece the entity ever had. Both disciplines below rest on sled recovering
//! a prefix of its log (as the recovery and list indexes do): if a write is
//! durable, so is every write made before it. Two disciplines keep parts
//! crash-safe:
//!
//! - *Versioned, written before the record* (the order-history view: one part
//!   per order, its summary, versioned by the order's event count). A part is
//!   only ever replaced by a higher version ([`ServiceDb::part_put_newer`]),
//!   so writing one is idempotent: if the process dies between the parts and
//!   the record, the message is handled again and rewrites nothing.
//! - *Redone from the record, written after it* (a customer's credit
//!   decisions, which must change together with its reserved total). The
//!   record itself carries the pieces its commit changed, and the parts are
//!   written after it ([`ServiceDb::part_put`]). Readers let the record's
//!   copy win. sled recovers a prefix of its log, so once a later record
//!   (without that copy) is durable, the part written before it is too.

use super::keys;
use super::store::{ServiceDb, StoreError};

/// One part to write: its name within the entity, its version, its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartWrite {
    pub part: String,
    pub version: u64,
    pub value: Vec<u8>,
}

/// A stored part: `version (u64 BE) ++ value`.
fn stored(version: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn split(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (version, value) = bytes.split_at_checked(8)?;
    Some((u64::from_be_bytes(version.try_into().ok()?), value))
}

impl ServiceDb {
    /// Writes part `part` of `entity` unless a version at least as high is
    /// stored; returns whether it wrote. One writer per entity (its actor, or
    /// an offline rebuild), so the read and the write need no lock.
    pub fn part_put_newer(&self, entity: &str, p: &PartWrite) -> Result<bool, StoreError> {
        let key = keys::part(entity, &p.part);
        if let Some(old) = self.parts.get(&key)? {
            if split(&old).is_some_and(|(v, _)| v >= p.version) {
                return Ok(false);
            }
        }
        let guard = self.flusher.begin_write();
        self.parts.insert(key, stored(p.version, &p.value))?;
        guard.finish();
        Ok(true)
    }

    /// Writes part `part` of `entity` (the redo discipline, see the module).
    pub fn part_put(&self, entity: &str, part: &str, value: &[u8]) -> Result<(), StoreError> {
        let guard = self.flusher.begin_write();
        self.parts
            .insert(keys::part(entity, part), stored(0, value))?;
        guard.finish();
        Ok(())
    }

    /// The value of part `part` of `entity`, if stored.
    pub fn part_get(&self, entity: &str, part: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.parts.get(keys::part(entity, part))? {
            None => Ok(None),
            Some(v) => match split(&v) {
                Some((_, value)) => Ok(Some(value.to_vec())),
                None => Err(StoreError::Codec(super::CodecError::Decode(format!(
                    "part {part} of {entity} is {} bytes, shorter than its version",
                    v.len()
                )))),
            },
        }
    }

    /// Every part of `entity`, in part-name order: `(name, version, value)`.
    /// A stored part too short to hold its version is reported as an error.
    pub fn parts_of(&self, entity: &str) -> Result<Vec<(String, u64, Vec<u8>)>, StoreError> {
        let prefix = keys::part_prefix(entity);
        let mut out = Vec::new();
        for item in self.parts.scan_prefix(&prefix) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let (version, value) = split(&v).ok_or_else(|| {
                StoreError::Codec(super::CodecError::Decode(format!(
                    "part {name} of {entity} is {} bytes, shorter than its version",
                    v.len()
                )))
            })?;
            out.push((name, version, value.to_vec()));
        }
        Ok(out)
    }

    /// Removes every part of every entity (an offline rebuild).
    pub fn parts_clear(&self) -> Result<(), StoreError> {
        self.parts.clear()?;
        Ok(())
    }
}
