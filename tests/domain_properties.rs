//! Property tests of the pure domain: the CreateOrder saga against a simulated
//! Customer and Order service over an unreliable network, and the Customer
//! aggregate's credit invariants.

use durasaga::domain::customer::handle_missing;
use durasaga::domain::order::{apply, decide};
use durasaga::domain::saga::{start, step};
use durasaga::domain::{
    Address, Customer, CustomerCommand, CustomerId, CustomerReply, ExhaustedPolicy, Millis, Money,
    Order, OrderCommand, OrderId, OrderState, Outgoing, Payload, RecordedEvent, RejectionReason,
    Reservation, SagaId, SagaInput, SagaKind, SagaPhase, SagaPolicy, SagaState, Service,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const T0: Millis = 1_700_000_000_000;

fn money(cents: u64) -> Money {
    Money::from_cents(cents).unwrap()
}

fn reply_payload(order_id: &OrderId, r: CustomerReply) -> Payload {
    let order_id = order_id.clone();
    match r {
        CustomerReply::CreditReserved => Payload::CreditReserved { order_id },
        CustomerReply::CreditLimitExceeded => Payload::CreditLimitExceeded { order_id },
        CustomerReply::CustomerNotFound => Payload::CustomerNotFound { order_id },
        CustomerReply::CreditReleased => Payload::CreditReleased { order_id },
    }
}

/// Checks `available + reserved_total == limit`, `available >= 0` and that
/// `reserved_total` is the sum of the `Reserved` amounts.
fn check_customer_invariants(c: &Customer) -> Result<(), TestCaseError> {
    let available = c.available_credit();
    let reserved = c.reserved_total();
    prop_assert!(
        available.as_decimal() >= Money::ZERO.as_decimal(),
        "available {available} < 0"
    );
    prop_assert_eq!(
        available.checked_add(reserved).unwrap(),
        c.credit_limit,
        "available + reserved != limit"
    );
    let sum = c
        .reservations()
        .filter_map(|(_, r)| match r {
            Reservation::Reserved(m) => Some(*m),
            _ => None,
        })
        .fold(Money::ZERO, |acc, m| acc.checked_add(m).unwrap());
    prop_assert_eq!(
        sum,
        reserved,
        "reserved_total is not the sum of the reservations"
    );
    Ok(())
}

// =========================================================================
// The CreateOrder saga over an unreliable network
// =========================================================================

/// One thing that can happen in the simulated system.
#[derive(Debug, Clone)]
enum Op {
    /// Deliver an in-flight command to its service; `keep` leaves a copy in
    /// flight (it will be redelivered).
    DeliverCommand { idx: usize, keep: bool },
    /// Lose an in-flight command.
    DropCommand { idx: usize },
    /// Deliver an in-flight reply to the saga; `keep` leaves a copy in flight.
    DeliverReply { idx: usize, keep: bool },
    /// Lose an in-flight reply.
    DropReply { idx: usize },
    /// Redeliver a reply the services produced earlier (stale or duplicate).
    Redeliver { idx: usize },
    /// A reply of any kind meant for another order.
    Foreign { kind: usize },
    /// The Order service refuses a command (e.g. a concurrent change).
    Refuse,
    /// Time passes and the saga's timer is delivered.
    Timer { advance: i64, jitter: f64 },
    /// An operator retries the saga.
    Retry,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), any::<bool>()).prop_map(|(idx, keep)| Op::DeliverCommand { idx, keep }),
        2 => any::<usize>().prop_map(|idx| Op::DropCommand { idx }),
        6 => (any::<usize>(), any::<bool>()).prop_map(|(idx, keep)| Op::DeliverReply { idx, keep }),
        2 => any::<usize>().prop_map(|idx| Op::DropReply { idx }),
        3 => any::<usize>().prop_map(|idx| Op::Redeliver { idx }),
        1 => (0..10_usize).prop_map(|kind| Op::Foreign { kind }),
        1 => Just(Op::Refuse),
        5 => (0_i64..3_000, 0.0_f64..=1.0).prop_map(|(advance, jitter)| Op::Timer { advance, jitter }),
        1 => Just(Op::Retry),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    policy: SagaPolicy,
    customer_exists: bool,
    limit_cents: u64,
    /// Credit already held by other orders of the customer.
    others_cents: Vec<u64>,
    total_cents: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1_u32..=4,
        prop_oneof![
            Just(ExhaustedPolicy::Compensate),
            Just(ExhaustedPolicy::Pause)
        ],
        prop::bool::weighted(0.9),
        0_u64..20_000,
        prop::collection::vec(0_u64..5_000, 0..3),
        0_u64..15_000,
    )
        .prop_map(
            |(
                max_attempts,
                on_exhausted,
                customer_exists,
                limit_cents,
                others_cents,
                total_cents,
            )| Setup {
                policy: SagaPolicy {
                    reply_timeout_ms: 1_000,
                    max_attempts,
                    backoff_base_ms: 100,
                    backoff_max_ms: 800,
                    on_exhausted,
                },
                customer_exists,
                limit_cents,
                others_cents,
                total_cents,
            },
        )
}

struct World {
    policy: SagaPolicy,
    now: Millis,
    order_id: OrderId,
    other_order: OrderId,
    saga: SagaState,
    customer: Option<Customer>,
    order_log: Vec<RecordedEvent>,
    /// Commands the saga sent that are still on the wire.
    commands: Vec<Outgoing>,
    /// Replies on their way to the saga.
    replies: Vec<Payload>,
    /// Every reply the services ever produced.
    produced: Vec<Payload>,
    /// Whether the saga was ever given a `CreditReserved` for its order.
    saw_credit_reserved: bool,
    steps: usize,
}

impl World {
    fn new(s: &Setup) -> Self {
        let order_id = OrderId::parse("o-1").unwrap();
        let customer_id = CustomerId::parse("c-1").unwrap();
        let customer = s.customer_exists.then(|| {
            let mut c = Customer::new(customer_id.clone(), "Fred".into(), money(s.limit_cents), 0);
            for (i, cents) in s.others_cents.iter().enumerate() {
                let other = OrderId::parse(format!("other-{i}")).unwrap();
                c.handle(&CustomerCommand::ReserveCredit {
                    order_id: other,
                    amount: money(*cents),
                });
            }
            c
        });
        let created = decide(
            None,
            &OrderCommand::Create {
                customer_id: customer_id.clone(),
                total: money(s.total_cents),
            },
        )
        .unwrap();
        let order_log = created
            .into_iter()
            .map(|event| RecordedEvent {
                seq: 1,
                at: T0,
                event,
            })
            .collect();
        let t = start(
            SagaId::create_order(&order_id),
            SagaKind::CreateOrder,
            order_id.clone(),
            customer_id,
            money(s.total_cents),
            T0,
            &s.policy,
        );
        World {
            policy: s.policy,
            now: T0,
            order_id,
            other_order: OrderId::parse("o-2").unwrap(),
            saga: t.state,
            customer,
            order_log,
            commands: t.messages,
            replies: Vec::new(),
            produced: Vec::new(),
            saw_credit_reserved: false,
            steps: 0,
        }
    }

    fn order(&self) -> Option<Order> {
        Order::fold(&self.order_id, &self.order_log)
    }

    /// The Customer or Order service handles a command and answers it.
    fn serve(&mut self, msg: &Outgoing) -> Result<(), TestCaseError> {
        let reply = match (&msg.to.service, &msg.payload) {
            (
                Service::Customer,
                Payload::ReserveCredit {
                    order_id, amount, ..
                },
            ) => {
                let cmd = CustomerCommand::ReserveCredit {
                    order_id: order_id.clone(),
                    amount: *amount,
                };
                let r = match &mut self.customer {
                    Some(c) => c.handle(&cmd),
                    None => handle_missing(&cmd),
                };
                reply_payload(order_id, r)
            }
            (Service::Customer, Payload::ReleaseCredit { order_id, .. }) => {
                let cmd = CustomerCommand::ReleaseCredit {
                    order_id: order_id.clone(),
                };
                let r = match &mut self.customer {
                    Some(c) => c.handle(&cmd),
                    None => handle_missing(&cmd),
                };
                reply_payload(order_id, r)
            }
            (Service::Order, p) => {
                let (cmd, ok) = match p {
                    Payload::ApproveOrder { order_id } => (
                        OrderCommand::Approve,
                        Payload::OrderApproved {
                            order_id: order_id.clone(),
                        },
                    ),
                    Payload::RejectOrder { order_id, reason } => (
                        OrderCommand::Reject { reason: *reason },
                        Payload::OrderRejected {
                            order_id: order_id.clone(),
                            reason: *reason,
                        },
                    ),
                    Payload::CancelOrder { order_id } => (
                        OrderCommand::Cancel,
                        Payload::OrderCancelled {
                            order_id: order_id.clone(),
                        },
                    ),
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "unexpected order command {other:?}"
                        )))
                    }
                };
                let current = self.order();
                match decide(current.as_ref(), &cmd) {
                    Ok(events) => {
                        let mut state = current;
                        for event in events {
                            let e = RecordedEvent {
                                seq: self.order_log.len() as u64 + 1,
                                at: self.now,
                                event,
                            };
                            state = apply(state, &self.order_id, &e);
                            self.order_log.push(e);
                        }
                        ok
                    }
                    Err(e) => Payload::OrderCommandRefused {
                        order_id: self.order_id.clone(),
                        error: e.to_string(),
                    },
                }
            }
            (to, p) => {
                return Err(TestCaseError::fail(format!(
                    "unexpected command {p:?} to {to:?}"
                )))
            }
        };
        if let Some(c) = &self.customer {
            check_customer_invariants(c)?;
        }
        self.produced.push(reply.clone());
        self.replies.push(reply);
        Ok(())
    }

    /// Gives the saga one input and checks the saga invariants around it.
    fn input(&mut self, input: SagaInput, jitter: f64) -> Result<(), TestCaseError> {
        self.steps += 1;
        if let SagaInput::Reply(Payload::CreditReserved { order_id }) = &input {
            if *order_id == self.order_id {
                self.saw_credit_reserved = true;
            }
        }
        let before = self.saga.clone();
        let t = step(&before, &input, self.now, jitter, &self.policy);

        // Terminal phases ignore everything. Failed accepts an operator retry
        // and the late reply its failed step awaited, which moves it forward.
        let revived = before.phase == SagaPhase::Failed
            && t.changed
            && matches!(&input, SagaInput::Reply(p) if awaited_by(before.resume) == Some(p.kind()));
        if revived {
            prop_assert!(
                t.state.phase != SagaPhase::Failed,
                "revived into Failed: {:?}",
                t.state
            );
        }
        let frozen = before.phase.is_terminal()
            && !(before.phase == SagaPhase::Failed && input == SagaInput::Retry)
            && !revived;
        if frozen {
            prop_assert!(!t.changed, "{:?} changed on {:?}", before.phase, input);
            prop_assert!(t.messages.is_empty());
            prop_assert_eq!(&t.state, &before);
        }
        // Replies for another order never change anything.
        if let SagaInput::Reply(p) = &input {
            if reply_order(p) != &self.order_id {
                prop_assert!(!t.changed);
                prop_assert!(t.messages.is_empty());
                prop_assert_eq!(&t.state, &before);
            }
        }
        // No change means nothing to send and the same state.
        if !t.changed {
            prop_assert!(t.messages.is_empty());
            prop_assert_eq!(&t.state, &before);
        } else {
            prop_assert!(t.state.history.len() > before.history.len());
        }
        prop_assert_eq!(t.timer(), t.state.deadline);
        if t.state.phase.is_active() {
            prop_assert!(
                t.state.deadline.is_some(),
                "active saga without a timer: {:?}",
                t.state
            );
        } else {
            prop_assert!(
                t.state.deadline.is_none(),
                "inactive saga with a timer: {:?}",
                t.state
            );
        }
        for m in &t.messages {
            prop_assert_eq!(m.attempt, t.state.attempt);
            prop_assert_eq!(reply_order(&m.payload), &self.order_id);
            let to = match m.payload {
                Payload::ReserveCredit { .. } | Payload::ReleaseCredit { .. } => {
                    Address::customer(&self.saga.customer_id)
                }
                _ => Address::order(&self.order_id),
            };
            prop_assert_eq!(&m.to, &to);
        }
        prop_assert!(t.state.attempt >= 1 && t.state.attempt <= self.policy.max_attempts);
        prop_assert_ne!(t.state.phase, SagaPhase::CancellingOrder);
        prop_assert_ne!(t.state.phase, SagaPhase::Cancelled);

        self.saga = t.state;
        self.commands.extend(t.messages);
        self.check_outcome()
    }

    /// What the saga's phase implies about the customer's credit.
    fn check_outcome(&self) -> Result<(), TestCaseError> {
        let held = self
            .customer
            .as_ref()
            .and_then(|c| c.reservation(&self.order_id));
        match self.saga.phase {
            SagaPhase::Approved | SagaPhase::ApprovingOrder => {
                prop_assert!(
                    self.saw_credit_reserved,
                    "{:?} without a CreditReserved reply",
                    self.saga.phase
                );
                prop_assert_eq!(
                    held,
                    Some(Reservation::Reserved(self.saga.total)),
                    "approved but credit not held"
                );
            }
            SagaPhase::Rejected => {
                prop_assert!(
                    !matches!(held, Some(Reservation::Reserved(_))),
                    "rejected but the customer still holds {held:?}"
                );
            }
            _ => {}
        }
        let history = &self.saga.history;
        let finals = history
            .iter()
            .filter(|e| {
                matches!(
                    e.phase,
                    SagaPhase::Approved | SagaPhase::Rejected | SagaPhase::Cancelled
                )
            })
            .count();
        prop_assert!(finals <= 1, "more than one final phase in {history:?}");
        if finals == 1 {
            prop_assert!(history.last().unwrap().phase == self.saga.phase);
        }
        if let Some(order) = self.order() {
            match order.state {
                OrderState::Approved => {
                    prop_assert_eq!(held, Some(Reservation::Reserved(self.saga.total)))
                }
                OrderState::Rejected => {
                    prop_assert!(!matches!(held, Some(Reservation::Reserved(_))))
                }
                OrderState::Pending => {}
                OrderState::Cancelled => {
                    prop_assert!(false, "a CreateOrder saga cancelled the order")
                }
            }
        }
        Ok(())
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::DeliverCommand { idx, keep } => {
                if self.commands.is_empty() {
                    return Ok(());
                }
                let i = idx % self.commands.len();
                let msg = if *keep {
                    self.commands[i].clone()
                } else {
                    self.commands.remove(i)
                };
                self.serve(&msg)
            }
            Op::DropCommand { idx } => {
                if !self.commands.is_empty() {
                    let i = idx % self.commands.len();
                    self.commands.remove(i);
                }
                Ok(())
            }
            Op::DeliverReply { idx, keep } => {
                if self.replies.is_empty() {
                    return Ok(());
                }
                let i = idx % self.replies.len();
                let p = if *keep {
                    self.replies[i].clone()
                } else {
                    self.replies.remove(i)
                };
                self.input(SagaInput::Reply(p), 0.5)
            }
            Op::DropReply { idx } => {
                if !self.replies.is_empty() {
                    let i = idx % self.replies.len();
                    self.replies.remove(i);
                }
                Ok(())
            }
            Op::Redeliver { idx } => {
                if self.produced.is_empty() {
                    return Ok(());
                }
                let p = self.produced[idx % self.produced.len()].clone();
                self.input(SagaInput::Reply(p), 0.5)
            }
            Op::Foreign { kind } => {
                let o = self.other_order.clone();
                let p = match kind {
                    0 => Payload::CreditReserved { order_id: o },
                    1 => Payload::CreditLimitExceeded { order_id: o },
                    2 => Payload::CustomerNotFound { order_id: o },
                    3 => Payload::CreditReleased { order_id: o },
                    4 => Payload::OrderApproved { order_id: o },
                    5 => Payload::OrderRejected {
                        order_id: o,
                        reason: RejectionReason::InsufficientCredit,
                    },
                    6 => Payload::OrderRejected {
                        order_id: o,
                        reason: RejectionReason::CreditCheckTimeout,
                    },
                    7 => Payload::OrderCancelled { order_id: o },
                    8 => Payload::OrderCommandRefused {
                        order_id: o,
                        error: "nope".into(),
                    },
                    _ => Payload::OrderRejected {
                        order_id: o,
                        reason: RejectionReason::UnknownCustomer,
                    },
                };
                self.input(SagaInput::Reply(p), 0.5)
            }
            Op::Refuse => {
                let p = Payload::OrderCommandRefused {
                    order_id: self.order_id.clone(),
                    error: "concurrent change".into(),
                };
                self.input(SagaInput::Reply(p), 0.5)
            }
            Op::Timer { advance, jitter } => {
                self.now += advance;
                self.input(SagaInput::Timer, *jitter)
            }
            Op::Retry => self.input(SagaInput::Retry, 0.5),
        }
    }

    /// Delivers every message in flight (FIFO, reliably) and drives timers
    /// until the saga waits for nothing. With `operator`, also retries paused
    /// and failed sagas.
    fn settle(&mut self, operator: bool) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if !self.commands.is_empty() {
                let msg = self.commands.remove(0);
                self.serve(&msg)?;
            } else if !self.replies.is_empty() {
                let p = self.replies.remove(0);
                self.input(SagaInput::Reply(p), 0.5)?;
            } else if let (true, Some(deadline)) = (self.saga.phase.is_active(), self.saga.deadline)
            {
                self.now = self.now.max(deadline);
                self.input(SagaInput::Timer, 0.5)?;
            } else if operator && matches!(self.saga.phase, SagaPhase::Paused | SagaPhase::Failed) {
                self.now += 60_000;
                self.input(SagaInput::Retry, 0.5)?;
            } else {
                return Ok(());
            }
        }
        Err(TestCaseError::fail(format!(
            "saga never settled: {:?}",
            self.saga
        )))
    }
}

/// The reply a saga waiting in `phase` is waiting for.
fn awaited_by(phase: Option<SagaPhase>) -> Option<&'static str> {
    match phase? {
        SagaPhase::ReservingCredit => None, // several answers; never resumed from Failed
        SagaPhase::ReleasingCredit => Some("CreditReleased"),
        SagaPhase::ApprovingOrder => Some("OrderApproved"),
        SagaPhase::RejectingOrder => Some("OrderRejected"),
        SagaPhase::CancellingOrder => Some("OrderCancelled"),
        _ => None,
    }
}

fn reply_order(p: &Payload) -> &OrderId {
    p.order_id().expect("saga messages name their order")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn create_order_saga_over_an_unreliable_network_ends_in_one_consistent_terminal_phase(
        s in setup(),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let mut w = World::new(&s);
        for o in &ops {
            w.apply_op(o)?;
        }

        // Answer everything and drive the timers, without an operator.
        w.settle(false)?;
        let phase = w.saga.phase;
        prop_assert!(
            phase.is_terminal() || phase == SagaPhase::Paused,
            "settled in a non-terminal phase {:?}", w.saga
        );
        if phase == SagaPhase::Paused {
            prop_assert_eq!(s.policy.on_exhausted, ExhaustedPolicy::Pause);
        }

        // Once terminal, nothing moves it; a Failed saga only moves on an
        // operator retry or the late reply its failed step awaited (which
        // settle() below may deliver).
        if phase.is_terminal() {
            let frozen = w.saga.clone();
            if phase != SagaPhase::Failed {
                for p in w.produced.clone() {
                    w.input(SagaInput::Reply(p), 0.5)?;
                }
                w.input(SagaInput::Retry, 0.5)?;
            }
            w.now += 1_000_000;
            w.input(SagaInput::Timer, 0.5)?;
            prop_assert_eq!(&w.saga, &frozen);
        }

        // An operator resolves paused and failed sagas.
        w.settle(true)?;
        let phase = w.saga.phase;
        prop_assert!(
            matches!(phase, SagaPhase::Approved | SagaPhase::Rejected),
            "an operator could not finish the saga: {:?}", w.saga
        );
        let held = w.customer.as_ref().and_then(|c| c.reservation(&w.order_id));
        let order = w.order().unwrap();
        match phase {
            SagaPhase::Approved => {
                prop_assert!(w.saw_credit_reserved);
                prop_assert_eq!(held, Some(Reservation::Reserved(money(s.total_cents))));
                prop_assert_eq!(order.state, OrderState::Approved);
            }
            _ => {
                prop_assert!(!matches!(held, Some(Reservation::Reserved(_))));
                prop_assert_eq!(order.state, OrderState::Rejected);
                prop_assert_eq!(order.rejection_reason, w.saga.reason);
                if !s.customer_exists {
                    prop_assert!(matches!(
                        w.saga.reason,
                        Some(RejectionReason::UnknownCustomer | RejectionReason::CreditCheckTimeout)
                    ));
                }
            }
        }
        if let Some(c) = &w.customer {
            check_customer_invariants(c)?;
        }
        prop_assert!(w.steps > 0);
    }
}

// =========================================================================
// The Customer aggregate
// =========================================================================

#[derive(Debug, Clone)]
enum CreditOp {
    Reserve { order: usize, cents: u64 },
    Release { order: usize },
}

fn credit_op() -> impl Strategy<Value = CreditOp> {
    prop_oneof![
        3 => (0_usize..6, 0_u64..6_000).prop_map(|(order, cents)| CreditOp::Reserve { order, cents }),
        1 => (0_usize..6).prop_map(|order| CreditOp::Release { order }),
    ]
}

fn order_ids() -> Vec<OrderId> {
    (0..6)
        .map(|i| OrderId::parse(format!("o{i}")).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn customer_credit_stays_consistent_under_any_reserve_and_release_sequence(
        limit in 0_u64..20_000,
        ops in prop::collection::vec(credit_op(), 0..80),
    ) {
        let ids = order_ids();
        let mut c = Customer::new(CustomerId::parse("c1").unwrap(), "Fred".into(), money(limit), 0);
        let mut released: BTreeSet<usize> = BTreeSet::new();
        // The first decision for each order: Some(amount) if reserved, None if refused.
        let mut decided: BTreeMap<usize, Option<Money>> = BTreeMap::new();
        check_customer_invariants(&c)?;
        for o in &ops {
            let before = c.clone();
            match *o {
                CreditOp::Reserve { order, cents } => {
                    let id = &ids[order];
                    let amount = money(cents);
                    let r = c.handle(&CustomerCommand::ReserveCredit { order_id: id.clone(), amount });
                    if released.contains(&order) {
                        // A released order is never re-reserved.
                        prop_assert_eq!(r, CustomerReply::CreditLimitExceeded);
                        prop_assert_eq!(c.reservation(id), Some(Reservation::Released));
                        prop_assert_eq!(&c, &before);
                    } else if let Some(first) = decided.get(&order) {
                        // The first decision sticks; a duplicate holds nothing more.
                        match first {
                            Some(held) => {
                                prop_assert_eq!(r, CustomerReply::CreditReserved);
                                prop_assert_eq!(c.reservation(id), Some(Reservation::Reserved(*held)));
                            }
                            None => {
                                prop_assert_eq!(r, CustomerReply::CreditLimitExceeded);
                                prop_assert_eq!(c.reservation(id), Some(Reservation::Refused));
                            }
                        }
                        prop_assert_eq!(&c, &before);
                    } else {
                        let fits = before.available_credit() >= amount;
                        if fits {
                            prop_assert_eq!(r, CustomerReply::CreditReserved);
                            prop_assert_eq!(c.reservation(id), Some(Reservation::Reserved(amount)));
                            prop_assert_eq!(c.available_credit().checked_add(amount).unwrap(), before.available_credit());
                            decided.insert(order, Some(amount));
                        } else {
                            prop_assert_eq!(r, CustomerReply::CreditLimitExceeded);
                            prop_assert_eq!(c.reservation(id), Some(Reservation::Refused));
                            prop_assert_eq!(c.available_credit(), before.available_credit());
                            decided.insert(order, None);
                        }
                    }
                }
                CreditOp::Release { order } => {
                    let id = &ids[order];
                    let r = c.handle(&CustomerCommand::ReleaseCredit { order_id: id.clone() });
                    prop_assert_eq!(r, CustomerReply::CreditReleased);
                    prop_assert_eq!(c.reservation(id), Some(Reservation::Released));
                    let freed = match before.reservation(id) {
                        Some(Reservation::Reserved(m)) => m,
                        _ => Money::ZERO,
                    };
                    prop_assert_eq!(c.available_credit(), before.available_credit().checked_add(freed).unwrap());
                    released.insert(order);
                }
            }
            check_customer_invariants(&c)?;
            // Other orders are untouched by a command for one order.
            for (i, id) in ids.iter().enumerate() {
                let touched = match o {
                    CreditOp::Reserve { order, .. } | CreditOp::Release { order } => *order == i,
                };
                if !touched {
                    prop_assert_eq!(c.reservation(id), before.reservation(id));
                }
            }
        }
    }

    #[test]
    fn a_duplicate_reserve_for_a_reserved_order_answers_credit_reserved(
        limit in 1_u64..20_000,
        first in 0_u64..20_000,
        dup in 0_u64..40_000,
        others in prop::collection::vec((1_usize..6, 0_u64..6_000), 0..10),
    ) {
        let ids = order_ids();
        let first = first % (limit + 1);
        let mut c = Customer::new(CustomerId::parse("c1").unwrap(), "Fred".into(), money(limit), 0);
        let r = c.handle(&CustomerCommand::ReserveCredit { order_id: ids[0].clone(), amount: money(first) });
        prop_assert_eq!(r, CustomerReply::CreditReserved);
        // Other orders take whatever is left; the duplicate must still succeed,
        // with any amount, and hold the first amount only.
        for (o, cents) in others {
            c.handle(&CustomerCommand::ReserveCredit { order_id: ids[o].clone(), amount: money(cents) });
        }
        let before = c.clone();
        let r = c.handle(&CustomerCommand::ReserveCredit { order_id: ids[0].clone(), amount: money(dup) });
        prop_assert_eq!(r, CustomerReply::CreditReserved);
        prop_assert_eq!(c.reservation(&ids[0]), Some(Reservation::Reserved(money(first))));
        prop_assert_eq!(&c, &before);
        check_customer_invariants(&c)?;
    }
}
