//! The list index: which entities have a given field value (an order's state
//! or customer, a saga's phase), so that a filtered list reads the matching
//! records only, not every record of the service.
//!
//! Invariants: a term is added *before* the insert of the record that has it
//! and removed only *after* the insert of a record that no longer has it.
//! sled recovers a prefix of its log, so whenever a record is durable its
//! terms are too: the index lists every matching entity, plus perhaps a few
//! stale entries (a crash between a commit and the removal). Readers
//! therefore re-check every record they read through the index.

use super::keys;
use super::store::{ServiceDb, StoreError};
use std::ops::Bound;

/// One indexed field value of an entity: `(term, value)`, e.g. `("state", "APPROVED")`.
pub type ListTerm = (&'static str, String);

impl ServiceDb {
    /// Lists `id` under each of `terms`. Call before the record insert.
    pub fn list_index_add(&self, id: &str, terms: &[ListTerm]) -> Result<(), StoreError> {
        for (term, value) in terms {
            self.lists.insert(keys::list(term, value, id), &[])?;
        }
        Ok(())
    }

    /// Takes `id` off each of `terms`. Call after the record insert.
    pub fn list_index_remove(&self, id: &str, terms: &[ListTerm]) -> Result<(), StoreError> {
        for (term, value) in terms {
            self.lists.remove(keys::list(term, value, id))?;
        }
        Ok(())
    }

    /// Ids listed under `term = value`, in id order, starting after `after`.
    /// May include stale ids (see the module invariants): re-check the record.
    pub fn list_index_ids<'a>(
        &'a self,
        term: &str,
        value: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<String, StoreError>> + 'a {
        let prefix = keys::list_prefix(term, value);
        let start = match after {
            Some(a) => Bound::Excluded(keys::list(term, value, a)),
            None => Bound::Included(prefix.clone()),
        };
        let skip = prefix.len();
        self.lists
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .keys()
            .take_while(move |k| k.as_ref().map_or(true, |k| k.starts_with(&prefix)))
            .map(move |k| Ok(String::from_utf8_lossy(&k?[skip..]).into_owned()))
    }

    /// Whether the list index covers every record (false for data written
    /// before it existed: start-up then builds it once).
    pub fn list_index_complete(&self) -> bool {
        self.lists_complete.get()
    }

    /// Records that the list index covers every record.
    pub fn set_list_index_complete(&self) -> Result<(), StoreError> {
        self.lists_complete.set(&self.db)
    }
}
