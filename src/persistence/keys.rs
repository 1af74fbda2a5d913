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
//! - `lists`: `term / len (u16 BE) / value / entity id` → empty: which
//!   entities have a field value, for filtered lists (see
//!   [`ServiceDb::list_index_add`](super::ServiceDb::list_index_add))
//! - `parts`: `entity id / part name` → `version (u64 BE) ++ value`: pieces
//!   of an entity's state kept apart (see `parts`)
//! - the default tree holds [`META_ACTIVE_INDEX`] once `active` is complete,
//!   and [`META_LIST_INDEX`] once `lists` is
//!
//! Entity ids never contain `/` (see `domain::ids`), so `id/` is an exact prefix.

pub const TREE_ENTITIES: &str = "entities";
pub const TREE_INBOX: &str = "inbox";
pub const TREE_DEADLETTERS: &str = "deadletters";
pub const TREE_IDEMPOTENCY: &str = "idempotency";
pub const TREE_ACTIVE: &str = "active";
pub const TREE_LISTS: &str = "lists";
pub const TREE_PARTS: &str = "parts";

/// Present (in the default tree) once the `active` tree lists every entity
/// that needs recovery; absent in data written before the index existed.
pub const META_ACTIVE_INDEX: &[u8] = b"meta/active_index/v1";

/// Present (in the default tree) once the `lists` tree holds the terms of
/// every record; absent in data written before it existed.
pub const META_LIST_INDEX: &[u8] = b"meta/list_index/v1";

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

/// Prefix of every part of an entity.
pub fn part_prefix(id: &str) -> Vec<u8> {
    inbox_prefix(id)
}

/// Key of one part of an entity.
pub fn part(id: &str, name: &str) -> Vec<u8> {
    let mut k = part_prefix(id);
    k.extend_from_slice(name.as_bytes());
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

/// Prefix of every list-index entry of one term and value (e.g. `state`,
/// `APPROVED`). The value is length-prefixed, so no value's prefix is a
/// prefix of another value's.
pub fn list_prefix(term: &str, value: &str) -> Vec<u8> {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(term.len() + 3 + value.len());
    k.extend_from_slice(term.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&value.as_bytes()[..usize::from(len)]);
    k
}

/// Key of one list-index entry: the prefix, then the entity id (so entries
/// of one value sort like the records themselves).
pub fn list(term: &str, value: &str, id: &str) -> Vec<u8> {
    let mut k = list_prefix(term, value);
    k.extend_from_slice(id.as_bytes());
    k
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

    #[test]
    fn list_keys_of_one_value_never_share_a_prefix_with_another_value() {
        let a = list("customer", "c-1", "o-2");
        assert!(a.starts_with(&list_prefix("customer", "c-1")));
        assert!(!a.starts_with(&list_prefix("customer", "c-")));
        assert!(!list("customer", "c-10", "o-1").starts_with(&list_prefix("customer", "c-1")));
        assert!(list("state", "X", "o-1") < list("state", "X", "o-2"));
    }
}
