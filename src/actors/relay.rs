//! The relay: drains a service's outbox hand-offs, appends each envelope to
//! its receiver's durable inbox, waits until the receiver's database has
//! flushed, then wakes the receivers and tells the senders what was delivered.
//!
//! Invariants: envelopes are appended in the order they were handed over, so
//! messages between one sender and one receiver arrive in order; a sender
//! learns of a delivery only after the receiver's write is durable, and only
//! then may it drop the envelope from its outbox.
//!
//! Receivers are woken right after the append, before the receiver's flush:
//! a receiver's own commit is flushed by the same database after the append,
//! and nothing leaves the receiver before that commit is durable, so handling
//! early only takes a flush off every hop's latency. A crash anywhere in between
//! leaves the envelope in the sender's outbox, and start-up recovery hands it
//! over again (the receiver deduplicates).

use crate::domain::{Envelope, Service};
use crate::persistence::ServiceDb;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A receiving service as the relay sees it.
pub trait Endpoint: Send + Sync {
    fn db(&self) -> &ServiceDb;
    /// `n` entries are about to be appended to `entity`'s inbox (counted
    /// before the append, so the consumer can never subtract them first).
    fn expect(&self, entity: &str, n: u64);
    /// New entries are in `entity`'s inbox.
    fn wake(&self, entity: &str);
    /// These outbox envelopes of `entity` are durable at their receivers.
    /// Tells the sender its envelopes are delivered, activating it if it was
    /// passivated (so it trims its outbox and can leave the recovery index).
    fn delivered(&self, entity: &str, ids: Vec<u128>);
}

/// Where relays find the services: set once the runtime has built them, and
/// cleared at shutdown (which also breaks the service ↔ relay reference cycle
/// so the databases are released).
pub type SharedEndpoints = Arc<RwLock<Option<Arc<Endpoints>>>>;

/// The services, set once the runtime has built them.
pub struct Endpoints {
    pub customer: Arc<dyn Endpoint>,
    pub order: Arc<dyn Endpoint>,
    pub saga: Arc<dyn Endpoint>,
    pub view: Arc<dyn Endpoint>,
}

impl Endpoints {
    fn get(&self, s: Service) -> &Arc<dyn Endpoint> {
        match s {
            Service::Customer => &self.customer,
            Service::Order => &self.order,
            Service::Saga => &self.saga,
            Service::View => &self.view,
        }
    }
}

/// The sending side of one service's relay. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    service: Service,
    tx: mpsc::UnboundedSender<Vec<Envelope>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Relay {
    /// Creates the relay of `service` and starts its task; it waits for
    /// `endpoints` to be set before it delivers anything.
    pub fn start(service: Service, endpoints: SharedEndpoints) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(service, rx, endpoints));
        Self {
            service,
            tx,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// The relay's task, for shutdown to stop and await (once). Stopping it
    /// mid-delivery is safe: nothing undelivered was acknowledged to its
    /// sender, so it is resent at the next start.
    pub fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().ok().and_then(|mut t| t.take())
    }

    /// Hands freshly committed envelopes over for delivery.
    pub fn send(&self, envelopes: Vec<Envelope>) {
        if self.tx.send(envelopes).is_err() {
            tracing::warn!(
                service = self.service.name(),
                "relay stopped; envelopes stay in the outbox until restart"
            );
        }
    }
}

/// Most envelopes moved per flush of the receivers.
const MAX_BATCH: usize = 4096;

async fn run(
    service: Service,
    mut rx: mpsc::UnboundedReceiver<Vec<Envelope>>,
    endpoints: SharedEndpoints,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let eps = endpoints.read().ok().and_then(|e| e.clone());
        match eps {
            Some(eps) => deliver(service, &eps, batch).await,
            // Shut down: the envelopes stay in their outboxes for the next start.
            None => return,
        }
    }
}

async fn deliver(service: Service, eps: &Endpoints, batch: Vec<Envelope>) {
    let mut tickets = BTreeMap::new();
    let mut woken: HashMap<(Service, &str), u64> = HashMap::new();
    let mut senders: HashMap<&str, Vec<u128>> = HashMap::new();
    for env in &batch {
        *woken
            .entry((env.to.service, env.to.entity.as_str()))
            .or_insert(0) += 1;
    }
    for ((svc, entity), n) in &woken {
        eps.get(*svc).expect(entity, *n);
    }
    for env in &batch {
        let db = eps.get(env.to.service).db();
        let mut backoff = Duration::from_millis(10);
        let ticket = loop {
            match db.inbox_append(env) {
                Ok((_, t)) => break t,
                // The storage failed for good and the process is stopping:
                // the envelopes stay in their senders' outboxes.
                Err(_) if db.flusher.failure().is_some() => return,
                Err(e) => {
                    tracing::error!(error = %e, to = %env.to.entity, "relay append failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        tickets.insert(env.to.service, ticket);
        *woken
            .entry((env.to.service, env.to.entity.as_str()))
            .or_insert(0) += 1;
        senders
            .entry(env.from.entity.as_str())
            .or_default()
            .push(env.id);
    }
    crate::fault::crash_point("after_inbox_append");
    for (svc, entity) in woken.keys() {
        eps.get(*svc).wake(entity);
    }
    for (svc, ticket) in tickets {
        let db = eps.get(svc).db();
        let mut backoff = Duration::from_millis(10);
        while let Err(e) = db.durable(ticket).await {
            if db.flusher.failure().is_some() {
                return; // as above: nothing is acknowledged to the senders
            }
            tracing::error!(error = %e, "relay flush failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
    crate::fault::crash_point("between_handoff_and_outbox_removal");
    let me = eps.get(service);
    for (entity, ids) in senders {
        me.delivered(entity, ids);
    }
}
