//! Every key layout, in one file. Once shipped, a layout never changes: a new
//! layout gets a new tree name.
//!
//! Trees of each service database:
//! - `entities`: entity id → [`EntityRecord`](super::EntityRecord)
//! - `inbox`: `entity id / seq (u64 BE)` → [`Envelope`](crate::domain::Envelope)
//! - `deadletters`: envelope id (u128 BE) → [`DeadLetter`](super::deadletters::DeadLetter)
//! - `idempotency`: key → stored response (rare path)
//! - `active`: entity id → empty: the entities start-up recovery must visit
//!   (see [`ServiceDb::mark_active`](super::ServiceDb::mark_active))
//! - the default tree holds [`META_ACTIVE_INDEX`] once `active` is complete
//!
//! Entity ids never contain `/` (see `domain::ids`), so `id/` is an exact prefix.

pub const TREE_ENTITIES: &str = "entities";
pub const TREE_INBOX: &str = "inbox";
pub const TREE_DEADLETTERS: &str = "deadletters";
pub const TREE_IDEMPOTENCY: &str = "idempotency";
pub const TREE_ACTIVE: &str = "active";

/// Present (in the default tree) once the `active` tree lists every entity
/// that needs recovery; absent in data written before the index existed.
pub const META_ACTIVE_INDEX: &[u8] = b"meta/active_index/v1";

/// Key of an entity record.
pub fn entity(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// Prefix of every inbox entry of an entity.
pub fn inbox_prefix(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.extend_from_slice(id.as_bytes());
    k.push(b'/');
    k
}

/// Key of one inbox entry.
pub fn inbox(id: &str, seq: u64) -> Vec<u8> {
    let mut k = inbox_prefix(id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Splits an inbox key into entity id and sequence; `None` if malformed.
pub fn parse_inbox(key: &[u8]) -> Option<(&str, u64)> {
    if key.len() < 10 {
        return None;
    }
    let (head, seq) = key.split_at(key.len() - 8);
    let id = head.strip_suffix(b"/")?;
    let id = std::str::from_utf8(id).ok()?;
    let seq = u64::from_be_bytes(seq.try_into().ok()?);
    Some((id, seq))
}

/// Key of a dead letter.
pub fn deadletter(envelope_id: u128) -> [u8; 16] {
    envelope_id.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_keys_round_trip_and_sort_by_sequence() {
        let a = inbox("c-1", 2);
        let b = inbox("c-1", 256);
        assert!(a < b);
        assert_eq!(parse_inbox(&b), Some(("c-1", 256)));
        assert!(a.starts_with(&inbox_prefix("c-1")));
        assert!(!a.starts_with(&inbox_prefix("c-")));
        assert_eq!(parse_inbox(b"short"), None);
    }
}
