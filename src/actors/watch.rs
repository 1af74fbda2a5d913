//! Change notifications for orders, so `Prefer: wait=N` can long-poll without
//! polling the database.
//!
//! Invariant: a waiter subscribes *before* it reads the order, so a change
//! committed between its read and its wait still wakes it.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Waiters per order id.
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl Watchers {
    /// A receiver that completes at the next durable change of `id`.
    pub fn subscribe(&self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let list = m.entry(id.to_owned()).or_default();
        list.retain(|s| !s.is_closed());
        list.push(tx);
        rx
    }

    /// Wakes every waiter of `id`.
    pub fn notify(&self, id: &str) {
        let list = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        for tx in list.into_iter().flatten() {
            let _ = tx.send(());
        }
    }
}
