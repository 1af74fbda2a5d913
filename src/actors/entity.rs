//! The generic entity actor: one ractor actor per customer, order or saga,
//! activated on demand and passivated when idle, whose state and mailbox live
//! in sled.
//!
//! An actor is a thin shell around a [`Logic`]: it reads the head of its
//! mailbox (the service's in-memory queue for the entity, or, for redelivered
//! dead letters and older data, its durable inbox), calls the pure logic,
//! commits state + outbox + inbox cursor + dedup window in one single-key
//! write (after the versioned parts the logic moved out, see
//! `persistence::parts`), waits for the flusher, and only then hands the outbox to the relay,
//! acknowledges what it handled to the senders, and answers callers.
//!
//! Invariants: at most one live actor per entity (the [`Registry`] is the only
//! spawner, and passivation removes an actor from it only when no message sent
//! through it is still queued); nothing leaves an actor before the write behind
//! it is durable; a queued envelope leaves the queue only once the commit that
//! handled it is durable (so a failed actor's successor finds it).

use super::relay::Relay;
use crate::config::Settings;
use crate::domain::{Address, Envelope, Millis, Payload, Service, SCHEMA_VERSION};
use crate::persistence::deadletters::DeadLetter;
use crate::persistence::{EntityRecord, ListTerm, PartWrite, ServiceDb};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Milliseconds since the epoch, from the system clock (actors are the impure shell).
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh envelope id (UUIDv7).
pub fn new_envelope_id() -> u128 {
    uuid::Uuid::now_v7().as_u128()
}

/// What a handler sees besides its state: the time, its own address, a jitter
/// draw, where to put the messages it sends, and the versioned parts of its
/// state it moved out of the record (see `persistence::parts`).
pub struct Cx {
    pub now: Millis,
    pub me: Address,
    pub jitter: f64,
    pub out: Vec<Envelope>,
    pub parts: Vec<PartWrite>,
}

impl Cx {
    fn new(me: Address) -> Self {
        Self {
            now: now_millis(),
            me,
            jitter: rand::random::<f64>(),
            out: Vec::new(),
            parts: Vec::new(),
        }
    }

    /// Queues a message; it is committed with the state and sent after the flush.
    pub fn send(
        &mut self,
        to: Address,
        payload: Payload,
        correlation: &str,
        reply_to: Option<Address>,
        attempt: u32,
    ) {
        self.out.push(Envelope {
            id: new_envelope_id(),
            kind: payload.kind().to_owned(),
            schema_version: SCHEMA_VERSION,
            from: self.me.clone(),
            to,
            correlation: correlation.to_owned(),
            reply_to,
            attempt,
            sent_at: self.now,
            payload,
        });
    }

    /// Answers `env` (to its `reply_to`, or its sender).
    pub fn reply(&mut self, env: &Envelope, payload: Payload) {
        let to = env.reply_to.clone().unwrap_or_else(|| env.from.clone());
        self.send(to, payload, &env.correlation.clone(), None, env.attempt);
    }
}

/// The business behaviour of one kind of entity. Implementations only call
/// pure domain functions; they never do I/O.
pub trait Logic: Send + Sync + Sized + 'static {
    type State: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// Direct requests from the HTTP layer (creation, operator actions).
    type Command: Send + 'static;
    type Reply: Send + 'static;
    const SERVICE: Service;

    /// Handles one inbox message (already deduplicated).
    fn on_envelope(&self, cx: &mut Cx, id: &str, state: &mut Option<Self::State>, env: &Envelope);
    /// Handles a direct command.
    fn on_command(
        &self,
        cx: &mut Cx,
        id: &str,
        state: &mut Option<Self::State>,
        cmd: Self::Command,
    ) -> Self::Reply;
    /// Handles a timer; returns whether the state changed.
    fn on_timer(&self, _cx: &mut Cx, _id: &str, _state: &mut Option<Self::State>) -> bool {
        false
    }
    /// When the next timer must fire.
    fn deadline(&self, _state: &Option<Self::State>) -> Option<Millis> {
        None
    }
    /// Whether the entity waits for a reply whose timeout recovery may hold
    /// (see `TimerWheel::hold`): not when its next timer is its own doing,
    /// such as the end of a backoff, which only the timer can move on.
    fn awaits_reply(&self, state: &Option<Self::State>) -> bool {
        self.deadline(state).is_some()
    }
    /// Whether the entity is done for now (a terminal saga, a settled order):
    /// it is passivated as soon as its outbox is delivered.
    fn finished(&self, _state: &Option<Self::State>) -> bool {
        false
    }
    /// Whether start-up recovery must visit this record: it has messages to
    /// resend or a deadline to re-arm. Such entities are kept in the
    /// database's `active` index, so recovery never scans the rest.
    fn needs_recovery(&self, rec: &EntityRecord<Self::State>) -> bool {
        !rec.outbox.is_empty() || self.deadline(&rec.state).is_some()
    }
    /// How long after recovery resumes the saga service the timers of the
    /// sagas of the recovered work are held at least (see `TimerWheel::hold`):
    /// a saga's reply window. Only the saga service's is used; 0 elsewhere.
    fn recovery_grace(&self) -> Millis {
        0
    }
    /// How long (ms) an entity lets queued messages gather before it
    /// handles them in one commit; 0 for none (see `drain_inbox`).
    fn linger_ms(&self, _settings: &Settings) -> u64 {
        0
    }
    /// Loads from storage what handling `env` needs besides the record
    /// (pieces of the state kept apart, see `persistence::parts`).
    fn prefetch(
        &self,
        _db: &ServiceDb,
        _id: &str,
        _state: &mut Option<Self::State>,
        _env: &Envelope,
    ) -> Result<(), crate::persistence::StoreError> {
        Ok(())
    }
    /// Called right after a commit's record insert: may store pieces of the
    /// state apart and drop them from memory (see `persistence::parts`).
    fn after_save(
        &self,
        _db: &ServiceDb,
        _id: &str,
        _state: &mut Option<Self::State>,
    ) -> Result<(), crate::persistence::StoreError> {
        Ok(())
    }
    /// Whether this kind of entity has list terms (see [`Self::list_terms`]).
    const LISTED: bool = false;
    /// The field values this state is listed under, for filtered lists (see
    /// `persistence::lists`). Pure: the same state gives the same terms.
    fn list_terms(&self, _state: &Option<Self::State>) -> Vec<ListTerm> {
        Vec::new()
    }
    /// Called after every durable commit (notifications).
    fn after_commit(&self, _id: &str, _state: &Option<Self::State>) {}
    /// A short description for logs when an injected fault should fire.
    fn inject_fault(&self, _env: &Envelope) -> bool {
        false
    }
}

/// Messages an entity actor handles.
pub enum EntityMsg<L: Logic> {
    /// New messages for the entity: queued, or in its durable inbox.
    Wake,
    /// These outbox envelopes were handled by their receivers, durably.
    Delivered(Vec<u128>),
    /// A direct command; answered after its commit is durable.
    Command(L::Command, RpcReplyPort<Result<L::Reply, String>>),
    /// A deadline passed (sent by the service's timer wheel).
    Timer,
    /// Passivation check (sent by the idle sweep, not through the registry).
    IdleCheck,
}

impl<L: Logic> EntityMsg<L> {
    fn via_registry(&self) -> bool {
        !matches!(self, EntityMsg::IdleCheck)
    }
}

/// Why a message could not be handed to an entity.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("the {0} service is not running")]
    NotRunning(&'static str),
    #[error("could not start an actor: {0}")]
    Spawn(String),
}

struct Slot<L: Logic> {
    actor: ActorRef<EntityMsg<L>>,
    sent: u64,
}

struct Failures {
    count: u32,
    since: Instant,
}

struct RegistryInner<L: Logic> {
    slots: HashMap<String, Slot<L>>,
    by_actor: HashMap<ActorId, String>,
    failures: HashMap<String, Failures>,
}

/// Everything the actors of one service share.
pub struct ServiceCtx<L: Logic> {
    pub logic: L,
    pub db: ServiceDb,
    pub relay: Relay,
    pub settings: Arc<Settings>,
    supervisor: Mutex<Option<ActorCell>>,
    reg: Mutex<RegistryInner<L>>,
    /// Pending durable inbox entries per entity, as far as this process knows.
    depth: Mutex<HashMap<String, u64>>,
    /// Envelopes handed over by the relays and not yet handled durably, per
    /// entity, in hand-over order (see `relay`).
    queue: Mutex<HashMap<String, VecDeque<Arc<Envelope>>>>,
    /// Queued envelopes and inbox entries handled durably since start (see
    /// [`Self::handled`]).
    handled: AtomicU64,
    pub restarts: AtomicU64,
    /// Set when shutdown begins: no new actor is spawned after it.
    closed: AtomicBool,
    pub(crate) timers: super::timers::TimerWheel,
}

/// The registry is the part of [`ServiceCtx`] that spawns and finds actors.
pub type Registry<L> = ServiceCtx<L>;

impl<L: Logic> ServiceCtx<L> {
    pub fn new(logic: L, db: ServiceDb, relay: Relay, settings: Arc<Settings>) -> Arc<Self> {
        let sweep = Duration::from_millis(settings.actors.idle_timeout_ms.max(20) / 2);
        Arc::new_cyclic(|me| Self {
            timers: super::timers::TimerWheel::start(me.clone(), sweep),
            logic,
            db,
            relay,
            settings,
            supervisor: Mutex::new(None),
            reg: Mutex::new(RegistryInner {
                slots: HashMap::new(),
                by_actor: HashMap::new(),
                failures: HashMap::new(),
            }),
            depth: Mutex::new(HashMap::new()),
            queue: Mutex::new(HashMap::new()),
            handled: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// The service's timer task, for shutdown to stop and await.
    pub fn take_tasks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.timers.take_task().into_iter().collect()
    }

    /// Refuses to spawn actors from now on (shutdown): live ones still drain
    /// what is queued for them, and a message for an entity without an actor
    /// waits for the next start (it is in its sender's outbox or durable inbox).
    pub fn close(&self) {
        self.closed.store(true, SeqCst);
    }

    /// Sets the supervisor that new entity actors are linked to.
    pub fn set_supervisor(&self, cell: ActorCell) {
        *self.supervisor.lock().unwrap_or_else(|p| p.into_inner()) = Some(cell);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner<L>> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `msg` to `entity`, activating it if `activate` (otherwise a
    /// message for an inactive entity is dropped).
    pub fn send(
        self: &Arc<Self>,
        entity: &str,
        msg: EntityMsg<L>,
        activate: bool,
    ) -> Result<(), ActorError> {
        debug_assert!(msg.via_registry());
        let mut g = self.lock();
        let mut msg = msg;
        for _ in 0..2 {
            if !g.slots.contains_key(entity) {
                if !activate {
                    return Ok(());
                }
                self.spawn_locked(&mut g, entity)?;
            }
            let Some(slot) = g.slots.get_mut(entity) else {
                continue;
            };
            slot.sent += 1;
            match slot.actor.send_message(msg) {
                Ok(()) => return Ok(()),
                Err(ractor::MessagingErr::SendErr(m)) => {
                    // The actor died and its supervisor has not cleaned up
                    // yet: start a successor now, but leave the dead actor in
                    // `by_actor` so that `on_failed` still counts its failure
                    // (uncounted, a message that keeps failing would never
                    // reach `mailbox.max_attempts` on a busy entity).
                    msg = m;
                    g.slots.remove(entity);
                }
                Err(e) => return Err(ActorError::Spawn(e.to_string())),
            }
        }
        Err(ActorError::Spawn(format!("could not deliver to {entity}")))
    }

    fn spawn_locked(
        self: &Arc<Self>,
        g: &mut RegistryInner<L>,
        entity: &str,
    ) -> Result<(), ActorError> {
        if self.closed.load(SeqCst) {
            return Err(ActorError::NotRunning(L::SERVICE.name()));
        }
        let sup = self
            .supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ActorError::NotRunning(L::SERVICE.name()))?;
        let received = Arc::new(AtomicU64::new(0));
        let failures = g.failures.get(entity).map(|f| f.count).unwrap_or(0);
        let args = EntityArgs {
            ctx: self.clone(),
            id: entity.to_owned(),
            failures,
            received: received.clone(),
        };
        let (actor, _join) = ractor::ActorRuntime::spawn_linked_instant(
            None,
            EntityActor::<L>(std::marker::PhantomData),
            args,
            sup,
        )
        .map_err(|e| ActorError::Spawn(e.to_string()))?;
        g.by_actor.insert(actor.get_id(), entity.to_owned());
        g.slots.insert(entity.to_owned(), Slot { actor, sent: 0 });
        Ok(())
    }

    /// Asks every live actor whether it has been idle long enough to passivate.
    pub fn sweep_idle(&self) {
        let actors: Vec<ActorRef<EntityMsg<L>>> = self
            .lock()
            .slots
            .values()
            .map(|s| s.actor.clone())
            .collect();
        for a in actors {
            let _ = a.send_message(EntityMsg::IdleCheck);
        }
    }

    /// Called by the supervisor when an entity actor failed: forgets it and
    /// returns the entity id and its failure count in the current window.
    pub fn on_failed(&self, actor: ActorId, window: Duration) -> Option<(String, u32)> {
        let mut g = self.lock();
        let entity = g.by_actor.remove(&actor)?;
        if g.slots.get(&entity).map(|s| s.actor.get_id()) == Some(actor) {
            g.slots.remove(&entity);
        }
        let f = g.failures.entry(entity.clone()).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        if f.since.elapsed() > window {
            *f = Failures {
                count: 0,
                since: Instant::now(),
            };
        }
        f.count += 1;
        let count = f.count;
        self.restarts.fetch_add(1, SeqCst);
        Some((entity, count))
    }

    /// Called by the supervisor when an entity actor stopped normally.
    pub fn on_terminated(&self, actor: ActorId) {
        let mut g = self.lock();
        if let Some(entity) = g.by_actor.remove(&actor) {
            if g.slots.get(&entity).map(|s| s.actor.get_id()) == Some(actor) {
                g.slots.remove(&entity);
            }
        }
    }

    fn clear_failures(&self, entity: &str) {
        self.lock().failures.remove(entity);
    }

    /// Removes `me` from the registry if nothing sent through it is queued.
    fn try_passivate(&self, entity: &str, me: ActorId, received: u64) -> bool {
        let mut g = self.lock();
        match g.slots.get(entity) {
            Some(s) if s.actor.get_id() == me && s.sent == received => {
                g.slots.remove(entity);
                g.by_actor.remove(&me);
                true
            }
            _ => false,
        }
    }

    /// Number of live entity actors.
    pub fn active(&self) -> usize {
        self.lock().slots.len()
    }

    /// Queues envelopes for `entity` (the relay wakes it afterwards).
    pub fn enqueue(&self, entity: &str, envs: Vec<Envelope>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.entry(entity.to_owned())
            .or_default()
            .extend(envs.into_iter().map(Arc::new));
    }

    /// Up to `limit` queued envelopes of `entity`, oldest first, left queued.
    fn queued(&self, entity: &str, limit: usize) -> Vec<Arc<Envelope>> {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.get(entity)
            .map(|d| d.iter().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Drops the `n` oldest queued envelopes of `entity` (handled durably).
    fn dequeue(&self, entity: &str, n: usize) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = q.get_mut(entity) {
            let n = n.min(d.len());
            d.drain(..n);
            self.handled.fetch_add(n as u64, SeqCst);
            if d.is_empty() {
                q.remove(entity);
            }
        }
    }

    fn queue_len(&self, entity: &str) -> u64 {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.get(entity).map(|d| d.len() as u64).unwrap_or(0)
    }

    /// Records that `n` inbox entries were appended for `entity`.
    pub fn add_depth(&self, entity: &str, n: u64) {
        let mut d = self.depth.lock().unwrap_or_else(|p| p.into_inner());
        *d.entry(entity.to_owned()).or_insert(0) += n;
    }

    fn sub_depth(&self, entity: &str, n: u64) {
        let mut d = self.depth.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = d.get_mut(entity) {
            self.handled.fetch_add(n.min(*v), SeqCst);
            *v = v.saturating_sub(n);
            if *v == 0 {
                d.remove(entity);
            }
        }
    }

    /// Pending messages of `entity` known to this process: queued ones and
    /// durable inbox entries.
    pub fn depth_of(&self, entity: &str) -> u64 {
        self.queue_len(entity) + self.inbox_depth_of(entity)
    }

    /// Pending durable inbox entries of `entity` known to this process.
    fn inbox_depth_of(&self, entity: &str) -> u64 {
        self.depth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(entity)
            .copied()
            .unwrap_or(0)
    }

    /// How many queued envelopes and inbox entries this service has handled
    /// durably since start: grows while it works through a backlog.
    pub fn handled(&self) -> u64 {
        self.handled.load(SeqCst)
    }

    /// Sum of all pending messages known to this process.
    pub fn total_depth(&self) -> u64 {
        let queued: u64 = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|d| d.len() as u64)
            .sum();
        let inbox: u64 = self
            .depth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        queued + inbox
    }

    /// Asks every live actor to stop and waits (bounded) until they have.
    pub async fn stop_all(&self, timeout: Duration) {
        let actors: Vec<ActorRef<EntityMsg<L>>> = self
            .lock()
            .slots
            .values()
            .map(|s| s.actor.clone())
            .collect();
        // Drain: queued deliveries are still handled (and outboxes trimmed in
        // post_stop), then each actor stops; past the deadline, stop at once.
        for a in &actors {
            if a.drain().is_err() {
                a.stop(Some("shutdown".into()));
            }
        }
        let deadline = Instant::now() + timeout;
        for a in actors {
            while !matches!(a.get_status(), ractor::ActorStatus::Stopped) {
                if Instant::now() >= deadline {
                    a.stop(Some("shutdown".into()));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// What the registry gives a new entity actor.
pub struct EntityArgs<L: Logic> {
    ctx: Arc<ServiceCtx<L>>,
    id: String,
    failures: u32,
    received: Arc<AtomicU64>,
}

/// The actor type for entities of logic `L`.
pub struct EntityActor<L: Logic>(std::marker::PhantomData<fn() -> L>);

/// An entity actor's in-memory state.
pub struct EntityState<L: Logic> {
    ctx: Arc<ServiceCtx<L>>,
    id: String,
    me: Address,
    rec: Option<EntityRecord<L::State>>,
    delivered: HashSet<u128>,
    failures: u32,
    received: Arc<AtomicU64>,
    last_active: Instant,
    timer_for: Option<Millis>,
    /// Whether the entity is in the `active` index (read with the record).
    marked: bool,
    /// Consumed inbox entries not yet removed (removed by key, in batches).
    consumed: Vec<u64>,
    /// The list terms of the loaded or last committed state.
    terms: Vec<ListTerm>,
}

impl<L: Logic> Actor for EntityActor<L> {
    type Msg = EntityMsg<L>;
    type State = EntityState<L>;
    type Arguments = EntityArgs<L>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EntityArgs<L>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(EntityState {
            me: Address {
                service: L::SERVICE,
                entity: args.id.clone(),
            },
            ctx: args.ctx,
            id: args.id,
            rec: None,
            delivered: HashSet::new(),
            failures: args.failures,
            received: args.received,
            last_active: Instant::now(),
            timer_for: None,
            marked: false,
            consumed: Vec::new(),
            terms: Vec::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Known deliveries are written back so a restart does not resend them.
        tracing::debug!(service = L::SERVICE.name(), entity = %st.id, delivered = st.delivered.len(),
            outbox = st.rec.as_ref().map(|r| r.outbox.len()).unwrap_or(0), "actor stopped");
        passivate(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if msg.via_registry() {
            st.received.fetch_add(1, SeqCst);
            st.last_active = Instant::now();
        }
        if st.rec.is_none() {
            let (rec, marked) = st.ctx.db.load_indexed::<L::State>(&st.id)?;
            if st.failures > 0 {
                // Restarted after a failure: the failed instance may have
                // consumed entries it did not get to remove.
                st.ctx.db.inbox_remove_consumed(&st.id, rec.inbox_cursor)?;
            }
            st.terms = st.ctx.logic.list_terms(&rec.state);
            st.rec = Some(rec);
            st.marked = marked;
        }
        match msg {
            EntityMsg::Wake => drain_inbox(st).await?,
            EntityMsg::Delivered(ids) => st.delivered.extend(ids),
            EntityMsg::Command(cmd, reply) => {
                let mut cx = Cx::new(st.me.clone());
                let rec = st.rec.as_mut().ok_or("record not loaded")?;
                let answer = st
                    .ctx
                    .logic
                    .on_command(&mut cx, &st.id, &mut rec.state, cmd);
                match commit(st, cx.out, cx.parts, Acks::new()).await {
                    Ok(()) => {
                        let _ = reply.send(Ok(answer));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        return Err(e);
                    }
                }
            }
            EntityMsg::Timer => {
                st.timer_for = None;
                let mut cx = Cx::new(st.me.clone());
                let rec = st.rec.as_mut().ok_or("record not loaded")?;
                if st.ctx.logic.on_timer(&mut cx, &st.id, &mut rec.state) {
                    commit(st, cx.out, cx.parts, Acks::new()).await?;
                }
            }
            EntityMsg::IdleCheck => {
                // Entities with a pending deadline may passivate too: the
                // timer wheel re-activates them when it is due.
                let idle = Duration::from_millis(st.ctx.settings.actors.idle_timeout_ms);
                if st.last_active.elapsed() >= idle {
                    // Written before leaving the registry, see below.
                    passivate(st)?;
                    if st
                        .ctx
                        .try_passivate(&st.id, myself.get_id(), st.received.load(SeqCst))
                    {
                        myself.stop(None);
                        return Ok(());
                    }
                }
            }
        }
        arm_timer(st);
        // A finished entity whose messages are all delivered has nothing left
        // to do: passivate now instead of holding memory until the idle sweep.
        let done = st.rec.as_ref().is_some_and(|r| {
            st.ctx.logic.finished(&r.state) && r.outbox.iter().all(|e| st.delivered.contains(&e.id))
        });
        // The passivation writes (trimmed outbox, leaving the recovery index)
        // come *before* leaving the registry: once out of it, a new actor for
        // the entity may start at once and read the record, and a write of
        // ours after that read would undo its view (e.g. unmark an entity the
        // new actor believes marked, so a crash would skip its next outbox).
        // If a message arrived meanwhile, this actor just carries on.
        if done {
            passivate(st)?;
            if st
                .ctx
                .try_passivate(&st.id, myself.get_id(), st.received.load(SeqCst))
            {
                myself.stop(None);
            }
        }
        Ok(())
    }
}

/// On passivation: once everything the entity sent is delivered and it has
/// no deadline, it leaves the recovery index (the delivered envelopes still
/// in its stored outbox are dropped when it is next loaded: see
/// `ServiceDb::load_indexed`). Otherwise a trimmed record is written if
/// deliveries are known, so the next start-up does not redeliver them.
/// Neither write is flushed: losing it only causes a harmless redelivery.
/// Consumed inbox entries are removed too.
fn passivate<L: Logic>(st: &mut EntityState<L>) -> Result<(), ActorProcessingErr> {
    if let Some(rec) = st.rec.as_mut() {
        let trimmed = rec.trim_outbox(&st.delivered);
        if !st.ctx.logic.needs_recovery(rec) {
            if st.marked {
                st.ctx.db.unmark_active(&st.id)?;
                st.marked = false;
            }
        } else if trimmed {
            st.ctx.db.save(&st.id, rec)?;
        }
        remove_consumed(st, 0)?;
    }
    Ok(())
}

/// Removes consumed inbox entries once more than `slack` have accumulated
/// (done in batches, not after every drain; by key, not by a range scan).
fn remove_consumed<L: Logic>(
    st: &mut EntityState<L>,
    slack: usize,
) -> Result<(), ActorProcessingErr> {
    if st.consumed.len() > slack {
        st.ctx.db.inbox_remove(&st.id, &st.consumed)?;
        st.consumed.clear();
    }
    Ok(())
}

fn arm_timer<L: Logic>(st: &mut EntityState<L>) {
    let Some(rec) = st.rec.as_ref() else { return };
    if !st.ctx.logic.awaits_reply(&rec.state) {
        // Waiting for no reply (durably: this runs after the commit): a saga
        // recovery held leaves the hold.
        st.ctx.timers.release(&st.id);
    }
    let Some(deadline) = st.ctx.logic.deadline(&rec.state) else {
        return;
    };
    if st.timer_for == Some(deadline) {
        return;
    }
    st.timer_for = Some(deadline);
    st.ctx.timers.arm(&st.id, deadline);
}

/// Handles every pending message, a batch per commit: durable inbox entries
/// first (redelivered dead letters, older data), then the queue.
async fn drain_inbox<L: Logic>(st: &mut EntityState<L>) -> Result<(), ActorProcessingErr> {
    // Let more messages gather so one commit covers them (the view's
    // `mailbox.view_linger_ms`); they stay in their senders' outboxes
    // meanwhile, so waiting changes nothing a crash could lose.
    // Not once shutdown has begun: each queued wake-up would linger again.
    let linger = st.ctx.logic.linger_ms(&st.ctx.settings);
    if linger > 0 && st.failures == 0 && !st.ctx.closed.load(SeqCst) {
        let queued = st.ctx.queue_len(&st.id) as usize;
        if queued > 0 && queued < st.ctx.settings.mailbox.batch {
            tokio::time::sleep(Duration::from_millis(linger)).await;
        }
    }
    loop {
        // After a failure, handle one message at a time so the poisoned one is known.
        let batch = if st.failures > 0 {
            1
        } else {
            st.ctx.settings.mailbox.batch
        };
        // Every append is counted before it happens (`ServiceCtx::add_depth`),
        // so with nothing counted there is nothing to read.
        if st.ctx.inbox_depth_of(&st.id) > 0 && drain_durable(st, batch).await? {
            continue;
        }
        let pending = st.ctx.queued(&st.id, batch);
        if pending.is_empty() {
            return Ok(());
        }
        let mut cx = Cx::new(st.me.clone());
        let mut deadletters = Vec::new();
        let mut acks = Acks::new();
        for env in &pending {
            consume(st, &mut cx, env, &mut deadletters)?;
            acks.entry((env.from.service, env.from.entity.clone()))
                .or_default()
                .push(env.id);
        }
        put_deadletters(st, &deadletters)?;
        commit(st, cx.out, cx.parts, acks).await?;
        st.ctx.dequeue(&st.id, pending.len());
        handled_without_failure(st);
    }
}

/// Handles one batch of durable inbox entries; false if there was none.
async fn drain_durable<L: Logic>(
    st: &mut EntityState<L>,
    batch: usize,
) -> Result<bool, ActorProcessingErr> {
    let cursor = st.rec.as_ref().map(|r| r.inbox_cursor).unwrap_or(0);
    let pending = st.ctx.db.inbox_pending(&st.id, cursor, batch)?;
    if pending.is_empty() {
        return Ok(false);
    }
    let mut cx = Cx::new(st.me.clone());
    let n = pending.len() as u64;
    let mut deadletters = Vec::new();
    let mut seqs = Vec::with_capacity(pending.len());
    for (seq, env) in pending {
        st.rec.as_mut().ok_or("record not loaded")?.inbox_cursor = seq;
        seqs.push(seq);
        match env {
            Err(error) => deadletters.push(DeadLetter {
                id: new_envelope_id(),
                entity: st.id.clone(),
                envelope: None,
                error: format!("undecodable inbox entry {seq}: {error}"),
                attempts: 1,
                at: cx.now,
            }),
            Ok(env) => consume(st, &mut cx, &env, &mut deadletters)?,
        }
    }
    put_deadletters(st, &deadletters)?;
    commit(st, cx.out, cx.parts, Acks::new()).await?;
    st.consumed.extend(seqs);
    st.ctx.sub_depth(&st.id, n);
    handled_without_failure(st);
    remove_consumed(st, REMOVE_SLACK)?;
    Ok(true)
}

/// Handles one message: drops a duplicate, dead-letters one that failed too
/// often, or calls the logic and remembers it.
fn consume<L: Logic>(
    st: &mut EntityState<L>,
    cx: &mut Cx,
    env: &Envelope,
    deadletters: &mut Vec<DeadLetter>,
) -> Result<(), ActorProcessingErr> {
    let max_attempts = st.ctx.settings.mailbox.max_attempts;
    let rec = st.rec.as_mut().ok_or("record not loaded")?;
    if rec.has_seen(env.id) && !crate::fault::skip_dedup() {
        tracing::debug!(entity = %st.id, id = %env.id, kind = %env.kind, "duplicate dropped");
        metrics::counter!("durasaga_duplicates_dropped_total", "service" => L::SERVICE.name())
            .increment(1);
    } else if st.failures >= max_attempts {
        tracing::error!(entity = %st.id, kind = %env.kind, failures = st.failures, "message failed too often; moved to dead letters");
        rec.remember(env.id);
        deadletters.push(DeadLetter {
            id: env.id,
            entity: st.id.clone(),
            error: format!(
                "handling failed {} times (panic or error; see logs)",
                st.failures
            ),
            envelope: Some(env.clone()),
            attempts: st.failures,
            at: cx.now,
        });
    } else {
        let span = tracing::info_span!("handle", saga = %env.correlation, service = L::SERVICE.name(), entity = %st.id, kind = %env.kind);
        let _g = span.enter();
        if st.ctx.logic.inject_fault(env) {
            panic!(
                "injected fault in {} {} while handling {}",
                L::SERVICE.name(),
                st.id,
                env.kind
            );
        }
        st.ctx
            .logic
            .prefetch(&st.ctx.db, &st.id, &mut rec.state, env)?;
        st.ctx.logic.on_envelope(cx, &st.id, &mut rec.state, env);
        rec.remember(env.id);
    }
    Ok(())
}

fn put_deadletters<L: Logic>(
    st: &EntityState<L>,
    deadletters: &[DeadLetter],
) -> Result<(), ActorProcessingErr> {
    for dl in deadletters {
        st.ctx.db.deadletter_put(dl)?;
        metrics::counter!("durasaga_dead_letters_total", "service" => L::SERVICE.name())
            .increment(1);
    }
    Ok(())
}

/// A batch was handled durably: the entity is no longer failing.
fn handled_without_failure<L: Logic>(st: &mut EntityState<L>) {
    if st.failures > 0 {
        st.failures = 0;
        st.ctx.clear_failures(&st.id);
    }
}

/// Consumed inbox entries an active entity lets accumulate before removing
/// them (they are all removed at passivation).
const REMOVE_SLACK: usize = 32;

/// Envelope ids to acknowledge, by sender.
type Acks = HashMap<(Service, String), Vec<u128>>;

/// One durable commit: state + outbox + cursor + dedup window in a single
/// insert, then the flush barrier, then the acknowledgements of the queued
/// envelopes it handled (`acks`), then the relay hand-off.
async fn commit<L: Logic>(
    st: &mut EntityState<L>,
    out: Vec<Envelope>,
    parts: Vec<PartWrite>,
    acks: Acks,
) -> Result<(), ActorProcessingErr> {
    let rec = st.rec.as_mut().ok_or("record not loaded")?;
    rec.trim_outbox(&st.delivered);
    st.delivered.clear();
    rec.outbox.extend(out.iter().cloned());
    rec.handled += 1;
    let needs = st.ctx.logic.needs_recovery(rec);
    if needs && !st.marked {
        // Before the record: see `ServiceDb::mark_active`.
        st.ctx.db.mark_active(&st.id)?;
        st.marked = true;
    }
    // List terms: new ones before the record, stale ones after it (see
    // `persistence::lists`).
    let terms = st.ctx.logic.list_terms(&rec.state);
    if terms != st.terms {
        let added: Vec<ListTerm> = terms
            .iter()
            .filter(|t| !st.terms.contains(t))
            .cloned()
            .collect();
        st.ctx.db.list_index_add(&st.id, &added)?;
    }
    // Parts before the record: each only ever moves to a higher version, so if
    // the record is lost they are rewritten as they are (see
    // `persistence::parts`); the record's flush covers them.
    for p in &parts {
        st.ctx.db.part_put_newer(&st.id, p)?;
    }
    let ticket = st.ctx.db.save(&st.id, rec)?;
    st.ctx
        .logic
        .after_save(&st.ctx.db, &st.id, &mut rec.state)?;
    if terms != st.terms {
        let gone: Vec<ListTerm> = st
            .terms
            .iter()
            .filter(|t| !terms.contains(t))
            .cloned()
            .collect();
        st.ctx.db.list_index_remove(&st.id, &gone)?;
        st.terms = terms;
    }
    crate::fault::crash_point("after_commit_before_flush");
    if L::SERVICE == Service::View {
        crate::fault::crash_point("projector_checkpoint");
    }
    st.ctx.db.durable(ticket).await?;
    crate::fault::crash_point("after_commit_flush");
    // Only now, with the handling durable, may the senders forget what it
    // handled; and before the replies go out, so that a sender learns of the
    // delivery before it handles the reply and can trim its outbox in that
    // same commit.
    st.ctx.relay.acknowledge(acks);
    if !needs && st.marked {
        st.ctx.db.unmark_active(&st.id)?;
        st.marked = false;
    }
    if !out.is_empty() {
        st.ctx.relay.send(out);
    }
    st.ctx.logic.after_commit(&st.id, &rec.state);
    Ok(())
}
