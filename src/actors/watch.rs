//! Change notifications for orders, so `Prefer: wait=N` can long-poll without
//! polling the database.
//!
//! Invariant: a waiter subscribes *before* it reads the order, so a change
//! committed between its read and its wait still wakes it.
//!
//! A notification carries the order's event count at that durable commit: an
//! order's view is a function of its (append-only) events, so a waiter that
//! then reads a record with that many events knows what it read is durable and
//! needs no read barrier (which, under load, would wait for another flush).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Waiters per order id.
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Vec<oneshot::Sender<usize>>>>,
}

impl Watchers {
    /// A receiver that completes at the next durable change of `id`, with the
    /// order's event count as of that commit.
    pub fn subscribe(&self, id: &str) -> oneshot::Receiver<usize> {
        let (tx, rx) = oneshot::channel();
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let list = m.entry(id.to_owned()).or_default();
        list.retain(|s| !s.is_closed());
        list.push(tx);
        rx
    }

    /// Wakes every waiter of `id`, after a durable commit that left the order
    /// with `events` events.
    pub fn notify(&self, id: &str, events: usize) {
        let list = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        for tx in list.into_iter().flatten() {
            let _ = tx.send(events);
        }
    }
}
