//! The three entity kinds: thin adapters from envelopes and commands to the
//! pure domain (`Customer::handle`, `order::decide`/`apply`, `saga::step`).

use super::entity::{Cx, Logic};
use super::watch::Watchers;
use crate::domain::order::{self, OrderCommand, OrderError};
use crate::domain::saga::{self, SagaInput, SagaPhase, SagaState, Transition};
use crate::domain::{
    customer, Address, Customer, CustomerCommand, CustomerHistory, CustomerId, CustomerReply,
    Envelope, Millis, Money, Order, OrderId, OrderState, Payload, RecordedEvent, SagaId, SagaKind,
    SagaPolicy, Service,
};
use crate::persistence::{EntityRecord, ListTerm, OrderRecord, PartWrite, ServiceDb, StoreError};
use std::sync::Arc;

// ---------------------------------------------------------------- customers

/// The Customer service's entity.
pub struct CustomerLogic;

/// Direct commands to a customer.
pub enum CustomerCmd {
    Create { name: String, credit_limit: Money },
}

/// Most per-order pieces (a customer's credit decisions, a view's order
/// summaries) a record keeps inline. Beyond it, a commit moves them all out
/// into parts (`persistence::parts`), so the record stays small however many
/// orders the customer has, while a customer with few orders costs no part
/// writes at all (parts cost ~10 % of throughput when written for every
/// order: BENCHMARKS.md).
pub const INLINE_PIECES: usize = 32;

/// The order a credit message is about.
fn credit_order(env: &Envelope) -> Option<&OrderId> {
    match &env.payload {
        Payload::ReserveCredit { order_id, .. } | Payload::ReleaseCredit { order_id, .. } => {
            Some(order_id)
        }
        _ => None,
    }
}

/// A customer's credit decisions merged from its parts: the record's own
/// copies (the decisions of its last commit, or all of them in records
/// written before parts existed) win. For readers of whole customers
/// (`check`).
pub fn merge_decisions(db: &ServiceDb, id: &str, c: &mut Customer) -> Result<(), StoreError> {
    for (order, _, decision) in order_parts(db, id, "decision")? {
        c.load_decision(order, decision);
    }
    Ok(())
}

/// The per-order parts of `entity`, decoded: `(order, version, value)`.
fn order_parts<T: serde::de::DeserializeOwned>(
    db: &ServiceDb,
    entity: &str,
    what: &str,
) -> Result<Vec<(OrderId, u64, T)>, StoreError> {
    db.parts_of(entity)?
        .into_iter()
        .map(|(name, version, value)| {
            let order = OrderId::parse(&name).map_err(|e| {
                StoreError::Codec(crate::persistence::CodecError::Decode(format!(
                    "{what} part {name} of {entity}: {e}"
                )))
            })?;
            Ok((order, version, crate::persistence::codec::decode(&value)?))
        })
        .collect()
}

/// A customer keeps its credit decisions inline up to [`INLINE_PIECES`], then
/// as parts of their own (the redo discipline of `persistence::parts`): once
/// the record holds more, the commit writes them all as parts right after the
/// record insert and drops them from memory, so the record holds only the
/// decisions of its commits since. Before a credit message the actor loads
/// that order's decision from its part if the record does not hold it.
/// Records written before parts existed hold every decision inline and are
/// moved out the same way.
impl Logic for CustomerLogic {
    type State = Customer;
    type Command = CustomerCmd;
    type Reply = Result<Customer, String>;
    const SERVICE: Service = Service::Customer;

    fn prefetch(
        &self,
        db: &ServiceDb,
        id: &str,
        state: &mut Option<Customer>,
        env: &Envelope,
    ) -> Result<(), StoreError> {
        let (Some(c), Some(order)) = (state.as_mut(), credit_order(env)) else {
            return Ok(());
        };
        if c.reservation(order).is_none() {
            if let Some(value) = db.part_get(id, order.as_str())? {
                c.load_decision(order.clone(), crate::persistence::codec::decode(&value)?);
            }
        }
        Ok(())
    }

    fn after_save(
        &self,
        db: &ServiceDb,
        id: &str,
        state: &mut Option<Customer>,
    ) -> Result<(), StoreError> {
        if let Some(c) = state
            .as_mut()
            .filter(|c| c.decisions_held() > INLINE_PIECES)
        {
            for (order, decision) in c.take_decisions() {
                db.part_put(
                    id,
                    order.as_str(),
                    &crate::persistence::codec::encode(&decision)?,
                )?;
            }
        }
        Ok(())
    }

    fn on_envelope(&self, cx: &mut Cx, _id: &str, state: &mut Option<Customer>, env: &Envelope) {
        let (order_id, cmd) = match &env.payload {
            Payload::ReserveCredit {
                order_id, amount, ..
            } => (
                order_id.clone(),
                CustomerCommand::ReserveCredit {
                    order_id: order_id.clone(),
                    amount: *amount,
                },
            ),
            Payload::ReleaseCredit { order_id, .. } => (
                order_id.clone(),
                CustomerCommand::ReleaseCredit {
                    order_id: order_id.clone(),
                },
            ),
            other => {
                tracing::warn!(
                    kind = other.kind(),
                    "customer ignored a message it does not handle"
                );
                return;
            }
        };
        if crate::fault::customer_silent() {
            return;
        }
        let reply = match state.as_mut() {
            Some(c) => {
                if crate::fault::skip_dedup() {
                    c.forget_decision_for_fault_injection(&order_id);
                }
                c.handle(&cmd)
            }
            None => customer::handle_missing(&cmd),
        };
        let payload = match reply {
            CustomerReply::CreditReserved => Payload::CreditReserved { order_id },
            CustomerReply::CreditLimitExceeded => Payload::CreditLimitExceeded { order_id },
            CustomerReply::CustomerNotFound => Payload::CustomerNotFound { order_id },
            CustomerReply::CreditReleased => Payload::CreditReleased { order_id },
        };
        cx.reply(env, payload);
    }

    fn on_command(
        &self,
        cx: &mut Cx,
        id: &str,
        state: &mut Option<Customer>,
        cmd: CustomerCmd,
    ) -> Self::Reply {
        match cmd {
            CustomerCmd::Create { name, credit_limit } => {
                if let Some(c) = state.as_ref() {
                    // The same creation again (an idempotent retry) answers what exists.
                    if c.name == name && c.credit_limit == credit_limit {
                        return Ok(c.clone());
                    }
                    return Err("customer already exists".into());
                }
                let cid = CustomerId::parse(id).map_err(|e| e.to_string())?;
                let c = Customer::new(cid.clone(), name.clone(), credit_limit, cx.now);
                cx.send(
                    Address::view(&cid),
                    Payload::CustomerRegistered {
                        customer_id: cid.clone(),
                        name,
                        credit_limit,
                    },
                    id,
                    None,
                    1,
                );
                *state = Some(c.clone());
                Ok(c)
            }
        }
    }

    fn inject_fault(&self, env: &Envelope) -> bool {
        matches!(env.payload, Payload::ReserveCredit { .. }) && crate::fault::take_customer_panic()
    }
}

// ------------------------------------------------------------------- orders

/// The Order service's entity; notifies long-poll waiters after each commit.
pub struct OrderLogic {
    pub watchers: Arc<Watchers>,
}

/// Direct commands to an order.
pub enum OrderCmd {
    Create {
        customer_id: CustomerId,
        total: Money,
    },
    Cancel,
}

fn record_events(rec: &mut OrderRecord, events: Vec<order::OrderEvent>, now: Millis) {
    for event in events {
        let seq = rec.events.len() as u64 + 1;
        let at = rec.events.last().map(|e| e.at.max(now)).unwrap_or(now);
        rec.events.push(RecordedEvent { seq, at, event });
    }
}

/// The order an order record describes.
pub fn fold(rec: &OrderRecord) -> Option<Order> {
    Order::fold(&rec.id, &rec.events)
}

/// Whether the order exists and is PENDING.
pub fn order_pending(rec: Option<&OrderRecord>) -> bool {
    rec.and_then(fold)
        .is_some_and(|o| o.state == OrderState::Pending)
}

/// What `GET /orders` filters by through the list index: the order's state,
/// when that state is listed (see [`order_state_listed`]).
pub fn order_list_terms(rec: Option<&OrderRecord>) -> Vec<ListTerm> {
    match rec.and_then(fold) {
        Some(o) if order_state_listed(o.state) => {
            vec![(ORDER_STATE, o.state.as_str().to_owned())]
        }
        _ => Vec::new(),
    }
}

/// Whether orders in `state` are in the list index: CANCELLED only. Every
/// list term costs sled writes on the hot path (measured: a customer term,
/// one write per order, cost ~9 % of throughput and, for 1M orders, 309 MB
/// of disk and 46 MB of RSS; see BENCHMARKS.md), so only rare ones are listed. PENDING
/// orders are found through the recovery index (see
/// `OrderLogic::needs_recovery`); a list of a common state (APPROVED,
/// REJECTED) found by scanning stops after `limit` matches anyway.
pub fn order_state_listed(state: OrderState) -> bool {
    state == OrderState::Cancelled
}

/// What `GET /sagas` filters by through the list index: the phase of a
/// saga an operator must act on (see [`saga_phase_listed`]).
pub fn saga_list_terms(state: Option<&SagaState>) -> Vec<ListTerm> {
    match state {
        Some(s) if saga_phase_listed(s.phase) => vec![(SAGA_PHASE, s.phase.as_str().to_owned())],
        _ => Vec::new(),
    }
}

/// Whether sagas in `phase` are in the list index: FAILED and PAUSED, which
/// are rare, so the index costs a happy-path saga nothing. Sagas in flight
/// all have a deadline, so the recovery index already lists them (see
/// `Runtime::list_sagas`); settled ones are common enough to scan for.
pub fn saga_phase_listed(phase: SagaPhase) -> bool {
    matches!(phase, SagaPhase::Failed | SagaPhase::Paused)
}

/// List terms of orders (see [`order_list_terms`]) and sagas ([`saga_list_terms`]).
pub const ORDER_STATE: &str = "state";
pub const SAGA_PHASE: &str = "phase";

/// The view event describing an order as of its latest event.
pub fn order_changed(rec: &OrderRecord) -> Option<Payload> {
    let o = fold(rec)?;
    Some(Payload::OrderChanged {
        order_id: o.id,
        customer_id: o.customer_id,
        total: o.total,
        state: o.state,
        reason: o.rejection_reason,
        seq: rec.events.len() as u64,
    })
}

/// Tells the customer's order-history view about the order's new state.
fn publish(cx: &mut Cx, rec: &OrderRecord) {
    if let Some(p @ Payload::OrderChanged { .. }) = order_changed(rec) {
        let Payload::OrderChanged { customer_id, .. } = &p else {
            return;
        };
        let to = Address::view(customer_id);
        cx.send(to, p.clone(), &rec.saga_id, None, 1);
    }
}

impl Logic for OrderLogic {
    type State = OrderRecord;
    type Command = OrderCmd;
    type Reply = Result<OrderRecord, OrderError>;
    const SERVICE: Service = Service::Order;

    fn on_envelope(&self, cx: &mut Cx, id: &str, state: &mut Option<OrderRecord>, env: &Envelope) {
        let (order_id, cmd) = match &env.payload {
            Payload::ApproveOrder { order_id } => (order_id.clone(), OrderCommand::Approve),
            Payload::RejectOrder { order_id, reason } => {
                (order_id.clone(), OrderCommand::Reject { reason: *reason })
            }
            Payload::CancelOrder { order_id } => (order_id.clone(), OrderCommand::Cancel),
            other => {
                tracing::warn!(
                    kind = other.kind(),
                    order = id,
                    "order ignored a message it does not handle"
                );
                return;
            }
        };
        let current = state.as_ref().and_then(fold);
        let reply = match (order::decide(current.as_ref(), &cmd), state.as_mut()) {
            (Ok(events), Some(rec)) => {
                if !events.is_empty() {
                    record_events(rec, events, cx.now);
                    publish(cx, rec);
                }
                match cmd {
                    OrderCommand::Approve => Payload::OrderApproved { order_id },
                    OrderCommand::Reject { reason } => Payload::OrderRejected { order_id, reason },
                    _ => Payload::OrderCancelled { order_id },
                }
            }
            (Ok(_), None) => Payload::OrderCommandRefused {
                order_id,
                error: OrderError::NotFound.to_string(),
            },
            (Err(e), _) => {
                tracing::warn!(order = id, error = %e, "order refused a saga command");
                Payload::OrderCommandRefused {
                    order_id,
                    error: e.to_string(),
                }
            }
        };
        cx.reply(env, reply);
    }

    fn on_command(
        &self,
        cx: &mut Cx,
        id: &str,
        state: &mut Option<OrderRecord>,
        cmd: OrderCmd,
    ) -> Self::Reply {
        let oid = OrderId::parse(id).map_err(|_| OrderError::NotFound)?;
        match cmd {
            OrderCmd::Create { customer_id, total } => {
                let current = state.as_ref().and_then(fold);
                let events = order::decide(
                    current.as_ref(),
                    &OrderCommand::Create {
                        customer_id: customer_id.clone(),
                        total,
                    },
                )?;
                if events.is_empty() {
                    // Same order created again: answer what exists, start nothing.
                    return state.clone().ok_or(OrderError::NotFound);
                }
                let saga_id = SagaId::create_order(&oid);
                let mut rec = OrderRecord {
                    id: oid.clone(),
                    saga_id: saga_id.to_string(),
                    events: Vec::new(),
                    cancel_requested: false,
                };
                record_events(&mut rec, events, cx.now);
                publish(cx, &rec);
                cx.send(
                    Address::saga(&saga_id),
                    Payload::StartCreateOrder {
                        order_id: oid,
                        customer_id,
                        total,
                    },
                    saga_id.as_str(),
                    None,
                    1,
                );
                *state = Some(rec.clone());
                Ok(rec)
            }
            OrderCmd::Cancel => {
                let rec = state.as_mut().ok_or(OrderError::NotFound)?;
                let current = fold(rec).ok_or(OrderError::NotFound)?;
                // A retried cancel while the CancelOrder saga runs answers the
                // order; a CANCELLED order is refused (409) like any non-APPROVED one.
                if rec.cancel_requested && current.state == crate::domain::OrderState::Approved {
                    return Ok(rec.clone());
                }
                // Only an APPROVED order can be cancelled; the saga applies it later.
                if current.state != crate::domain::OrderState::Approved {
                    return Err(OrderError::IllegalTransition {
                        command: "cancel",
                        state: current.state.as_str(),
                    });
                }
                rec.cancel_requested = true;
                let saga_id = SagaId::cancel_order(&oid);
                cx.send(
                    Address::saga(&saga_id),
                    Payload::StartCancelOrder {
                        order_id: oid,
                        customer_id: current.customer_id,
                    },
                    saga_id.as_str(),
                    None,
                    1,
                );
                Ok(rec.clone())
            }
        }
    }

    fn after_commit(&self, id: &str, state: &Option<OrderRecord>) {
        let events = state.as_ref().map_or(0, |r| r.events.len());
        self.watchers.notify(id, events);
    }

    const LISTED: bool = true;
    fn list_terms(&self, state: &Option<OrderRecord>) -> Vec<ListTerm> {
        order_list_terms(state.as_ref())
    }

    /// A PENDING order stays in the recovery index until it settles, so the
    /// index also lists the PENDING orders (`GET /orders?state=PENDING`)
    /// without a write of its own: the mark is made at creation anyway (the
    /// new order has messages to send) and removed when it passivates.
    /// Two more readers rely on this rule: an order stays marked until its
    /// outbox (its `OrderChanged` to the view included) is delivered, which
    /// `GET /orders?customerId` needs to miss no order (see
    /// `customer_order_ids`), and the marked orders are what admission
    /// control counts (`saga.max_in_flight`).
    fn needs_recovery(&self, rec: &EntityRecord<OrderRecord>) -> bool {
        !rec.outbox.is_empty() || order_pending(rec.state.as_ref())
    }

    fn finished(&self, state: &Option<OrderRecord>) -> bool {
        let Some(rec) = state else { return true };
        match fold(rec).map(|o| o.state) {
            Some(crate::domain::OrderState::Approved) => !rec.cancel_requested,
            Some(crate::domain::OrderState::Pending) | None => false,
            Some(_) => true,
        }
    }
}

// -------------------------------------------------------------------- sagas

/// The Saga service's entity: one CreateOrder or CancelOrder saga.
pub struct SagaLogic {
    pub policy: SagaPolicy,
}

/// Operator commands to a saga.
pub enum SagaCmd {
    Retry,
}

fn emit(cx: &mut Cx, t: &Transition) {
    for m in &t.messages {
        cx.send(
            m.to.clone(),
            m.payload.clone(),
            t.state.id.as_str(),
            Some(Address::saga(&t.state.id)),
            m.attempt,
        );
    }
}

fn observe(before: Option<&SagaState>, after: &SagaState) {
    let was_terminal = before.map(|b| b.phase.is_terminal()).unwrap_or(false);
    if after.phase.is_terminal() && !was_terminal {
        let reason = after.reason.map(|r| r.as_str()).unwrap_or("");
        metrics::counter!("durasaga_saga_outcomes_total",
            "kind" => after.kind.as_str(), "result" => after.phase.as_str(), "reason" => reason)
        .increment(1);
        let secs = (after.updated_at - after.started_at).max(0) as f64 / 1000.0;
        metrics::histogram!("durasaga_saga_duration_seconds", "kind" => after.kind.as_str())
            .record(secs);
        tracing::debug!(saga = %after.id, order = %after.order_id, phase = after.phase.as_str(), reason, "saga ended");
    }
}

impl SagaLogic {
    fn apply(&self, cx: &mut Cx, state: &mut Option<SagaState>, input: SagaInput) -> bool {
        let Some(s) = state.as_ref() else {
            return false;
        };
        let t = saga::step(s, &input, cx.now, cx.jitter, &self.policy);
        if !t.changed {
            return false;
        }
        observe(Some(s), &t.state);
        emit(cx, &t);
        *state = Some(t.state);
        true
    }
}

impl Logic for SagaLogic {
    type State = SagaState;
    type Command = SagaCmd;
    type Reply = Result<SagaState, String>;
    const SERVICE: Service = Service::Saga;

    fn recovery_grace(&self) -> Millis {
        self.policy.reply_timeout_ms
    }

    fn on_envelope(&self, cx: &mut Cx, id: &str, state: &mut Option<SagaState>, env: &Envelope) {
        let start = match &env.payload {
            Payload::StartCreateOrder {
                order_id,
                customer_id,
                total,
            } => Some((SagaKind::CreateOrder, order_id, customer_id, *total)),
            Payload::StartCancelOrder {
                order_id,
                customer_id,
            } => Some((SagaKind::CancelOrder, order_id, customer_id, Money::ZERO)),
            _ => None,
        };
        if let Some((kind, order_id, customer_id, total)) = start {
            if state.is_some() {
                return; // duplicate start
            }
            let Ok(sid) = SagaId::parse(id) else { return };
            let t = saga::start(
                sid,
                kind,
                order_id.clone(),
                customer_id.clone(),
                total,
                cx.now,
                &self.policy,
            );
            tracing::debug!(saga = id, order = %order_id, kind = kind.as_str(), "saga started");
            emit(cx, &t);
            *state = Some(t.state);
            return;
        }
        self.apply(cx, state, SagaInput::Reply(env.payload.clone()));
    }

    fn on_command(
        &self,
        cx: &mut Cx,
        _id: &str,
        state: &mut Option<SagaState>,
        cmd: SagaCmd,
    ) -> Self::Reply {
        match cmd {
            SagaCmd::Retry => {
                let Some(s) = state.as_ref() else {
                    return Err("saga not found".into());
                };
                if !matches!(
                    s.phase,
                    crate::domain::SagaPhase::Paused | crate::domain::SagaPhase::Failed
                ) {
                    return Err(format!(
                        "saga is {}, only PAUSED or FAILED sagas can be retried",
                        s.phase.as_str()
                    ));
                }
                self.apply(cx, state, SagaInput::Retry);
                state.clone().ok_or_else(|| "saga not found".into())
            }
        }
    }

    fn on_timer(&self, cx: &mut Cx, _id: &str, state: &mut Option<SagaState>) -> bool {
        self.apply(cx, state, SagaInput::Timer)
    }

    fn finished(&self, state: &Option<SagaState>) -> bool {
        state.as_ref().is_some_and(|s| s.phase.is_terminal())
    }

    const LISTED: bool = true;
    fn list_terms(&self, state: &Option<SagaState>) -> Vec<ListTerm> {
        saga_list_terms(state.as_ref())
    }

    fn deadline(&self, state: &Option<SagaState>) -> Option<Millis> {
        state
            .as_ref()
            .filter(|s| s.phase.is_active())
            .and_then(|s| s.deadline)
    }

    /// A saga in backoff waits for its own timer, not for a reply.
    fn awaits_reply(&self, state: &Option<SagaState>) -> bool {
        state
            .as_ref()
            .is_some_and(|s| s.phase.is_active() && s.deadline.is_some() && !s.in_backoff)
    }
}

// ------------------------------------------------------------------- views

/// The order-history view of one customer (the CQRS projector). Its inbox
/// cursor is the projector's durable checkpoint.
///
/// Its record holds the customer's name and limit and up to
/// [`INLINE_PIECES`] order summaries; beyond that, the summaries move out,
/// each to a part of its own versioned by the order's event count (see
/// `persistence::parts`), so a commit rewrites a few orders, not the
/// customer's whole history. Readers merge both, the higher version winning
/// ([`load_history`]); records written before parts existed are moved out
/// the same way.
pub struct ViewLogic;

/// Moves every order summary of `v` out into parts to write once it holds
/// more than [`INLINE_PIECES`] (a summary that does not encode stays inline,
/// where readers still find it).
fn summaries_to_parts(v: &mut CustomerHistory, parts: &mut Vec<PartWrite>) {
    if v.orders.len() <= INLINE_PIECES {
        return;
    }
    for (order_id, summary) in std::mem::take(&mut v.orders) {
        match crate::persistence::codec::encode(&summary) {
            Ok(value) => parts.push(PartWrite {
                part: order_id.to_string(),
                version: summary.seq,
                value,
            }),
            Err(e) => {
                tracing::error!(order = %order_id, error = %e, "order summary does not encode; kept in the record");
                v.orders.insert(order_id, summary);
            }
        }
    }
}

/// A customer's order history as stored: its record with the order summaries
/// of its parts merged in (the higher version wins over one left inline by an
/// older version). `None` if the view has no record for the customer.
pub fn load_history(
    db: &ServiceDb,
    customer: &str,
) -> Result<Option<EntityRecord<CustomerHistory>>, StoreError> {
    let Some(mut rec) = db.get::<CustomerHistory>(customer)? else {
        return Ok(None);
    };
    if let Some(v) = rec.state.as_mut() {
        merge_parts(db, customer, v)?;
    }
    Ok(Some(rec))
}

/// Merges the stored order-summary parts of `customer` into `v`.
pub fn merge_parts(
    db: &ServiceDb,
    customer: &str,
    v: &mut CustomerHistory,
) -> Result<(), StoreError> {
    for (order_id, version, summary) in
        order_parts::<crate::domain::OrderSummary>(db, customer, "order-summary")?
    {
        if v.orders.get(&order_id).is_none_or(|o| o.seq < version) {
            v.orders.insert(order_id, summary);
        }
    }
    Ok(())
}

impl Logic for ViewLogic {
    type State = CustomerHistory;
    type Command = ();
    type Reply = ();
    const SERVICE: Service = Service::View;

    fn linger_ms(&self, settings: &crate::config::Settings) -> u64 {
        settings.mailbox.view_linger_ms
    }

    fn on_envelope(
        &self,
        cx: &mut Cx,
        id: &str,
        state: &mut Option<CustomerHistory>,
        env: &Envelope,
    ) {
        if state.is_none() {
            let Ok(cid) = CustomerId::parse(id) else {
                return;
            };
            *state = Some(CustomerHistory::new(cid));
        }
        if let Some(v) = state.as_mut() {
            // Parts are written only to a higher version, so applying to the
            // inline summaries alone and writing the result is the same as
            // applying to the merged ones; readers let the higher version win
            // when an order is both inline and a part.
            v.apply(&env.payload);
            summaries_to_parts(v, &mut cx.parts);
        }
        let lag = (crate::actors::entity::now_millis() - env.sent_at).max(0) as f64 / 1000.0;
        metrics::histogram!("durasaga_view_lag_seconds").record(lag);
    }

    fn on_command(&self, _cx: &mut Cx, _id: &str, _state: &mut Option<CustomerHistory>, _cmd: ()) {}
}

#[cfg(test)]
mod tests {
    use super::SagaLogic;
    use crate::actors::entity::Logic;
    use crate::domain::{saga, CustomerId, Money, OrderId, SagaKind, SagaPhase, SagaPolicy};

    #[test]
    fn a_saga_awaits_a_reply_only_while_a_step_is_out_and_not_in_backoff() {
        let policy = SagaPolicy::default();
        let logic = SagaLogic { policy };
        let t = saga::start(
            crate::domain::SagaId::parse("s-1").expect("id"),
            SagaKind::CreateOrder,
            OrderId::parse("o-1").expect("id"),
            CustomerId::parse("c-1").expect("id"),
            Money::from_cents(100).expect("money"),
            0,
            &policy,
        );
        let mut s = Some(t.state);
        assert!(logic.awaits_reply(&s), "ReserveCredit is out");
        s.as_mut().unwrap().in_backoff = true;
        assert!(
            !logic.awaits_reply(&s),
            "in backoff it waits for its own timer"
        );
        assert!(logic.deadline(&s).is_some());
        s.as_mut().unwrap().in_backoff = false;
        s.as_mut().unwrap().phase = SagaPhase::Paused;
        assert!(!logic.awaits_reply(&s));
        s.as_mut().unwrap().phase = SagaPhase::Approved;
        assert!(!logic.awaits_reply(&s));
        assert!(!logic.awaits_reply(&None));
    }
}
