//! Versioned parts: pieces of an entity's state kept under their own keys,
//! so that a commit rewrites the piece that changed, not a value that grows
//! with every piece the entity ever had. Used by the order-history view: one
//! part per order (its summary, versioned by the order's event count).
//!
//! Invariant: a part is only ever replaced by a higher version
//! ([`ServiceDb::part_put_newer`]), so writing one is idempotent and
//! order-insensitive. That is what lets the view write its parts *before* its
//! record, outside the record's single-key commit: if the process dies in
//! between, the message is handled again and rewrites nothing.

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
