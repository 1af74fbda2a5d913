//! The timer service: one task per service holds every armed deadline in a
//! heap and, when one is due, sends `Timer` to its entity through the
//! registry (activating it if it was passivated). It also sweeps the live
//! actors for passivation. One task per service instead of one per timer or
//! per actor keeps spawns off the hot path.
//!
//! Timers are not durable here: deadlines are part of each saga's durable
//! state, and start-up recovery re-arms them. When it finds sagas in flight,
//! recovery also holds the saga service's timers until one reply window after
//! it resumes them (see [`TimerWheel::hold_until`]), longer while messages
//! queued for the services are being handled
//! (`Runtime::hold_timers_while_backlog_drains`): it resends every outbox,
//! so a deadline that passed during the crash fires only if the resent message
//! got no reply either. (A saga that was in backoff resends when the hold
//! ends, later than its deadline.) A duplicate or stale timer is harmless: the saga acts only when
//! its current deadline has passed.

use super::entity::{now_millis, EntityMsg, Logic, ServiceCtx};
use crate::domain::Millis;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Arms timers of one service.
pub struct TimerWheel {
    tx: mpsc::UnboundedSender<(Millis, String)>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// No timer fires before this (ms since the epoch; see [`Self::hold_until`]).
    not_before: Arc<AtomicI64>,
}

impl TimerWheel {
    /// Starts the wheel of a service; it stops when the service is dropped.
    pub fn start<L: Logic>(ctx: Weak<ServiceCtx<L>>, sweep_every: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let not_before = Arc::new(AtomicI64::new(0));
        let task = tokio::spawn(run(ctx, rx, sweep_every, not_before.clone()));
        Self {
            tx,
            task: Mutex::new(Some(task)),
            not_before,
        }
    }

    /// The wheel's task, for shutdown to stop and await (once).
    pub fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().ok().and_then(|mut t| t.take())
    }

    /// Delivers `Timer` to `entity` at `deadline` (ms since the epoch), or
    /// when the hold ends if that is later.
    pub fn arm(&self, entity: &str, deadline: Millis) {
        let at = deadline.max(self.not_before.load(SeqCst));
        let _ = self.tx.send((at, entity.to_owned()));
    }

    /// Holds every timer armed from now on until `t`. Start-up recovery of
    /// the saga service, when it finds sagas in flight, sets it one reply
    /// window ahead: the outboxes it resends are as good as
    /// sent now, and a saga must not time out on a message whose receiver is
    /// still working through the backlog the crash left (a large backlog
    /// otherwise made every saga time out and retry at once).
    ///
    /// A hold may be extended while it lasts (see
    /// `Runtime::hold_timers_while_backlog_drains`): timers armed before the
    /// extension wait for its end too.
    pub fn hold_until(&self, t: Millis) {
        self.not_before.fetch_max(t, SeqCst);
    }

    /// When the current hold ends (ms since the epoch; in the past if none).
    pub fn held_until(&self) -> Millis {
        self.not_before.load(SeqCst)
    }
}

async fn run<L: Logic>(
    ctx: Weak<ServiceCtx<L>>,
    mut rx: mpsc::UnboundedReceiver<(Millis, String)>,
    sweep_every: Duration,
    not_before: Arc<AtomicI64>,
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
                // A hold extended after these timers were armed: they wait
                // for its end (pushed back, they sort after every due one).
                let held = not_before.load(SeqCst);
                if held > now {
                    while let Some(Reverse((d, entity))) = heap.pop() {
                        if d > now {
                            heap.push(Reverse((d, entity)));
                            break;
                        }
                        heap.push(Reverse((held, entity)));
                    }
                    continue;
                }
                while heap.peek().is_some_and(|Reverse((d, _))| *d <= now) {
                    if let Some(Reverse((_, entity))) = heap.pop() {
                        if let Err(e) = ctx.send(&entity, EntityMsg::Timer, true) {
                            tracing::warn!(entity, error = %e, "timer could not be delivered; recovery re-arms it");
                        }
                    }
                }
            }
            _ = sweep.tick() => {
                let Some(ctx) = ctx.upgrade() else { continue }; // as above
                ctx.sweep_idle();
            }
        }
    }
}
