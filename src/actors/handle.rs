//! [`Runtime`]: the one handle the HTTP layer (and the demos, tests and
//! benches) calls. It owns the store, the three services, their relays and the
//! supervision tree, runs start-up recovery, and answers queries.
//!
//! Invariants: `is_ready()` is false until recovery has queued every pending
//! outbox envelope at its receiver (their wake-ups may follow), re-activated
//! every entity with a pending durable inbox and armed every saga's timer; every answer reflects only durable writes (queries
//! pass the read barrier before they return).

use super::entity::{ActorError, EntityMsg, Logic, ServiceCtx};
use super::logic::{
    self, CustomerCmd, CustomerLogic, OrderCmd, OrderLogic, SagaCmd, SagaLogic, ViewLogic,
};
use super::relay::{Endpoint, Endpoints, Relay, SharedEndpoints, Wakeups};
use super::supervisor::{RootArgs, RootSupervisor, ServiceSupervisor, SpawnService};
use super::watch::Watchers;
use crate::config::Settings;
use crate::domain::{
    Customer, CustomerId, Money, Order, OrderError, OrderId, OrderState, RecordedEvent, SagaState,
    Service,
};
use crate::domain::{CustomerHistory, Millis, SagaPhase};
use crate::persistence::deadletters::DeadLetter;
use crate::persistence::{
    EntityRecord, IdempotencyRecord, ListTerm, OrderRecord, Reservation, ServiceDb, Store,
    StoreError,
};
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Errors the HTTP layer maps to statuses (in `http::error`, one `match`).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Overloaded(String),
    #[error("durasaga is starting up or shutting down")]
    NotReady,
    #[error("storage is full: {0}")]
    NoSpace(String),
    #[error("storage failed: {0}; durasaga is stopping")]
    StorageFailed(String),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        if e.is_no_space() {
            AppError::NoSpace(e.to_string())
        } else if e.is_fatal() {
            AppError::StorageFailed(e.to_string())
        } else {
            AppError::Internal(e.to_string())
        }
    }
}

impl From<ActorError> for AppError {
    fn from(e: ActorError) -> Self {
        AppError::Internal(e.to_string())
    }
}

/// An order as the API shows it. Built only from an order record's id, saga
/// id and events (see `OrderRecord`: the long-poll's skipped read barrier
/// depends on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub order: Order,
    pub saga_id: String,
    pub events: Vec<RecordedEvent>,
}

impl OrderView {
    fn from_record(rec: OrderRecord) -> Option<Self> {
        let order = logic::fold(&rec)?;
        Some(Self {
            order,
            saga_id: rec.saga_id,
            events: rec.events,
        })
    }
}

/// Filters of `GET /orders`.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub customer_id: Option<String>,
    pub state: Option<OrderState>,
}

/// What start-up recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub outbox_envelopes: usize,
    pub entities_woken: usize,
    pub active_sagas: usize,
    /// Entities listed in the recovery indexes (all of them were read).
    pub indexed_entities: usize,
    pub undecodable_records: usize,
    pub millis: u128,
}

struct Ep<L: Logic>(Arc<ServiceCtx<L>>);

impl<L: Logic> Endpoint for Ep<L> {
    fn enqueue(&self, entity: &str, envs: Vec<crate::domain::Envelope>) {
        self.0.enqueue(entity, envs);
    }
    fn wake(&self, entity: &str) {
        match self.0.send(entity, EntityMsg::Wake, true) {
            Ok(()) => {}
            Err(ActorError::NotRunning(_)) => {
                tracing::debug!(entity, "not woken: shutting down");
            }
            Err(e) => {
                tracing::error!(error = %e, entity, "cannot wake entity; it resumes at the next message or restart")
            }
        }
    }
    fn delivered(&self, entity: &str, ids: Vec<u128>) {
        let _ = self.0.send(entity, EntityMsg::Delivered(ids), true);
    }
}

/// The running system.
pub struct Runtime {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub customers: Arc<ServiceCtx<CustomerLogic>>,
    pub orders: Arc<ServiceCtx<OrderLogic>>,
    pub sagas: Arc<ServiceCtx<SagaLogic>>,
    pub views: Arc<ServiceCtx<ViewLogic>>,
    watchers: Arc<Watchers>,
    ready: AtomicBool,
    root: ActorRef<super::supervisor::RootMsg>,
    root_join: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    endpoints: SharedEndpoints,
    background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub recovery: RecoveryReport,
    space: crate::persistence::SpaceGuard,
    /// Order reads answered without a read barrier because they read a state
    /// known durable (see [`Runtime::get_order_known`]).
    known_durable_reads: std::sync::atomic::AtomicU64,
}

/// The shared context of one service: its database, its relay and the settings.
fn start_service<L: Logic>(
    logic: L,
    (db, relay, settings): (ServiceDb, Relay, Arc<Settings>),
) -> Arc<ServiceCtx<L>> {
    ServiceCtx::new(logic, db, relay, settings)
}

fn service_spawner<L: Logic>(
    name: &'static str,
    ctx: Arc<ServiceCtx<L>>,
) -> (&'static str, SpawnService) {
    let f: SpawnService = Box::new(move |root| {
        let ctx = ctx.clone();
        Box::pin(async move {
            Actor::spawn_linked(None, ServiceSupervisor::<L>::new(), ctx, root)
                .await
                .map(|(actor, _)| actor.get_id())
                .map_err(|e| format!("{name}: {e}"))
        })
    });
    (name, f)
}

impl Runtime {
    /// Opens the store, starts the supervision tree and relays, and recovers.
    pub async fn start(settings: Settings) -> Result<Arc<Self>, AppError> {
        let settings = Arc::new(settings);
        let st = &settings.storage;
        let store = Store::open_with(
            &st.data_dir,
            st.durability,
            st.cache_mb.saturating_mul(1 << 20),
            st.flush_in_turn,
        )?;
        let endpoints: SharedEndpoints = Arc::new(RwLock::new(None));
        let watchers = Arc::new(Watchers::default());
        let service = |s: Service| {
            (
                store.service(s).clone(),
                Relay::new(s, endpoints.clone()),
                settings.clone(),
            )
        };
        let customers = start_service(CustomerLogic, service(Service::Customer));
        let orders = start_service(
            OrderLogic {
                watchers: watchers.clone(),
            },
            service(Service::Order),
        );
        let sagas = start_service(
            SagaLogic {
                policy: settings.saga_policy(),
            },
            service(Service::Saga),
        );
        let views = start_service(ViewLogic, service(Service::View));
        let shared = Arc::new(Endpoints {
            customer: Arc::new(Ep(customers.clone())),
            order: Arc::new(Ep(orders.clone())),
            saga: Arc::new(Ep(sagas.clone())),
            view: Arc::new(Ep(views.clone())),
        });
        if let Ok(mut e) = endpoints.write() {
            *e = Some(shared);
        }
        let st_dir = settings.storage.data_dir.clone();
        let min_free_mb = settings.storage.min_free_mb;
        let sup = &settings.supervision;
        let args = RootArgs {
            spawners: vec![
                service_spawner("customer-supervisor", customers.clone()),
                service_spawner("order-supervisor", orders.clone()),
                service_spawner("saga-supervisor", sagas.clone()),
                service_spawner("view-supervisor", views.clone()),
            ],
            window: Duration::from_millis(sup.window_ms),
            max_restarts: 3,
        };
        let (root, root_join) = Actor::spawn(None, RootSupervisor, args)
            .await
            .map_err(|e| AppError::Internal(format!("cannot start the supervision tree: {e}")))?;
        let mut rt = Runtime {
            settings,
            store,
            customers,
            orders,
            sagas,
            views,
            watchers,
            ready: AtomicBool::new(false),
            root,
            root_join: std::sync::Mutex::new(Some(root_join)),
            endpoints,
            background: std::sync::Mutex::new(Vec::new()),
            recovery: RecoveryReport::default(),
            space: crate::persistence::SpaceGuard::new(st_dir, min_free_mb.saturating_mul(1 << 20)),
            known_durable_reads: Default::default(),
        };
        let (report, wakeups) = rt.recover()?;
        rt.recovery = report;
        // The receivers of the recovered outboxes are woken in the background
        // (their envelopes are queued already, ahead of anything sent later).
        if !wakeups.is_empty() {
            let task = tokio::spawn(async move { wakeups.into_iter().for_each(Wakeups::run) });
            if let Ok(mut b) = rt.background.lock() {
                b.push(task);
            }
        }
        rt.spawn_idempotency_purge();
        rt.hold_timers_while_backlog_drains();
        crate::fault::crash_point("after_recovery");
        rt.ready.store(true, SeqCst);
        tracing::info!(report = ?rt.recovery, "recovery done; ready");
        Ok(Arc::new(rt))
    }

    fn recover(&self) -> Result<(RecoveryReport, Vec<Wakeups>), AppError> {
        let started = Instant::now();
        let mut r = RecoveryReport::default();
        // Scan and queue everything first, then act: no entity runs before
        // every recovered outbox is queued (so nothing it sends can overtake
        // an older recovered envelope to the same receiver) and before every
        // durable inbox is counted.
        let (cw, c, hc) = recover_service(&self.customers, &mut r)?;
        crate::fault::crash_point("during_recovery");
        let (ow, o, ho) = recover_service(&self.orders, &mut r)?;
        let (sw, s, hs) = recover_service(&self.sagas, &mut r)?;
        let (vw, v, hv) = recover_service(&self.views, &mut r)?;
        // The sagas the recovered work concerns are held before any service
        // resumes, so none of them can act (and leave the hold) before it.
        let grace = self.sagas.logic.recovery_grace();
        let held = [hc, ho, hs, hv].concat();
        if grace > 0 && !held.is_empty() {
            let until = super::entity::now_millis().saturating_add(grace);
            self.sagas.timers.hold(held, until);
        }
        c()?;
        o()?;
        s()?;
        v()?;
        let wakeups = [cw, ow, sw, vw].into_iter().flatten().collect();
        r.millis = started.elapsed().as_millis();
        Ok((r, wakeups))
    }

    /// Recovery holds the timers of the sagas of the recovered work (in
    /// flight and waiting for a reply, or sent a recovered message) for one
    /// reply window (see `TimerWheel::hold`). A crash can leave a backlog
    /// that takes several windows to work through (100,000 sagas take ~20 s
    /// here); a step whose message still waits in that queue has not been
    /// answered late, and timing it out would only resend it into the same
    /// queue. So every half window this looks at the services sagas wait on
    /// and, while [`BacklogHold`] says those sagas are still being worked
    /// through, moves the hold to two windows ahead, but never past
    /// `saga.recovery_hold_max_ms` after start. Once it stops, the sagas
    /// still held time out at the end of the last extension (at most two
    /// windows later). Sagas that new requests start are never held.
    /// `durasaga_saga_timer_hold_seconds` shows what is left of the hold,
    /// `durasaga_saga_timer_held_sagas` how many sagas it still holds.
    fn hold_timers_while_backlog_drains(&self) {
        let window = self.settings.saga.reply_timeout_ms as Millis;
        let start = super::entity::now_millis();
        let limit = start.saturating_add(self.settings.saga.recovery_hold_max_ms as Millis);
        let held = self.sagas.timers.held();
        // No hold (no saga was held), or `recovery_hold_max_ms` allows no
        // more than the first window.
        if held == 0 || limit <= start.saturating_add(window) {
            return;
        }
        let (customers, orders, sagas) = (
            self.customers.clone(),
            self.orders.clone(),
            self.sagas.clone(),
        );
        // (handled, queued) of each service sagas wait on.
        let look = move || {
            [
                (customers.handled(), customers.total_depth()),
                (orders.handled(), orders.total_depth()),
                (sagas.handled(), sagas.total_depth()),
            ]
        };
        // Each extension reaches two windows ahead: the next look is due in
        // half a window, and a busy runtime may run it late.
        let ahead = move |now: Millis| now.saturating_add(window.saturating_mul(2)).min(limit);
        let look_every = Duration::from_millis((window / 2).max(1) as u64);
        let services = look();
        let queued: u64 = services.iter().map(|(_, q)| q).sum();
        if queued == 0 {
            return;
        }
        // The first extension at once: the window recovery gave may be
        // half over already, and a busy start-up may run the first look late.
        let until = ahead(start);
        self.sagas.timers.hold_until(until);
        tracing::info!(
            sagas = held,
            queued,
            until,
            limit,
            "recovery holds the timers of the recovered sagas while they are worked through"
        );
        let sagas = self.sagas.clone();
        // The set of held sagas stays, and stays accurate, while this task
        // may extend the hold, even if a look comes late.
        sagas.timers.hold_extended(true);
        let task = tokio::spawn(async move {
            let mut hold = BacklogHold::new(start, window, &services);
            loop {
                tokio::time::sleep(look_every).await;
                let now = super::entity::now_millis();
                let held = sagas.timers.held();
                if !hold.goes_on(now, &look(), held) {
                    tracing::info!(sagas = held, "recovery's timer hold ends");
                    sagas.timers.hold_extended(false);
                    return;
                }
                let until = ahead(now);
                sagas.timers.hold_until(until);
                if until >= limit {
                    tracing::info!(
                        sagas = held,
                        until,
                        "recovery's timer hold ends at saga.recovery_hold_max_ms"
                    );
                    sagas.timers.hold_extended(false);
                    return;
                }
            }
        });
        if let Ok(mut b) = self.background.lock() {
            b.push(task);
        }
    }

    fn spawn_idempotency_purge(&self) {
        let retention_ms = self
            .settings
            .idempotency
            .retention_hours
            .saturating_mul(3_600_000) as i64;
        let every = Duration::from_millis((retention_ms as u64 / 10).clamp(1_000, 3_600_000));
        let dbs = [self.store.customer.clone(), self.store.order.clone()];
        let task = tokio::spawn(async move {
            loop {
                let before = super::entity::now_millis() - retention_ms;
                for db in &dbs {
                    match db.idempotency_purge(before) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            db = db.name,
                            purged = n,
                            "expired idempotency keys removed"
                        ),
                        Err(e) => {
                            tracing::warn!(db = db.name, error = %e, "idempotency purge failed")
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        if let Ok(mut b) = self.background.lock() {
            b.push(task);
        }
    }

    /// How long the saga timers are still held after a restart (see
    /// `hold_timers_while_backlog_drains`); 0 when they are not.
    pub fn saga_timer_hold_seconds(&self) -> f64 {
        let left = self.sagas.timers.held_until() - super::entity::now_millis();
        if left <= 0 || self.sagas.timers.held() == 0 {
            return 0.0;
        }
        left as f64 / 1_000.0
    }

    /// How many recovered sagas the hold still covers (0 once it is over).
    pub fn saga_timer_held_sagas(&self) -> u64 {
        if self.saga_timer_hold_seconds() == 0.0 {
            return 0;
        }
        self.sagas.timers.held()
    }

    /// True once recovery is done (and until shutdown starts).
    pub fn is_ready(&self) -> bool {
        self.ready.load(SeqCst)
    }

    /// Waits until the supervision tree stops (escalation or shutdown).
    pub async fn stopped(&self) {
        if let Some(j) = self.take_root_join() {
            let _ = j.await;
        }
    }

    /// The root supervisor's task, to await once (by `stopped` or `shutdown`).
    fn take_root_join(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.root_join
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Stops the actors (bounded by `timeout`) and flushes every database.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), AppError> {
        self.ready.store(false, SeqCst);
        let per = timeout / 3;
        // No actor may start once stopping has begun (a late timer or message
        // would otherwise spawn one that outlives shutdown and holds its
        // database).
        self.customers.close();
        self.orders.close();
        self.sagas.close();
        self.views.close();
        self.sagas.stop_all(per).await;
        self.views.stop_all(per).await;
        self.orders.stop_all(per).await;
        self.customers.stop_all(per).await;
        // Only now the supervisors: stopping them first would kill their
        // children without post_stop (no outbox trim).
        self.root.stop(Some("shutdown".into()));
        if let Ok(mut e) = self.endpoints.write() {
            e.take();
        }
        let mut tasks: Vec<_> = self
            .background
            .lock()
            .map(|mut b| b.drain(..).collect())
            .unwrap_or_default();
        // The relays and timer wheels hold the databases while they work.
        tasks.extend(self.customers.take_tasks());
        tasks.extend(self.orders.take_tasks());
        tasks.extend(self.sagas.take_tasks());
        tasks.extend(self.views.take_tasks());
        for t in &tasks {
            t.abort();
        }
        // Wait for them and for the supervision tree, so that nothing holds
        // the databases once shutdown returns (the data directory can be
        // opened again at once).
        for t in tasks {
            let _ = t.await;
        }
        if let Some(j) = self.take_root_join() {
            if tokio::time::timeout(per, j).await.is_err() {
                tracing::warn!(timeout = ?per, "the supervision tree did not stop in time");
            }
        }
        // Anything still running that holds a service (an actor finishing its
        // last message, a supervisor on its way out) holds its database: wait
        // (bounded) until only this runtime does, so that the data directory
        // can be opened again as soon as shutdown returns.
        let deadline = Instant::now() + per;
        loop {
            let held = [
                Arc::strong_count(&self.customers),
                Arc::strong_count(&self.orders),
                Arc::strong_count(&self.sagas),
                Arc::strong_count(&self.views),
            ];
            if held.iter().all(|&n| n == 1) {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    ?held,
                    "services still referenced after shutdown (customer, order, saga, view)"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.store.close()?;
        Ok(())
    }

    /// Checked before every write request: recovered, storage working, and
    /// enough free space (see `persistence::space`).
    fn check_ready(&self) -> Result<(), AppError> {
        if let Some(f) = self.store.failure() {
            return Err(StoreError::from(f).into());
        }
        if !self.is_ready() {
            return Err(AppError::NotReady);
        }
        self.space.check().map_err(AppError::NoSpace)
    }

    async fn call<L: Logic>(
        ctx: &Arc<ServiceCtx<L>>,
        entity: &str,
        cmd: L::Command,
    ) -> Result<L::Reply, AppError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        ctx.send(
            entity,
            EntityMsg::Command(cmd, RpcReplyPort::from(tx)),
            true,
        )?;
        let answer = tokio::time::timeout(Duration::from_secs(30), rx).await;
        if !matches!(answer, Ok(Ok(Ok(_)))) {
            // A failed storage is what made the actor fail: say so.
            if let Some(f) = ctx.db.flusher.failure() {
                return Err(StoreError::from(f).into());
            }
        }
        match answer {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(AppError::Internal(e)),
            Ok(Err(_)) => Err(AppError::Internal(format!(
                "the {} actor stopped before answering",
                L::SERVICE.name()
            ))),
            Err(_) => Err(AppError::Overloaded(format!(
                "the {} service did not answer in time",
                L::SERVICE.name()
            ))),
        }
    }

    // ----------------------------------------------------------- customers

    /// Creates a customer; answers once it is durable.
    pub async fn create_customer(
        &self,
        name: String,
        credit_limit: Money,
        idempotency_key: Option<&str>,
    ) -> Result<Customer, AppError> {
        self.check_ready()?;
        let fingerprint = format!("POST /customers {:?} {}", name, i64::from(credit_limit));
        let id = entity_id_for(&self.store.customer, idempotency_key, fingerprint).await?;
        Self::call(
            &self.customers,
            &id,
            CustomerCmd::Create { name, credit_limit },
        )
        .await?
        .map_err(|m| AppError::Conflict {
            code: "CUSTOMER_EXISTS",
            message: m,
        })
    }

    /// A customer, if it exists.
    pub async fn get_customer(&self, id: &str) -> Result<Option<Customer>, AppError> {
        let rec = self.store.customer.get::<Customer>(id)?;
        self.store.customer.read_barrier().await?;
        Ok(rec.and_then(|r| r.state))
    }

    /// A page of customers in id order, and the cursor of the next page.
    pub async fn list_customers(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Customer>, Option<String>), AppError> {
        let mut out = Vec::new();
        for item in self.store.customer.scan::<Customer>(after) {
            let (_, rec) = item?;
            if let Some(c) = rec.state {
                out.push(c);
                if out.len() > limit {
                    break;
                }
            }
        }
        self.store.customer.read_barrier().await?;
        Ok(page(out, limit, |c| c.id.to_string()))
    }

    // -------------------------------------------------------------- orders

    /// Creates a PENDING order and starts its CreateOrder saga; answers once
    /// the order (and the saga's start message in its outbox) is durable.
    pub async fn create_order(
        &self,
        customer_id: CustomerId,
        total: Money,
        idempotency_key: Option<&str>,
    ) -> Result<OrderView, AppError> {
        self.check_ready()?;
        let fingerprint = format!("POST /orders {customer_id} {}", i64::from(total));
        let id = entity_id_for(&self.store.order, idempotency_key, fingerprint).await?;
        // A replay of an accepted request answers its order whatever the load;
        // only a new order is subject to admission control. (Concurrent
        // requests may pass the checks together: the limits are approximate.)
        let replay =
            idempotency_key.is_some() && self.store.order.get::<OrderRecord>(&id)?.is_some();
        if !replay {
            let in_flight = self.store.order.active_count();
            let limit = self.settings.saga.max_in_flight;
            if in_flight >= limit {
                return Err(AppError::Overloaded(format!(
                    "{in_flight} orders are in flight, the most saga.max_in_flight allows ({limit})"
                )));
            }
            let max = self.settings.mailbox.max_depth as u64;
            if self.customers.depth_of(customer_id.as_str()) >= max {
                return Err(AppError::Overloaded(format!(
                    "customer {customer_id} has more than {max} messages queued"
                )));
            }
        }
        let rec = Self::call(&self.orders, &id, OrderCmd::Create { customer_id, total })
            .await?
            .map_err(order_error)?;
        metrics::counter!("durasaga_orders_created_total").increment(1);
        OrderView::from_record(rec)
            .ok_or_else(|| AppError::Internal("created order has no events".into()))
    }

    /// An order, if it exists.
    pub async fn get_order(&self, id: &str) -> Result<Option<OrderView>, AppError> {
        self.get_order_known(id, None).await
    }

    /// An order, if it exists. `durable_events`: an event count the order is
    /// known to have had at a durable commit; a record read with exactly that
    /// many events shows that durable state (an order's view follows from its
    /// append-only events), so it is answered without the read barrier.
    async fn get_order_known(
        &self,
        id: &str,
        durable_events: Option<usize>,
    ) -> Result<Option<OrderView>, AppError> {
        let rec = self.store.order.get::<OrderRecord>(id)?;
        let events = rec
            .as_ref()
            .and_then(|r| r.state.as_ref())
            .map(|o| o.events.len());
        let known_durable = events.is_some() && events == durable_events;
        if known_durable {
            self.known_durable_reads.fetch_add(1, SeqCst);
        } else {
            self.store.order.read_barrier().await?;
        }
        Ok(rec.and_then(|r| r.state).and_then(OrderView::from_record))
    }

    /// How many order reads were answered without a read barrier.
    pub fn known_durable_reads(&self) -> u64 {
        self.known_durable_reads.load(SeqCst)
    }

    /// [`Runtime::wait_order`] from the answer of a command on that order
    /// (create, cancel): it came once the command's commit was durable.
    pub async fn wait_order_after(
        &self,
        answer: &OrderView,
        wait: Duration,
        done: impl Fn(&OrderView) -> bool,
    ) -> Result<Option<OrderView>, AppError> {
        let id = answer.order.id.as_str();
        self.wait_order(id, wait, Some(answer.events.len()), done)
            .await
    }

    /// Waits (at most `wait`) until `done(order)` holds; returns the order as
    /// it is then. `durable_events` as for [`Runtime::get_order_known`]: the
    /// event count of a view the caller already has and knows durable (e.g.
    /// the answer of the command that created the order).
    pub async fn wait_order(
        &self,
        id: &str,
        wait: Duration,
        durable_events: Option<usize>,
        done: impl Fn(&OrderView) -> bool,
    ) -> Result<Option<OrderView>, AppError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut known = durable_events;
        loop {
            let changed = self.watchers.subscribe(id);
            let view = self.get_order_known(id, known).await?;
            match &view {
                Some(v) if !done(v) => {}
                _ => return Ok(view),
            }
            match tokio::time::timeout_at(deadline, changed).await {
                Err(_) => return Ok(view),
                Ok(notified) => known = notified.ok(),
            }
        }
    }

    /// A page of orders matching `filter`, in id (creation) order.
    pub async fn list_orders(
        &self,
        filter: &OrderFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<OrderView>, Option<String>), AppError> {
        let mut out = Vec::new();
        let db = &self.store.order;
        let records: Records<'_, OrderRecord> = match filter.state {
            Some(s) if logic::order_state_listed(s) => {
                listed(db, Some((logic::ORDER_STATE, s.as_str().to_owned())), after)
            }
            // A PENDING order is in the recovery index until it settles.
            Some(OrderState::Pending) => marked(db, after),
            Some(_) | None => match filter.customer_id.as_deref() {
                Some(c) if db.active_index_complete() => {
                    match customer_order_ids(&self.store, c, after)? {
                        Some(ids) => {
                            self.store.view.read_barrier().await?;
                            records_of(db, ids.into_iter().map(Ok))
                        }
                        None => listed(db, None, after),
                    }
                }
                _ => listed(db, None, after),
            },
        };
        for item in records {
            let (_, rec) = item?;
            let Some(v) = rec.state.and_then(OrderView::from_record) else {
                continue;
            };
            if filter
                .customer_id
                .as_deref()
                .is_some_and(|c| c != v.order.customer_id.as_str())
                || filter.state.is_some_and(|s| s != v.order.state)
            {
                continue;
            }
            out.push(v);
            if out.len() > limit {
                break;
            }
        }
        self.store.order.read_barrier().await?;
        Ok(page(out, limit, |v| v.order.id.to_string()))
    }

    /// Starts the CancelOrder saga of an APPROVED order.
    pub async fn cancel_order(&self, id: &OrderId) -> Result<OrderView, AppError> {
        self.check_ready()?;
        if self
            .store
            .order
            .get::<OrderRecord>(id.as_str())?
            .and_then(|r| r.state)
            .is_none()
        {
            return Err(AppError::NotFound("order"));
        }
        let rec = Self::call(&self.orders, id.as_str(), OrderCmd::Cancel)
            .await?
            .map_err(order_error)?;
        OrderView::from_record(rec).ok_or(AppError::NotFound("order"))
    }

    // --------------------------------------------------------------- sagas

    /// A saga's state and history.
    pub async fn get_saga(&self, id: &str) -> Result<Option<SagaState>, AppError> {
        let rec = self.store.saga.get::<SagaState>(id)?;
        self.store.saga.read_barrier().await?;
        Ok(rec.and_then(|r| r.state))
    }

    /// Resumes a PAUSED or FAILED saga.
    pub async fn retry_saga(&self, id: &str) -> Result<SagaState, AppError> {
        self.check_ready()?;
        if self
            .store
            .saga
            .get::<SagaState>(id)?
            .and_then(|r| r.state)
            .is_none()
        {
            return Err(AppError::NotFound("saga"));
        }
        Self::call(&self.sagas, id, SagaCmd::Retry)
            .await?
            .map_err(|m| AppError::Conflict {
                code: "SAGA_NOT_RETRYABLE",
                message: m,
            })
    }

    /// The order-history view of a customer (404 if the customer is unknown
    /// to the view).
    pub async fn order_history_view(
        &self,
        customer_id: &str,
    ) -> Result<Option<CustomerHistory>, AppError> {
        let rec = super::logic::load_history(&self.store.view, customer_id)?;
        self.store.view.read_barrier().await?;
        Ok(rec.and_then(|r| r.state).filter(|v| v.name.is_some()))
    }

    /// A page of sagas, optionally only those in `phase` and last updated
    /// before `updated_before` (to find stuck, paused and failed sagas).
    pub async fn list_sagas(
        &self,
        phase: Option<SagaPhase>,
        updated_before: Option<Millis>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<SagaState>, Option<String>), AppError> {
        let mut out = Vec::new();
        let db = &self.store.saga;
        let records: Records<'_, SagaState> = match phase {
            Some(p) if logic::saga_phase_listed(p) => {
                listed(db, Some((logic::SAGA_PHASE, p.as_str().to_owned())), after)
            }
            // A saga in flight has a deadline, and a saga with a deadline is
            // in the recovery index (marked before its record is written).
            Some(p) if p.is_active() => marked(db, after),
            _ => listed(db, None, after),
        };
        for item in records {
            let (_, rec) = item?;
            let Some(s) = rec.state else { continue };
            if phase.is_some_and(|p| p != s.phase)
                || updated_before.is_some_and(|t| s.updated_at >= t)
            {
                continue;
            }
            out.push(s);
            if out.len() > limit {
                break;
            }
        }
        self.store.saga.read_barrier().await?;
        Ok(page(out, limit, |s| s.id.to_string()))
    }

    fn service_dbs(&self) -> [(Service, &ServiceDb); 4] {
        [
            (Service::Customer, &self.store.customer),
            (Service::Order, &self.store.order),
            (Service::Saga, &self.store.saga),
            (Service::View, &self.store.view),
        ]
    }

    /// A page of dead letters of every service, in id order.
    pub async fn list_deadletters(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<(Service, DeadLetter)>, Option<String>), AppError> {
        let mut all = Vec::new();
        for (svc, db) in self.service_dbs() {
            all.extend(
                db.deadletter_list(after, limit + 1)?
                    .into_iter()
                    .map(|d| (svc, d)),
            );
        }
        all.sort_by_key(|(_, d)| d.id);
        Ok(page(all, limit, |(_, d)| format!("{:032x}", d.id)))
    }

    /// Puts a dead letter back into its entity's inbox (as a new message, so
    /// the entity's dedup window does not drop it) and wakes the entity.
    pub async fn redeliver_deadletter(&self, id: u128) -> Result<(Service, DeadLetter), AppError> {
        self.check_ready()?;
        for (svc, db) in self.service_dbs() {
            let Some(dl) = db.deadletter_take(id)? else {
                continue;
            };
            let Some(mut env) = dl.envelope.clone() else {
                // Nothing to redeliver: the entry could not be decoded. Keep it visible.
                db.deadletter_put(&dl)?;
                return Err(AppError::Conflict {
                    code: "DEAD_LETTER_UNDECODABLE",
                    message: "this dead letter has no decodable envelope to redeliver".into(),
                });
            };
            env.id = super::entity::new_envelope_id();
            self.expect_and_wake(svc, &dl.entity, false)?;
            let (_, ticket) = db.inbox_append(&env)?;
            db.durable(ticket).await?;
            let entity = dl.entity.clone();
            self.expect_and_wake(svc, &entity, true)?;
            tracing::info!(service = svc.name(), entity, kind = %env.kind, "dead letter redelivered");
            return Ok((svc, dl));
        }
        Err(AppError::NotFound("dead letter"))
    }

    /// Counts one new inbox entry of `entity` (before the append), or wakes
    /// it (after), in whichever service it lives.
    fn expect_and_wake(&self, svc: Service, entity: &str, wake: bool) -> Result<(), ActorError> {
        fn go<L: Logic>(
            ctx: &Arc<ServiceCtx<L>>,
            entity: &str,
            wake: bool,
        ) -> Result<(), ActorError> {
            if wake {
                ctx.send(entity, EntityMsg::Wake, true)
            } else {
                ctx.add_depth(entity, 1);
                Ok(())
            }
        }
        match svc {
            Service::Customer => go(&self.customers, entity, wake),
            Service::Order => go(&self.orders, entity, wake),
            Service::Saga => go(&self.sagas, entity, wake),
            Service::View => go(&self.views, entity, wake),
        }
    }

    /// Per database: flushes, waiters served, microseconds spent flushing.
    pub fn flush_stats(&self) -> Vec<(&'static str, (u64, u64, u64))> {
        use std::sync::atomic::Ordering::Relaxed;
        self.service_dbs()
            .iter()
            .map(|(_, db)| {
                let s = db.flusher.stats();
                (
                    db.name,
                    (
                        s.flushes.load(Relaxed),
                        s.waiters.load(Relaxed),
                        s.flush_micros.load(Relaxed),
                    ),
                )
            })
            .collect()
    }

    /// Live entity actors per service (customer, order, saga).
    pub fn active_actors(&self) -> (usize, usize, usize) {
        (
            self.customers.active(),
            self.orders.active(),
            self.sagas.active(),
        )
    }
}

/// The id of the entity a request creates: fresh without a key; with a key,
/// the id bound to it by its first use (same request) or a 422 (another one).
async fn entity_id_for(
    db: &ServiceDb,
    key: Option<&str>,
    fingerprint: String,
) -> Result<String, AppError> {
    let fresh = uuid::Uuid::now_v7().simple().to_string();
    let Some(key) = key else { return Ok(fresh) };
    let rec = IdempotencyRecord {
        fingerprint,
        entity_id: fresh,
        created_at: super::entity::now_millis(),
    };
    match db.idempotency_reserve(key, &rec)? {
        // No flush of its own: the command that creates the entity commits
        // in this same database after it, and is answered only once durable;
        // sled recovers a prefix of its log, so that flush covers the key too
        // (and if it never comes, nothing was answered for the key).
        Reservation::Reserved(_) => Ok(rec.entity_id),
        Reservation::Existing(old) if old.fingerprint == rec.fingerprint => Ok(old.entity_id),
        Reservation::Existing(_) => {
            // The binding may be that of a request still in flight: show it
            // only once durable.
            db.read_barrier().await?;
            Err(AppError::IdempotencyMismatch)
        }
    }
}

fn order_error(e: OrderError) -> AppError {
    match e {
        OrderError::NotFound => AppError::NotFound("order"),
        OrderError::AlreadyExists => AppError::Conflict {
            code: "ORDER_EXISTS",
            message: e.to_string(),
        },
        OrderError::IllegalTransition { .. } => AppError::Conflict {
            code: "ORDER_NOT_APPROVED",
            message: e.to_string(),
        },
    }
}

/// Entity records with their ids, as read from a service database.
type Records<'a, S> = Box<dyn Iterator<Item = Result<(String, EntityRecord<S>), StoreError>> + 'a>;

/// The records of `db` in id order after `after`: only those listed under
/// `by` when it is given (the caller re-checks each record: the list index
/// may hold stale entries, see `persistence::lists`), else every record.
fn listed<'a, S: serde::de::DeserializeOwned + 'a>(
    db: &'a ServiceDb,
    by: Option<ListTerm>,
    after: Option<&'a str>,
) -> Records<'a, S> {
    match by {
        Some((term, value)) if db.list_index_complete() => {
            records_of(db, db.list_index_ids(term, &value, after))
        }
        _ => Box::new(db.scan::<S>(after)),
    }
}

/// The records behind `ids` (an id without a record is skipped).
fn records_of<'a, S: serde::de::DeserializeOwned + 'a>(
    db: &'a ServiceDb,
    ids: impl Iterator<Item = Result<String, StoreError>> + 'a,
) -> Records<'a, S> {
    Box::new(ids.filter_map(move |id| {
        let id = match id {
            Ok(id) => id,
            Err(e) => return Some(Err(e)),
        };
        db.get::<S>(&id).transpose().map(|r| r.map(|rec| (id, rec)))
    }))
}

/// The ids of every order of `customer` after `after`, in id order (a
/// superset: the caller re-checks each record's customer), without a scan;
/// `None` if the view's side cannot be read (then the caller scans).
///
/// An order's `OrderChanged` goes from its outbox (the order stays in the
/// order database's recovery index until the outbox is delivered) to the
/// customer's order-history view; or, if the view fails on it too often, to
/// the view's dead letters, and from there (`POST /deadletters/{id}/redeliver`)
/// to the view's durable inbox, then into the view. It leaves each place only
/// once it is durably in the next, so reading the places in that order (index,
/// dead letters, inbox, view) misses no order that existed when the list
/// began. (Redelivery takes a dead letter before it appends it to the inbox:
/// during that operator action its order may be missed.)
///
/// The cost: the ids of every order in flight (and of every order the view
/// lists after `after`); the caller reads records in id order until its page
/// is full, so in-flight orders, the newest, are read only on a page that
/// reaches them.
fn customer_order_ids(
    store: &crate::persistence::Store,
    customer: &str,
    after: Option<&str>,
) -> Result<Option<std::collections::BTreeSet<String>>, StoreError> {
    let mut ids = store
        .order
        .active_ids_after(after)
        .collect::<Result<std::collections::BTreeSet<_>, _>>()?;
    match view_order_ids(&store.view, customer) {
        Ok(found) => {
            ids.extend(
                found
                    .into_iter()
                    .filter(|id| after.is_none_or(|a| id.as_str() > a)),
            );
            Ok(Some(ids))
        }
        Err(e) => {
            tracing::warn!(customer, error = %e,
                "order-history view unreadable; listing the customer's orders by a scan");
            Ok(None)
        }
    }
}

/// The order ids the view side holds for `customer`: in its dead letters,
/// its durable inbox, and its record, read in that order (see
/// [`customer_order_ids`]).
fn view_order_ids(view: &ServiceDb, customer: &str) -> Result<Vec<String>, StoreError> {
    let changed = |env: &crate::domain::Envelope| match &env.payload {
        crate::domain::Payload::OrderChanged { order_id, .. } => Some(order_id.to_string()),
        _ => None,
    };
    let mut ids: Vec<String> = view
        .deadletter_list(None, usize::MAX)?
        .iter()
        .filter(|dl| dl.entity == customer)
        .filter_map(|dl| dl.envelope.as_ref().and_then(changed))
        .collect();
    ids.extend(
        view.inbox_pending(customer, 0, usize::MAX)?
            .iter()
            .filter_map(|(_, env)| env.as_ref().ok().and_then(changed)),
    );
    if let Some(v) = super::logic::load_history(view, customer)?.and_then(|r| r.state) {
        ids.extend(v.orders.keys().map(|o| o.to_string()));
    }
    Ok(ids)
}

/// The records of `db` in the recovery index, in id order after `after`
/// (every record if the index is not complete yet); the caller re-checks
/// each: a mark may be stale.
fn marked<'a, S: serde::de::DeserializeOwned + 'a>(
    db: &'a ServiceDb,
    after: Option<&'a str>,
) -> Records<'a, S> {
    if !db.active_index_complete() {
        return Box::new(db.scan::<S>(after));
    }
    records_of(db, db.active_ids_after(after))
}

/// Lists every record of a service under its terms, once, for data written
/// before the list index existed; also marks for recovery what such data may
/// have left unmarked (PENDING orders: see `OrderLogic::needs_recovery`).
fn build_list_index<L: Logic>(ctx: &ServiceCtx<L>) -> Result<(), AppError> {
    tracing::info!(
        service = L::SERVICE.name(),
        "building the list index: scanning every record once"
    );
    for item in ctx.db.scan::<L::State>(None) {
        match item {
            Ok((id, rec)) => {
                if ctx.logic.needs_recovery(&rec) {
                    ctx.db.mark_active(&id)?;
                }
                ctx.db
                    .list_index_add(&id, &ctx.logic.list_terms(&rec.state))?;
            }
            // Reported by recovery, which reads the record too.
            Err(e) => {
                tracing::error!(service = L::SERVICE.name(), error = %e, "record does not decode; not listed")
            }
        }
    }
    ctx.db.set_list_index_complete()?;
    Ok(())
}

/// Cuts `items` (fetched with one extra) to `limit` and derives the cursor.
fn page<T>(
    mut items: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if items.len() > limit {
        items.truncate(limit);
        let next = items.last().map(&key);
        (items, next)
    } else {
        (items, None)
    }
}

/// Whether recovery goes on holding the timers of the sagas of the recovered
/// work (see `Runtime::hold_timers_while_backlog_drains`), from how many of
/// them are still held (each leaves once it waits for no reply) and what
/// each service sagas wait on has handled and has queued at each look.
///
/// It goes on while some of those sagas are held and messages are queued for
/// some service. It ends at the first look that finds none of them held
/// (they are worked through, whatever new load came since), or nothing
/// queued, or a service with messages queued that has handled none for a
/// whole reply window (counted from the last look that saw it handle some or
/// have none queued): a stalled receiver's sagas must time out as usual.
/// (A recovered saga whose receiver alone is stuck, while new load keeps the
/// services busy, still waits up to `saga.recovery_hold_max_ms`.)
pub struct BacklogHold {
    window: Millis,
    /// When the previous look was (the start, at first).
    last_look: Millis,
    /// Per service: handled at the previous look, and since when it has had
    /// messages queued without handling any (`None`: it has not): from the
    /// last look that saw it handle some or have none queued.
    progress: Vec<(u64, Option<Millis>)>,
}

impl BacklogHold {
    /// `services`: (handled, queued) of each service at `now`, the start.
    pub fn new(now: Millis, window: Millis, services: &[(u64, u64)]) -> Self {
        Self {
            window,
            last_look: now,
            progress: services.iter().map(|&(h, _)| (h, None)).collect(),
        }
    }

    /// A look at `now` with the services in the order given to [`Self::new`]
    /// and the number of sagas still `held`.
    pub fn goes_on(&mut self, now: Millis, services: &[(u64, u64)], held: u64) -> bool {
        let since = std::mem::replace(&mut self.last_look, now);
        if held == 0 {
            return false;
        }
        let mut queued_somewhere = false;
        for (i, &(handled, queued)) in services.iter().enumerate() {
            let Some((last, stalled_since)) = self.progress.get_mut(i) else {
                return false;
            };
            if handled > *last || queued == 0 {
                *stalled_since = None;
            } else if now.saturating_sub(*stalled_since.get_or_insert(since)) >= self.window {
                return false;
            }
            *last = handled;
            queued_somewhere |= queued > 0;
        }
        queued_somewhere
    }
}

/// What resumes a service after [`recover_service`]: waking its entities with
/// durable inbox entries and arming its sagas' timers.
type Resume = Box<dyn FnOnce() -> Result<(), AppError>>;

/// Scans one service for pending work and queues its outboxes at their
/// receivers; returns the receivers to wake (see [`Wakeups`]), what
/// resumes the service itself, and the sagas the recovered work concerns:
/// those in flight that wait for a reply and those its recovered envelopes
/// and durable inbox entries go to (a saga a resent start message creates
/// is recovered work too). Their timers are held (see
/// `TimerWheel::hold`).
fn recover_service<L: Logic>(
    ctx: &Arc<ServiceCtx<L>>,
    r: &mut RecoveryReport,
) -> Result<(Option<Wakeups>, Resume, Vec<String>), AppError> {
    if L::LISTED && !ctx.db.list_index_complete() {
        build_list_index(ctx)?;
    }
    let heads = ctx.db.inbox_heads()?;
    let mut outbox = Vec::new();
    let mut wake = Vec::new();
    let mut timers = Vec::new();
    let mut with_record = std::collections::HashSet::new();
    // Sagas in flight that wait for a reply, and the sagas recovered
    // envelopes and durable inbox entries go to.
    let mut held = Vec::new();
    // Only the entities in the `active` index; every record once, for data
    // written before the index existed (and the index is built on the way).
    let indexed = ctx.db.active_index_complete();
    let records: Records<'_, L::State> = if indexed {
        let ids = ctx.db.active_ids()?;
        r.indexed_entities += ids.len();
        Box::new(
            ids.into_iter()
                .filter_map(|id| match ctx.db.get::<L::State>(&id) {
                    Ok(Some(rec)) => Some(Ok((id, rec))),
                    // A mark without a record: nothing to recover.
                    Ok(None) => ctx.db.unmark_active(&id).err().map(Err),
                    Err(e) => Some(Err(e)),
                }),
        )
    } else {
        tracing::info!(
            service = L::SERVICE.name(),
            "building the recovery index: scanning every record once"
        );
        Box::new(ctx.db.scan::<L::State>(None))
    };
    for item in records {
        let (id, rec) = match item {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(service = L::SERVICE.name(), error = %e, "record does not decode; left as is");
                r.undecodable_records += 1;
                continue;
            }
        };
        if ctx.logic.needs_recovery(&rec) {
            if !indexed {
                ctx.db.mark_active(&id)?;
            }
        } else if indexed {
            ctx.db.unmark_active(&id)?;
        }
        outbox.extend(rec.outbox.iter().cloned());
        let span = heads.get(&id).copied();
        if span.is_some_and(|h| h.first <= rec.inbox_cursor) {
            // Consumed entries a crash left before their removal.
            ctx.db.inbox_remove_consumed(&id, rec.inbox_cursor)?;
        }
        let pending = span.is_some_and(|h| h.last > rec.inbox_cursor);
        let deadline = ctx.logic.deadline(&rec.state);
        if pending {
            ctx.add_depth(&id, ctx.db.inbox_depth(&id, rec.inbox_cursor)? as u64);
            wake.push(id.clone());
        } else if let Some(d) = deadline {
            // No actor until the deadline or a reply: recovering many
            // in-flight sagas does not spawn one actor each.
            timers.push((id.clone(), d));
        }
        if deadline.is_some() {
            r.active_sagas += 1;
        }
        if ctx.logic.awaits_reply(&rec.state) {
            held.push(id.clone());
        }
        with_record.insert(id);
    }
    if !indexed {
        ctx.db.set_active_index_complete()?;
    }
    // Entities outside the index with messages waiting: their cursor decides.
    for (id, span) in heads {
        if with_record.contains(&id) {
            continue;
        }
        let cursor = match ctx.db.get::<L::State>(&id) {
            Ok(rec) => rec.map(|r| r.inbox_cursor).unwrap_or(0),
            Err(e) => {
                tracing::error!(service = L::SERVICE.name(), error = %e, "record does not decode; left as is");
                r.undecodable_records += 1;
                continue;
            }
        };
        if span.first <= cursor {
            ctx.db.inbox_remove_consumed(&id, cursor)?;
        }
        if span.last > cursor {
            ctx.add_depth(&id, ctx.db.inbox_depth(&id, cursor)? as u64);
            if L::SERVICE == Service::Saga {
                // Recovered work for a saga (maybe one it starts).
                held.push(id.clone());
            }
            wake.push(id);
        }
    }
    held.extend(
        outbox
            .iter()
            .filter(|e| e.to.service == Service::Saga)
            .map(|e| e.to.entity.clone()),
    );
    r.outbox_envelopes += outbox.len();
    r.entities_woken += wake.len();
    let wakeups = if outbox.is_empty() {
        None
    } else {
        ctx.relay.hand_over(outbox)
    };
    let grace = ctx.logic.recovery_grace();
    let ctx = ctx.clone();
    let resume = move || {
        // The held sagas (registered before any service resumed) get one
        // reply window from now, not from the end of the scans: every
        // service is recovered and the resent outboxes are queued now, so
        // they are as good as sent now (resuming the other services, which
        // sends their wake-ups, may have taken a while).
        if grace > 0 && ctx.timers.held() > 0 {
            ctx.timers
                .hold_until(super::entity::now_millis().saturating_add(grace));
        }
        for id in wake {
            ctx.send(&id, EntityMsg::Wake, true)?;
        }
        for (id, deadline) in timers {
            ctx.timers.arm(&id, deadline);
        }
        Ok(())
    };
    Ok((wakeups, Box::new(resume), held))
}

#[cfg(test)]
mod backlog_hold_tests {
    use super::BacklogHold;

    const W: i64 = 1_000;

    #[test]
    fn it_goes_on_while_messages_are_queued_and_handled() {
        let mut h = BacklogHold::new(0, W, &[(0, 100), (0, 0), (0, 0)]);
        assert!(h.goes_on(500, &[(30, 70), (10, 5), (20, 8)], 50));
        assert!(h.goes_on(1_000, &[(60, 40), (25, 5), (50, 3)], 50));
        assert!(h.goes_on(1_500, &[(100, 0), (40, 5), (70, 3)], 50));
        // Every queue empty: the backlog is worked off.
        assert!(!h.goes_on(2_000, &[(100, 0), (45, 0), (80, 0)], 50));
    }

    #[test]
    fn a_service_stalled_for_a_whole_window_ends_it() {
        // The customer service handles nothing from the start on: a whole
        // window at 1,000.
        let mut h = BacklogHold::new(0, W, &[(0, 100), (0, 0), (0, 0)]);
        assert!(h.goes_on(500, &[(0, 100), (0, 0), (0, 0)], 50));
        assert!(h.goes_on(999, &[(0, 100), (0, 0), (0, 0)], 50));
        assert!(!h.goes_on(1_000, &[(0, 100), (0, 0), (0, 0)], 50));

        // A stalled order service ends it although the others progress: its
        // messages were queued at some time after the start (seen at 500,
        // not before), so it has stalled a whole window at 1,000.
        let mut h = BacklogHold::new(0, W, &[(0, 100), (0, 0), (0, 0)]);
        assert!(h.goes_on(500, &[(20, 80), (0, 5), (10, 2)], 50));
        assert!(h.goes_on(900, &[(40, 60), (0, 5), (20, 2)], 50));
        assert!(!h.goes_on(1_000, &[(60, 40), (0, 5), (30, 2)], 50));

        // Handling one message restarts the clock from that look.
        let mut h = BacklogHold::new(0, W, &[(0, 100), (0, 0), (0, 0)]);
        assert!(h.goes_on(500, &[(0, 100), (0, 0), (0, 0)], 50));
        assert!(h.goes_on(1_000 - 1, &[(1, 99), (0, 0), (0, 0)], 50));
        assert!(h.goes_on(1_500, &[(1, 99), (0, 0), (0, 0)], 50));
        assert!(h.goes_on(1_998, &[(1, 99), (0, 0), (0, 0)], 50));
        assert!(!h.goes_on(1_999, &[(1, 99), (0, 0), (0, 0)], 50));
    }

    #[test]
    fn an_idle_service_is_not_stalled() {
        // Orders get their first messages long after the start.
        let mut h = BacklogHold::new(0, W, &[(0, 100), (0, 0), (0, 0)]);
        assert!(h.goes_on(500, &[(20, 80), (0, 0), (0, 0)], 50));
        assert!(h.goes_on(5_000, &[(90, 10), (0, 0), (0, 0)], 50));
        assert!(h.goes_on(5_500, &[(95, 5), (0, 7), (0, 0)], 50));
        assert!(h.goes_on(6_000, &[(99, 1), (7, 3), (0, 0)], 50));
    }

    #[test]
    fn it_ends_once_no_held_saga_waits_though_new_messages_are_queued() {
        let mut h = BacklogHold::new(0, W, &[(0, 100), (0, 0), (0, 0)]);
        assert!(h.goes_on(500, &[(60, 90), (20, 30), (40, 25)], 12));
        assert!(!h.goes_on(1_000, &[(120, 90), (40, 30), (80, 25)], 0));
    }

    #[test]
    fn nothing_queued_means_no_hold() {
        let mut h = BacklogHold::new(0, W, &[(7, 0), (3, 0), (9, 0)]);
        assert!(!h.goes_on(500, &[(7, 0), (3, 0), (9, 0)], 50));
    }
}
