//! The timer service: one task per service holds every armed deadline in a
//! heap and, when one is due, sends `Timer` to its entity through the
//! registry (activating it if it was passivated). It also sweeps the live
//! actors for passivation. One task per service instead of one per timer or
//! per actor keeps spawns off the hot path.
//!
//! Timers are not durable here: deadlines are part of each saga's durable
//! state, and start-up recovery re-arms them. It also holds the timers of the
//! sagas of the recovered work (in flight, or created by a resent start
//! message) until one reply window after it resumes them (see
//! [`TimerWheel::hold`]), longer while the backlog the crash left is being
//! worked through (`Runtime::hold_timers_while_backlog_drains`): it resends
//! every outbox, so a deadline that passed during the crash fires only if the
//! resent message got no reply either. A saga leaves the hold once it waits
//! for no reply (ended, paused, or in backoff); one that was in backoff at
//! the crash is not held at all, and neither are sagas that new requests
//! start after the restart. A duplicate or stale timer is harmless: the saga
//! acts only when its current deadline has passed.

use super::entity::{now_millis, EntityMsg, Logic, ServiceCtx};
use crate::domain::Millis;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Arms timers of one service.
pub struct TimerWheel {
    tx: mpsc::UnboundedSender<(Millis, String)>,
    task: Mutex<Option<JoinHandle<()>>>,
    hold: Arc<Hold>,
}

/// Recovery's hold on the timers of some entities (see [`TimerWheel::hold`]).
#[derive(Default)]
struct Hold {
    /// No held timer fires before this (ms since the epoch).
    until: AtomicI64,
    /// How many entities are held: lets [`TimerWheel::release`], on every
    /// message an entity handles, skip the lock when none is.
    count: AtomicU64,
    entities: Mutex<HashSet<String>>,
    /// Whether someone may still extend the hold (see
    /// [`TimerWheel::hold_extended`]): the set is kept until then.
    extended: AtomicBool,
}

impl Hold {
    fn entities(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.entities.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `entities` (too) until `until` (or later, if already so).
    fn add(&self, entities: impl IntoIterator<Item = String>, until: Millis) {
        // `until` first, under the lock: `clear_if_over` clears an expired
        // hold under it too.
        let mut held = self.entities();
        self.until.fetch_max(until, SeqCst);
        held.extend(entities);
        self.count.store(held.len() as u64, SeqCst);
    }

    /// Whether `entity`'s timers wait for the hold's end, if it lasts at `now`.
    fn holds(&self, entity: &str, now: Millis) -> bool {
        self.until.load(SeqCst) > now
            && self.count.load(SeqCst) > 0
            && self.entities().contains(entity)
    }

    /// `entity` is held no longer.
    fn release(&self, entity: &str) {
        if self.count.load(SeqCst) == 0 {
            return;
        }
        let mut held = self.entities();
        if held.remove(entity) {
            self.count.store(held.len() as u64, SeqCst);
        }
    }

    /// Forgets the held entities once the hold is over and nobody may
    /// extend it any more (a late extension keeps them).
    fn clear_if_over(&self, now: Millis) {
        let over = || self.until.load(SeqCst) <= now && !self.extended.load(SeqCst);
        if self.count.load(SeqCst) > 0 && over() {
            let mut e = self.entities();
            if over() {
                e.clear();
                self.count.store(0, SeqCst);
            }
        }
    }
}

impl TimerWheel {
    /// Starts the wheel of a service; it stops when the service is dropped.
    pub fn start<L: Logic>(ctx: Weak<ServiceCtx<L>>, sweep_every: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let hold = Arc::new(Hold::default());
        let task = tokio::spawn(run(ctx, rx, sweep_every, hold.clone()));
        Self {
            tx,
            task: Mutex::new(Some(task)),
            hold,
        }
    }

    /// The wheel's task, for shutdown to stop and await (once).
    pub fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().ok().and_then(|mut t| t.take())
    }

    /// Delivers `Timer` to `entity` at `deadline` (ms since the epoch), or
    /// when the hold ends if the entity is held then.
    pub fn arm(&self, entity: &str, deadline: Millis) {
        let _ = self.tx.send((deadline, entity.to_owned()));
    }

    /// Holds the timers of `entities` until `until`. Start-up recovery
    /// holds those of the sagas of the recovered work one reply window
    /// ahead: the outboxes it resends are as good as sent now,
    /// and a saga must not time out on a message whose receiver is still
    /// working through the backlog the crash left (a large backlog otherwise
    /// made every saga time out and retry at once). Timers of other
    /// entities, such as sagas new requests start after the restart, fire as
    /// usual.
    ///
    /// The hold may be extended while it lasts ([`Self::hold_until`]), and an
    /// entity leaves it once it waits for nothing ([`Self::release`]).
    pub fn hold(&self, entities: impl IntoIterator<Item = String>, until: Millis) {
        self.hold.add(entities, until);
    }

    /// Extends the hold to `t` (timers it pushed back wait for `t` too).
    pub fn hold_until(&self, t: Millis) {
        self.hold.until.fetch_max(t, SeqCst);
    }

    /// When the current hold ends (ms since the epoch; in the past if none).
    pub fn held_until(&self) -> Millis {
        self.hold.until.load(SeqCst)
    }

    /// How many entities the hold covers (the set is forgotten soon after
    /// the hold is over: at the wheel's next due timer or sweep).
    pub fn held(&self) -> u64 {
        self.hold.count.load(SeqCst)
    }

    /// `entity` waits for no reply any more (it ended or paused): its timers
    /// are held no longer.
    pub fn release(&self, entity: &str) {
        // Called for every message an entity handles: one load when nothing
        // is held.
        self.hold.release(entity);
    }

    /// While `true`, the hold may still be extended (the task that extends
    /// it runs): the held set is kept, even past the current end, so that a
    /// late extension still covers exactly the sagas that wait.
    pub fn hold_extended(&self, on: bool) {
        self.hold.extended.store(on, SeqCst);
    }
}

async fn run<L: Logic>(
    ctx: Weak<ServiceCtx<L>>,
    mut rx: mpsc::UnboundedReceiver<(Millis, String)>,
    sweep_every: Duration,
    hold: Arc<Hold>,
) {
    let mut heap: BinaryHeap<Reverse<(Millis, String)>> = BinaryHeap::new();
    // The first sweep one period from now, not at once: the task may run
    // before the service that spawned it is fully built.
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + sweep_every, sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = heap.peek().map(|Reverse((d, _))| *d);
        let sleep = match next {
            Some(d) => Duration::from_millis((d - now_millis()).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(t) => {
                    heap.push(Reverse(t));
                    while let Ok(t) = rx.try_recv() {
                        heap.push(Reverse(t));
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep(sleep), if next.is_some() => {
                // `None` while the service is still being built (this task
                // can run before `Arc::new_cyclic` returns) or being dropped;
                // the task ends when the service drops the sender (`rx`
                // closes), never here: ending here once left a service
                // without timers or passivation for its whole life.
                let Some(ctx) = ctx.upgrade() else { continue };
                let now = now_millis();
                hold.clear_if_over(now);
                // Held timers wait for the hold's end (pushed back, they sort
                // after every due one; extended, it pushes them again).
                let until = hold.until.load(SeqCst);
                let mut held = Vec::new();
                while heap.peek().is_some_and(|Reverse((d, _))| *d <= now) {
                    if let Some(Reverse((_, entity))) = heap.pop() {
                        if hold.holds(&entity, now) {
                            held.push(Reverse((until, entity)));
                        } else if let Err(e) = ctx.send(&entity, EntityMsg::Timer, true) {
                            tracing::warn!(entity, error = %e, "timer could not be delivered; recovery re-arms it");
                        }
                    }
                }
                heap.extend(held);
            }
            _ = sweep.tick() => {
                let Some(ctx) = ctx.upgrade() else { continue }; // as above
                hold.clear_if_over(now_millis());
                ctx.sweep_idle();
            }
        }
    }
}

#[cfg(test)]
mod hold_tests {
    use super::Hold;

    #[test]
    fn only_the_held_entities_wait_and_only_while_the_hold_lasts() {
        let h = Hold::default();
        h.add(["s-1".to_owned(), "s-2".to_owned()], 1_000);
        assert!(h.holds("s-1", 999));
        assert!(!h.holds("s-3", 999), "a saga started later is not held");
        assert!(!h.holds("s-1", 1_000), "the hold is over at its end");
        // Extended: held again, until the new end.
        h.add([], 2_000);
        assert!(h.holds("s-2", 1_500));
    }

    #[test]
    fn a_released_entity_waits_no_more() {
        let h = Hold::default();
        h.add(["s-1".to_owned(), "s-2".to_owned()], 1_000);
        h.release("s-1");
        assert!(!h.holds("s-1", 10));
        assert!(h.holds("s-2", 10));
        h.release("s-2");
        assert_eq!(h.count.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn the_set_is_forgotten_once_the_hold_is_over() {
        let h = Hold::default();
        h.add(["s-1".to_owned()], 1_000);
        h.clear_if_over(999);
        assert!(h.holds("s-1", 999), "not over yet");
        h.clear_if_over(1_000);
        assert_eq!(h.count.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(h.entities().is_empty());
        // A hold made afterwards starts from nothing.
        h.add(["s-2".to_owned()], 3_000);
        assert!(!h.holds("s-1", 2_000));
        assert!(h.holds("s-2", 2_000));
    }

    #[test]
    fn the_set_is_kept_past_the_end_while_the_hold_may_be_extended() {
        let h = Hold::default();
        h.add(["s-1".to_owned(), "s-2".to_owned()], 1_000);
        h.extended.store(true, std::sync::atomic::Ordering::SeqCst);
        // The extension comes late: the set is kept, and releases counted.
        h.clear_if_over(1_500);
        h.release("s-1");
        h.add([], 4_000);
        assert!(!h.holds("s-1", 2_000));
        assert!(h.holds("s-2", 2_000));
        h.extended.store(false, std::sync::atomic::Ordering::SeqCst);
        h.clear_if_over(4_000);
        assert_eq!(h.count.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
