//! The relay: hands a service's freshly committed outbox envelopes to their
//! receivers' in-memory mailboxes and wakes the receivers; and, once a
//! receiver's commit that consumed envelopes is durable, tells their senders
//! they are delivered.
//!
//! Invariants:
//! - an envelope stays in its sender's outbox (durable, resent by start-up
//!   recovery) until the receiver's commit that *handled* it is durable: the
//!   acknowledgement comes from the receiver after its flush, never before;
//! - envelopes are queued in the order they were handed over, so messages
//!   between one sender and one receiver are handled in order;
//! - the mailboxes belong to the receiving service, not to its actors, so an
//!   actor that fails or passivates loses nothing: its successor finds them.
//!   Only a crash loses them, and then every one of them is still in its
//!   sender's outbox (the receiver deduplicates what it had handled).
//!
//! Earlier versions appended every envelope to a durable inbox in the
//! receiver's database and acknowledged it after that flush: two more sled
//! writes (append, removal) and one more flush wait per hop, for a copy the
//! sender's outbox already holds durably. The durable inbox remains for what
//! has no sender outbox: redelivered dead letters and entries left by those
//! versions (see `persistence::inbox`).

use crate::domain::{Envelope, Service};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A receiving service as the relay sees it.
pub trait Endpoint: Send + Sync {
    /// Queues `envs` (all for `entity`, in order) in its mailbox.
    fn enqueue(&self, entity: &str, envs: Vec<Envelope>);
    /// New entries are in `entity`'s mailbox.
    fn wake(&self, entity: &str);
    /// These outbox envelopes of `entity` were handled and the handling is
    /// durable. Tells the sender, activating it if it was passivated (so it
    /// trims its outbox and can leave the recovery index).
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

/// Receivers with newly queued envelopes, to be woken.
pub struct Wakeups {
    eps: Arc<Endpoints>,
    order: Vec<(Service, String)>,
}

impl Wakeups {
    /// Wakes every receiver (starting its actor if needed).
    pub fn run(self) {
        for (svc, entity) in &self.order {
            self.eps.get(*svc).wake(entity);
        }
    }
}

/// The relay of one service. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    service: Service,
    endpoints: SharedEndpoints,
}

impl Relay {
    /// Creates the relay of `service`; it delivers nothing until `endpoints`
    /// is set.
    pub fn new(service: Service, endpoints: SharedEndpoints) -> Self {
        Self { service, endpoints }
    }

    fn endpoints(&self) -> Option<Arc<Endpoints>> {
        self.endpoints.read().ok().and_then(|e| e.clone())
    }

    /// Hands envelopes whose sender's commit is durable to their receivers.
    pub fn send(&self, envelopes: Vec<Envelope>) {
        if let Some(w) = self.hand_over(envelopes) {
            w.run();
        }
    }

    /// Queues envelopes at their receivers and returns the wake-ups still to
    /// do. Start-up recovery queues every recovered outbox at once (so that
    /// anything sent later is queued after it) and wakes the receivers in the
    /// background, without holding up readiness.
    pub fn hand_over(&self, envelopes: Vec<Envelope>) -> Option<Wakeups> {
        let Some(eps) = self.endpoints() else {
            tracing::warn!(
                service = self.service.name(),
                "shut down; envelopes stay in the outbox until restart"
            );
            return None;
        };
        // Grouped per receiver, each group in hand-over order.
        let mut order: Vec<(Service, String)> = Vec::new();
        let mut groups: HashMap<(Service, String), Vec<Envelope>> = HashMap::new();
        for env in envelopes {
            let key = (env.to.service, env.to.entity.clone());
            groups
                .entry(key)
                .or_insert_with_key(|k| {
                    order.push(k.clone());
                    Vec::new()
                })
                .push(env);
        }
        for key in &order {
            if let Some(envs) = groups.remove(key) {
                eps.get(key.0).enqueue(&key.1, envs);
            }
        }
        // Named when this was a durable inbox append; the name is kept so
        // that harness records compare across versions.
        crate::fault::crash_point("after_inbox_append");
        Some(Wakeups { eps, order })
    }

    /// Tells the senders of envelopes a receiver of this service handled
    /// (grouped by sender) that the handling is durable.
    pub fn acknowledge(&self, acks: HashMap<(Service, String), Vec<u128>>) {
        if acks.is_empty() {
            return;
        }
        crate::fault::crash_point("between_handoff_and_outbox_removal");
        let Some(eps) = self.endpoints() else { return };
        for ((svc, entity), ids) in acks {
            eps.get(svc).delivered(&entity, ids);
        }
    }
}
