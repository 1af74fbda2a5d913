//! The timer service: one task per service holds every armed deadline in a
//! heap and, when one is due, sends `Timer` to its entity through the
//! registry (activating it if it was passivated). It also sweeps the live
//! actors for passivation. One task per service instead of one per timer or
//! per actor keeps spawns off the hot path.
//!
//! The same task activates entities parked by the registry under memory
//! pressure (`ServiceCtx::unpark`), every [`HOLD_RETRY`] while any wait.
//!
//! A due timer activates its entity only while the service has fewer live
//! actors than `actors.max_live`; otherwise it waits (checked
//! again every [`HOLD_RETRY`]), so mass expiry cannot spawn an actor per
//! saga at once. Timers for live actors are never held.
//!
//! Timers are not durable here: deadlines are part of each saga's durable
//! state, and start-up recovery re-arms them (a deadline that passed during a
//! crash fires at once). A duplicate or stale timer is harmless: the saga acts
//! only when its current deadline has passed.

use super::entity::{now_millis, EntityMsg, Logic, ServiceCtx};
use crate::domain::Millis;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often held timers are retried while the service is at its cap.
pub const HOLD_RETRY: Duration = Duration::from_millis(20);

enum Cmd {
    Arm(Millis, String),
    /// Room may have freed up for parked entities.
    Unpark,
}

/// Arms timers of one service.
pub struct TimerWheel {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl TimerWheel {
    /// Starts the wheel of a service; it stops when the service is dropped.
    pub fn start<L: Logic>(ctx: Weak<ServiceCtx<L>>, sweep_every: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(ctx, rx, sweep_every));
        Self { tx }
    }

    /// Delivers `Timer` to `entity` at `deadline` (ms since the epoch).
    pub fn arm(&self, entity: &str, deadline: Millis) {
        let _ = self.tx.send(Cmd::Arm(deadline, entity.to_owned()));
    }

    /// Asks the task to activate parked entities now (an actor passivated).
    pub fn unpark_soon(&self) {
        let _ = self.tx.send(Cmd::Unpark);
    }
}

async fn run<L: Logic>(
    ctx: Weak<ServiceCtx<L>>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    sweep_every: Duration,
) {
    let mut heap: BinaryHeap<Reverse<(Millis, String)>> = BinaryHeap::new();
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let parked = ctx.upgrade().is_some_and(|c| c.has_parked());
        let next = heap.peek().map(|Reverse((d, _))| *d);
        let sleep = match next {
            Some(d) => Duration::from_millis((d - now_millis()).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            msg = rx.recv() => {
                let Some(first) = msg else { return };
                let mut unpark = false;
                let mut next = Some(first);
                while let Some(cmd) = next {
                    match cmd {
                        Cmd::Arm(d, e) => heap.push(Reverse((d, e))),
                        Cmd::Unpark => unpark = true,
                    }
                    next = rx.try_recv().ok();
                }
                if unpark {
                    let Some(ctx) = ctx.upgrade() else { return };
                    ctx.unpark();
                }
            }
            _ = tokio::time::sleep(sleep), if next.is_some() => {
                let Some(ctx) = ctx.upgrade() else { return };
                let now = now_millis();
                let cap = ctx.settings.actors.max_live.max(1);
                let mut held = Vec::new();
                while heap.peek().is_some_and(|Reverse((d, _))| *d <= now) {
                    let Some(Reverse((d, entity))) = heap.pop() else { break };
                    if ctx.active() >= cap && !ctx.is_live(&entity) {
                        held.push(Reverse((d.max(now) + HOLD_RETRY.as_millis() as Millis, entity)));
                        continue;
                    }
                    if let Err(e) = ctx.send(&entity, EntityMsg::Timer, true) {
                        tracing::warn!(entity, error = %e, "timer could not be delivered; recovery re-arms it");
                    }
                }
                heap.extend(held);
            }
            _ = tokio::time::sleep(HOLD_RETRY), if parked => {
                let Some(ctx) = ctx.upgrade() else { return };
                ctx.unpark();
            }
            _ = sweep.tick() => {
                let Some(ctx) = ctx.upgrade() else { return };
                ctx.sweep_idle();
            }
        }
    }
}
