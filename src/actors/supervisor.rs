//! Supervision: one supervisor per service restarts failed entity actors with
//! exponential backoff, at most `supervision.max_restarts` within
//! `supervision.window_ms` per entity, and escalates past that; the root
//! supervisor restarts a failed service supervisor once per window and
//! otherwise stops, which ends `serve` with an error (for systemd & co. to
//! restart; start-up recovery then resumes every entity).
//!
//! ractor's default `handle_supervisor_evt` stops the supervisor on any child
//! exit; both supervisors here override it.

use super::entity::{EntityMsg, Logic, ServiceCtx};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages of a service supervisor.
pub enum SupervisorMsg {
    /// Re-activate an entity after its restart backoff.
    Respawn(String),
}

/// Supervises every entity actor of one service.
pub struct ServiceSupervisor<L: Logic>(std::marker::PhantomData<fn() -> L>);

impl<L: Logic> ServiceSupervisor<L> {
    pub fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<L: Logic> Default for ServiceSupervisor<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Logic> Actor for ServiceSupervisor<L> {
    type Msg = SupervisorMsg;
    type State = Arc<ServiceCtx<L>>;
    type Arguments = Arc<ServiceCtx<L>>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.set_supervisor(myself.get_cell());
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Respawn(entity) => match ctx.send(&entity, EntityMsg::Wake, true) {
                // Shutting down: the entity resumes at the next start.
                Ok(()) | Err(super::entity::ActorError::NotRunning(_)) => {}
                Err(e) => return Err(e.into()),
            },
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let sup = &ctx.settings.supervision;
                let window = Duration::from_millis(sup.window_ms);
                let Some((entity, count)) = ctx.on_failed(cell.get_id(), window) else {
                    return Ok(());
                };
                metrics::counter!("durasaga_actor_restarts_total", "service" => L::SERVICE.name())
                    .increment(1);
                if count > sup.max_restarts {
                    tracing::error!(service = L::SERVICE.name(), entity, count, error = %err,
                        "entity failed too often; escalating");
                    return Err(format!(
                        "{} {entity} failed {count} times within {window:?}",
                        L::SERVICE.name()
                    )
                    .into());
                }
                let exp = count.saturating_sub(1).min(20);
                let backoff = sup
                    .backoff_base_ms
                    .saturating_mul(1 << exp)
                    .min(sup.backoff_max_ms);
                tracing::warn!(service = L::SERVICE.name(), entity, restart = count, backoff_ms = backoff, error = %err,
                    "entity actor failed; restarting it");
                myself.send_after(Duration::from_millis(backoff), move || {
                    SupervisorMsg::Respawn(entity)
                });
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => ctx.on_terminated(cell.get_id()),
            _ => {}
        }
        Ok(())
    }
}

/// Messages of the root supervisor.
pub enum RootMsg {}

/// Starts a service supervisor linked to the root.
pub type SpawnService = Box<
    dyn Fn(
            ractor::ActorCell,
        ) -> futures::future::BoxFuture<'static, Result<ractor::ActorId, String>>
        + Send
        + Sync,
>;

/// The root of the tree: restarts a failed service supervisor.
pub struct RootSupervisor;

pub struct RootState {
    spawners: Vec<(&'static str, SpawnService)>,
    /// Which spawner started each live service supervisor. Supervisors are
    /// unnamed: ractor's name registry is process-global, and two runtimes
    /// (tests) may live in one process.
    running: std::collections::HashMap<ractor::ActorId, usize>,
    restarts: Vec<Instant>,
    window: Duration,
    max_restarts: usize,
}

pub struct RootArgs {
    pub spawners: Vec<(&'static str, SpawnService)>,
    pub window: Duration,
    pub max_restarts: usize,
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut running = std::collections::HashMap::new();
        for (i, (name, spawn)) in args.spawners.iter().enumerate() {
            let id = spawn(myself.get_cell())
                .await
                .map_err(|e| format!("cannot start the {name} supervisor: {e}"))?;
            running.insert(id, i);
        }
        Ok(RootState {
            spawners: args.spawners,
            running,
            restarts: Vec::new(),
            window: args.window,
            max_restarts: args.max_restarts,
        })
    }

    async fn handle(
        &self,
        _m: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {}
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if why == "shutdown" {
            return Ok(());
        }
        st.restarts.retain(|t| t.elapsed() < st.window);
        st.restarts.push(Instant::now());
        if st.restarts.len() > st.max_restarts {
            tracing::error!(
                error = why,
                "a service supervisor failed too often; stopping durasaga"
            );
            myself.stop(Some(format!("escalated: {why}")));
            return Ok(());
        }
        let Some(i) = st.running.remove(&cell.get_id()) else {
            return Ok(());
        };
        let (name, spawn) = &st.spawners[i];
        tracing::warn!(
            supervisor = name,
            error = why,
            "service supervisor failed; restarting it"
        );
        let id = spawn(myself.get_cell()).await?;
        st.running.insert(id, i);
        Ok(())
    }
}
