//! Given/when/then tests of every transition of the CreateOrder and CancelOrder
//! saga state machines.

use super::*;

const T0: Millis = 1_700_000_000_000;
const TIMEOUT: i64 = 1_000;
const MAX: u32 = 3;

fn oid() -> OrderId {
    OrderId::parse("o1").unwrap()
}
fn other_oid() -> OrderId {
    OrderId::parse("o2").unwrap()
}
fn cid() -> CustomerId {
    CustomerId::parse("c1").unwrap()
}
fn total() -> Money {
    "12.34".parse().unwrap()
}

fn policy() -> SagaPolicy {
    SagaPolicy {
        reply_timeout_ms: TIMEOUT,
        max_attempts: MAX,
        backoff_base_ms: 100,
        backoff_max_ms: 10_000,
        on_exhausted: ExhaustedPolicy::Compensate,
    }
}
fn pause_policy() -> SagaPolicy {
    SagaPolicy {
        on_exhausted: ExhaustedPolicy::Pause,
        ..policy()
    }
}

fn saga_id(kind: SagaKind) -> SagaId {
    match kind {
        SagaKind::CreateOrder => SagaId::create_order(&oid()),
        SagaKind::CancelOrder => SagaId::cancel_order(&oid()),
    }
}

fn started_with(kind: SagaKind, p: &SagaPolicy) -> Transition {
    start(saga_id(kind), kind, oid(), cid(), total(), T0, p)
}
fn started(kind: SagaKind) -> Transition {
    started_with(kind, &policy())
}

fn reply_with(s: &SagaState, payload: Payload, now: Millis, p: &SagaPolicy) -> Transition {
    step(s, &SagaInput::Reply(payload), now, 0.5, p)
}
fn reply(s: &SagaState, payload: Payload, now: Millis) -> Transition {
    reply_with(s, payload, now, &policy())
}
fn timer_with(s: &SagaState, now: Millis, jitter: f64, p: &SagaPolicy) -> Transition {
    step(s, &SagaInput::Timer, now, jitter, p)
}
/// Fires the timer exactly at the current deadline.
fn fire_with(s: &SagaState, jitter: f64, p: &SagaPolicy) -> Transition {
    let deadline = s.deadline.expect("a deadline is armed");
    timer_with(s, deadline, jitter, p)
}
fn fire(s: &SagaState) -> Transition {
    fire_with(s, 0.5, &policy())
}
fn retry_with(s: &SagaState, now: Millis, p: &SagaPolicy) -> Transition {
    step(s, &SagaInput::Retry, now, 0.5, p)
}
fn retry(s: &SagaState, now: Millis) -> Transition {
    retry_with(s, now, &policy())
}

/// Fires timers (at their deadlines) until the phase changes.
fn exhaust_with(s: &SagaState, p: &SagaPolicy) -> Transition {
    let phase = s.phase;
    let mut t = fire_with(s, 0.5, p);
    for _ in 0..100 {
        if t.state.phase != phase {
            return t;
        }
        t = fire_with(&t.state, 0.5, p);
    }
    panic!("phase {phase:?} never ran out of attempts");
}
fn exhaust(s: &SagaState) -> Transition {
    exhaust_with(s, &policy())
}

// --- payloads -------------------------------------------------------------

fn credit_reserved() -> Payload {
    Payload::CreditReserved { order_id: oid() }
}
fn credit_limit_exceeded() -> Payload {
    Payload::CreditLimitExceeded { order_id: oid() }
}
fn customer_not_found() -> Payload {
    Payload::CustomerNotFound { order_id: oid() }
}
fn credit_released() -> Payload {
    Payload::CreditReleased { order_id: oid() }
}
fn order_approved() -> Payload {
    Payload::OrderApproved { order_id: oid() }
}
fn order_rejected(reason: RejectionReason) -> Payload {
    Payload::OrderRejected {
        order_id: oid(),
        reason,
    }
}
fn order_cancelled() -> Payload {
    Payload::OrderCancelled { order_id: oid() }
}
fn refused() -> Payload {
    Payload::OrderCommandRefused {
        order_id: oid(),
        error: "cannot approve an order that is REJECTED".into(),
    }
}

/// Every reply a saga can receive, for `order`.
fn all_replies(order: &OrderId) -> Vec<Payload> {
    vec![
        Payload::CreditReserved {
            order_id: order.clone(),
        },
        Payload::CreditLimitExceeded {
            order_id: order.clone(),
        },
        Payload::CustomerNotFound {
            order_id: order.clone(),
        },
        Payload::CreditReleased {
            order_id: order.clone(),
        },
        Payload::OrderApproved {
            order_id: order.clone(),
        },
        Payload::OrderRejected {
            order_id: order.clone(),
            reason: RejectionReason::InsufficientCredit,
        },
        Payload::OrderRejected {
            order_id: order.clone(),
            reason: RejectionReason::UnknownCustomer,
        },
        Payload::OrderRejected {
            order_id: order.clone(),
            reason: RejectionReason::CreditCheckTimeout,
        },
        Payload::OrderCancelled {
            order_id: order.clone(),
        },
        Payload::OrderCommandRefused {
            order_id: order.clone(),
            error: "nope".into(),
        },
    ]
}

/// Every input a saga can receive: all replies, a timer and an operator retry.
fn all_inputs(order: &OrderId) -> Vec<SagaInput> {
    let mut inputs: Vec<SagaInput> = all_replies(order)
        .into_iter()
        .map(SagaInput::Reply)
        .collect();
    inputs.push(SagaInput::Timer);
    inputs.push(SagaInput::Retry);
    inputs
}

// --- expected messages ----------------------------------------------------

fn reserve_msg(attempt: u32) -> Outgoing {
    Outgoing {
        to: Address::customer(&cid()),
        payload: Payload::ReserveCredit {
            order_id: oid(),
            customer_id: cid(),
            amount: total(),
        },
        attempt,
    }
}
fn release_msg(attempt: u32) -> Outgoing {
    Outgoing {
        to: Address::customer(&cid()),
        payload: Payload::ReleaseCredit {
            order_id: oid(),
            customer_id: cid(),
        },
        attempt,
    }
}
fn approve_msg(attempt: u32) -> Outgoing {
    Outgoing {
        to: Address::order(&oid()),
        payload: Payload::ApproveOrder { order_id: oid() },
        attempt,
    }
}
fn reject_msg(reason: RejectionReason, attempt: u32) -> Outgoing {
    Outgoing {
        to: Address::order(&oid()),
        payload: Payload::RejectOrder {
            order_id: oid(),
            reason,
        },
        attempt,
    }
}
fn cancel_msg(attempt: u32) -> Outgoing {
    Outgoing {
        to: Address::order(&oid()),
        payload: Payload::CancelOrder { order_id: oid() },
        attempt,
    }
}

fn h(at: Millis, phase: SagaPhase, attempt: u32, cause: &str) -> SagaHistoryEntry {
    SagaHistoryEntry {
        at,
        phase,
        attempt,
        cause: cause.to_owned(),
    }
}

fn last(s: &SagaState) -> &SagaHistoryEntry {
    s.history.last().expect("history is never empty")
}

#[track_caller]
fn assert_unchanged(before: &SagaState, t: &Transition) {
    assert!(!t.changed, "expected no change, got {:?}", t.state.phase);
    assert!(
        t.messages.is_empty(),
        "expected no messages, got {:?}",
        t.messages
    );
    assert_eq!(&t.state, before);
}

#[track_caller]
fn assert_entered(t: &Transition, phase: SagaPhase, now: Millis, cause: &str) {
    assert!(t.changed);
    assert_eq!(t.state.phase, phase);
    assert_eq!(t.state.attempt, 1);
    assert!(!t.state.in_backoff);
    assert_eq!(t.state.updated_at, now);
    assert_eq!(last(&t.state), &h(now, phase, 1, cause));
    if phase.is_terminal() {
        assert_eq!(t.state.deadline, None);
        assert_eq!(t.timer(), None);
        assert!(t.messages.is_empty());
    } else {
        assert_eq!(t.state.deadline, Some(now + TIMEOUT));
        assert_eq!(t.timer(), Some(now + TIMEOUT));
        assert_eq!(t.state.resume, None);
        assert_eq!(t.state.error, None);
    }
}

/// A CreateOrder saga in `ApprovingOrder`.
fn approving() -> SagaState {
    let s = started(SagaKind::CreateOrder).state;
    reply(&s, credit_reserved(), T0 + 10).state
}
/// A CreateOrder saga in `RejectingOrder` for insufficient credit.
fn rejecting() -> SagaState {
    let s = started(SagaKind::CreateOrder).state;
    reply(&s, credit_limit_exceeded(), T0 + 10).state
}
/// A CreateOrder saga compensating after its credit check ran out of attempts.
fn compensating() -> SagaState {
    let s = started(SagaKind::CreateOrder).state;
    let t = exhaust(&s);
    assert_eq!(t.state.phase, SagaPhase::ReleasingCredit);
    t.state
}
/// A CreateOrder saga paused after its credit check ran out of attempts.
fn paused() -> SagaState {
    let p = pause_policy();
    let s = started_with(SagaKind::CreateOrder, &p).state;
    let t = exhaust_with(&s, &p);
    assert_eq!(t.state.phase, SagaPhase::Paused);
    t.state
}
/// A CancelOrder saga in `CancellingOrder`.
fn cancelling() -> SagaState {
    let s = started(SagaKind::CancelOrder).state;
    reply(&s, credit_released(), T0 + 10).state
}

fn approved() -> SagaState {
    let s = approving();
    reply(&s, order_approved(), T0 + 20).state
}
fn rejected() -> SagaState {
    let s = rejecting();
    reply(
        &s,
        order_rejected(RejectionReason::InsufficientCredit),
        T0 + 20,
    )
    .state
}
fn cancelled() -> SagaState {
    let s = cancelling();
    reply(&s, order_cancelled(), T0 + 20).state
}
fn failed() -> SagaState {
    let s = approving();
    reply(&s, refused(), T0 + 20).state
}

// =========================================================================
// start
// =========================================================================

#[test]
fn given_nothing_when_create_order_saga_starts_then_reserving_credit_and_reserve_sent() {
    let t = started(SagaKind::CreateOrder);
    assert_entered(&t, SagaPhase::ReservingCredit, T0, "Start");
    let s = &t.state;
    assert_eq!(s.id, SagaId::create_order(&oid()));
    assert_eq!(s.kind, SagaKind::CreateOrder);
    assert_eq!(s.order_id, oid());
    assert_eq!(s.customer_id, cid());
    assert_eq!(s.total, total());
    assert_eq!(s.reason, None);
    assert_eq!(s.started_at, T0);
    assert_eq!(
        s.history,
        vec![h(T0, SagaPhase::ReservingCredit, 1, "Start")]
    );
    assert_eq!(t.messages, vec![reserve_msg(1)]);
}

#[test]
fn given_nothing_when_cancel_order_saga_starts_then_releasing_credit_and_release_sent() {
    let t = started(SagaKind::CancelOrder);
    assert_entered(&t, SagaPhase::ReleasingCredit, T0, "Start");
    assert_eq!(t.state.id, SagaId::cancel_order(&oid()));
    assert_eq!(t.state.kind, SagaKind::CancelOrder);
    assert_eq!(
        t.state.history,
        vec![h(T0, SagaPhase::ReleasingCredit, 1, "Start")]
    );
    assert_eq!(t.messages, vec![release_msg(1)]);
}

#[test]
fn given_a_policy_when_a_saga_starts_then_the_deadline_is_the_reply_timeout() {
    let p = SagaPolicy {
        reply_timeout_ms: 42,
        ..policy()
    };
    let t = started_with(SagaKind::CreateOrder, &p);
    assert_eq!(t.state.deadline, Some(T0 + 42));
    assert_eq!(t.timer(), Some(T0 + 42));
}

// =========================================================================
// CreateOrder: the credit check replies
// =========================================================================

#[test]
fn given_reserving_credit_when_credit_reserved_then_approving_order() {
    let s = started(SagaKind::CreateOrder).state;
    let t = reply(&s, credit_reserved(), T0 + 10);
    assert_entered(&t, SagaPhase::ApprovingOrder, T0 + 10, "CreditReserved");
    assert_eq!(t.state.reason, None);
    assert_eq!(t.messages, vec![approve_msg(1)]);
    assert_eq!(
        t.state.history,
        vec![
            h(T0, SagaPhase::ReservingCredit, 1, "Start"),
            h(T0 + 10, SagaPhase::ApprovingOrder, 1, "CreditReserved")
        ]
    );
}

#[test]
fn given_reserving_credit_when_credit_limit_exceeded_then_rejecting_order_for_insufficient_credit()
{
    let s = started(SagaKind::CreateOrder).state;
    let t = reply(&s, credit_limit_exceeded(), T0 + 10);
    assert_entered(
        &t,
        SagaPhase::RejectingOrder,
        T0 + 10,
        "CreditLimitExceeded",
    );
    assert_eq!(t.state.reason, Some(RejectionReason::InsufficientCredit));
    assert_eq!(
        t.messages,
        vec![reject_msg(RejectionReason::InsufficientCredit, 1)]
    );
    assert_eq!(t.state.history.len(), 2);
}

#[test]
fn given_reserving_credit_when_customer_not_found_then_rejecting_order_for_unknown_customer() {
    let s = started(SagaKind::CreateOrder).state;
    let t = reply(&s, customer_not_found(), T0 + 10);
    assert_entered(&t, SagaPhase::RejectingOrder, T0 + 10, "CustomerNotFound");
    assert_eq!(t.state.reason, Some(RejectionReason::UnknownCustomer));
    assert_eq!(
        t.messages,
        vec![reject_msg(RejectionReason::UnknownCustomer, 1)]
    );
}

#[test]
fn given_reserving_credit_when_credit_released_arrives_then_nothing_changes() {
    let s = started(SagaKind::CreateOrder).state;
    assert_unchanged(&s, &reply(&s, credit_released(), T0 + 10));
}

#[test]
fn given_reserving_credit_when_an_order_reply_arrives_then_nothing_changes() {
    let s = started(SagaKind::CreateOrder).state;
    for p in [
        order_approved(),
        order_rejected(RejectionReason::InsufficientCredit),
        order_cancelled(),
        refused(),
    ] {
        assert_unchanged(&s, &reply(&s, p, T0 + 10));
    }
}

// =========================================================================
// CreateOrder: approving and rejecting the order
// =========================================================================

#[test]
fn given_approving_order_when_order_approved_then_approved() {
    let s = approving();
    let t = reply(&s, order_approved(), T0 + 20);
    assert_entered(&t, SagaPhase::Approved, T0 + 20, "OrderApproved");
    assert_eq!(
        t.state.history,
        vec![
            h(T0, SagaPhase::ReservingCredit, 1, "Start"),
            h(T0 + 10, SagaPhase::ApprovingOrder, 1, "CreditReserved"),
            h(T0 + 20, SagaPhase::Approved, 1, "OrderApproved"),
        ]
    );
}

#[test]
fn given_rejecting_order_when_order_rejected_then_rejected() {
    let s = rejecting();
    let t = reply(
        &s,
        order_rejected(RejectionReason::InsufficientCredit),
        T0 + 20,
    );
    assert_entered(&t, SagaPhase::Rejected, T0 + 20, "OrderRejected");
    assert_eq!(t.state.reason, Some(RejectionReason::InsufficientCredit));
    assert_eq!(
        t.state.history,
        vec![
            h(T0, SagaPhase::ReservingCredit, 1, "Start"),
            h(T0 + 10, SagaPhase::RejectingOrder, 1, "CreditLimitExceeded"),
            h(T0 + 20, SagaPhase::Rejected, 1, "OrderRejected"),
        ]
    );
}

#[test]
fn given_approving_order_when_order_command_refused_then_failed_and_resumable() {
    let s = approving();
    let t = reply(&s, refused(), T0 + 20);
    assert!(t.changed);
    assert!(t.messages.is_empty());
    assert_eq!(t.state.phase, SagaPhase::Failed);
    assert_eq!(t.state.resume, Some(SagaPhase::ApprovingOrder));
    assert_eq!(t.state.deadline, None);
    assert!(!t.state.in_backoff);
    assert_eq!(t.state.updated_at, T0 + 20);
    let error = t.state.error.as_deref().expect("an error is recorded");
    assert!(error.contains("APPROVING_ORDER"), "{error}");
    assert!(
        error.contains("cannot approve an order that is REJECTED"),
        "{error}"
    );
    assert_eq!(
        last(&t.state),
        &h(T0 + 20, SagaPhase::Failed, 1, "OrderCommandRefused")
    );
}

#[test]
fn given_rejecting_order_when_order_command_refused_then_failed() {
    let s = rejecting();
    let t = reply(&s, refused(), T0 + 20);
    assert!(t.changed);
    assert!(t.messages.is_empty());
    assert_eq!(t.state.phase, SagaPhase::Failed);
    assert_eq!(t.state.resume, Some(SagaPhase::RejectingOrder));
    assert!(t
        .state
        .error
        .as_deref()
        .unwrap()
        .contains("REJECTING_ORDER"));
    assert_eq!(
        last(&t.state),
        &h(T0 + 20, SagaPhase::Failed, 1, "OrderCommandRefused")
    );
}

#[test]
fn given_failed_approval_when_operator_retries_then_approving_order_again() {
    let s = failed();
    let t = retry(&s, T0 + 30);
    assert_entered(&t, SagaPhase::ApprovingOrder, T0 + 30, "OperatorRetry");
    assert_eq!(t.messages, vec![approve_msg(1)]);
    let t = reply(&t.state, order_approved(), T0 + 40);
    assert_eq!(t.state.phase, SagaPhase::Approved);
}

#[test]
fn given_failed_rejection_when_operator_retries_then_the_same_reason_is_resent() {
    let s = rejecting();
    let s = reply(&s, refused(), T0 + 20).state;
    let t = retry(&s, T0 + 30);
    assert_entered(&t, SagaPhase::RejectingOrder, T0 + 30, "OperatorRetry");
    assert_eq!(
        t.messages,
        vec![reject_msg(RejectionReason::InsufficientCredit, 1)]
    );
}

#[test]
fn given_approving_order_when_approve_never_answered_then_failed_even_with_pause_policy() {
    for p in [policy(), pause_policy()] {
        let s = started_with(SagaKind::CreateOrder, &p).state;
        let s = reply_with(&s, credit_reserved(), T0 + 10, &p).state;
        let t = exhaust_with(&s, &p);
        assert_eq!(t.state.phase, SagaPhase::Failed);
        assert_eq!(t.state.resume, Some(SagaPhase::ApprovingOrder));
        assert_eq!(t.state.attempt, MAX);
        assert_eq!(
            t.state.error.as_deref(),
            Some("APPROVING_ORDER got no reply after 3 attempts")
        );
        assert!(t.messages.is_empty());
        assert_eq!(last(&t.state).cause, "RetriesExhausted");
        assert_eq!(last(&t.state).phase, SagaPhase::Failed);
    }
}

#[test]
fn given_approving_order_when_reply_times_out_then_approve_resent_after_backoff() {
    let s = approving();
    let t = fire(&s);
    assert!(t.state.in_backoff);
    assert!(t.messages.is_empty());
    let t = fire(&t.state);
    assert_eq!(t.messages, vec![approve_msg(2)]);
    assert_eq!(t.state.phase, SagaPhase::ApprovingOrder);
}

#[test]
fn given_rejecting_order_when_reply_times_out_then_reject_resent_with_the_same_reason() {
    let s = rejecting();
    let t = fire(&fire(&s).state);
    assert_eq!(
        t.messages,
        vec![reject_msg(RejectionReason::InsufficientCredit, 2)]
    );
}

// =========================================================================
// Timeouts, backoff and resends
// =========================================================================

#[test]
fn given_reserving_credit_when_reply_times_out_then_backoff_with_the_given_jitter() {
    for jitter in [0.0, 0.25, 0.5, 1.0] {
        let p = policy();
        let s = started(SagaKind::CreateOrder).state;
        let now = T0 + TIMEOUT;
        let t = timer_with(&s, now, jitter, &p);
        assert!(t.changed);
        assert!(t.messages.is_empty());
        assert_eq!(t.state.phase, SagaPhase::ReservingCredit);
        assert_eq!(t.state.attempt, 1);
        assert!(t.state.in_backoff);
        assert_eq!(t.state.deadline, Some(now + p.backoff(1, jitter)));
        assert_eq!(t.timer(), t.state.deadline);
        assert_eq!(t.state.updated_at, now);
        assert_eq!(
            last(&t.state),
            &h(now, SagaPhase::ReservingCredit, 1, "Timeout")
        );
    }
}

#[test]
fn given_reserving_credit_when_timer_fires_late_then_backoff_counts_from_now() {
    let p = policy();
    let s = started(SagaKind::CreateOrder).state;
    let now = T0 + TIMEOUT + 5_000;
    let t = timer_with(&s, now, 1.0, &p);
    assert_eq!(t.state.deadline, Some(now + p.backoff(1, 1.0)));
}

#[test]
fn given_backoff_when_it_ends_then_reserve_resent_with_next_attempt() {
    let s = started(SagaKind::CreateOrder).state;
    let s = fire(&s).state;
    let end = s.deadline.unwrap();
    let t = timer_with(&s, end, 0.9, &policy());
    assert!(t.changed);
    assert_eq!(t.state.phase, SagaPhase::ReservingCredit);
    assert_eq!(t.state.attempt, 2);
    assert!(!t.state.in_backoff);
    assert_eq!(t.state.deadline, Some(end + TIMEOUT));
    assert_eq!(t.messages, vec![reserve_msg(2)]);
    assert_eq!(
        last(&t.state),
        &h(end, SagaPhase::ReservingCredit, 2, "Retry")
    );
}

#[test]
fn given_second_attempt_when_it_times_out_then_backoff_doubles() {
    let p = policy();
    let s = started(SagaKind::CreateOrder).state;
    let s = fire(&fire(&s).state).state;
    assert_eq!(s.attempt, 2);
    let now = s.deadline.unwrap();
    let t = timer_with(&s, now, 1.0, &p);
    assert!(t.state.in_backoff);
    assert_eq!(t.state.deadline, Some(now + p.backoff(2, 1.0)));
    assert_eq!(p.backoff(2, 1.0), 200);
    assert_eq!(p.backoff(1, 1.0), 100);
    assert_eq!(
        last(&t.state),
        &h(now, SagaPhase::ReservingCredit, 2, "Timeout")
    );
}

#[test]
fn given_every_attempt_times_out_then_reserve_sent_once_per_attempt() {
    let s = started(SagaKind::CreateOrder);
    let mut sent = s.messages.clone();
    let mut t = s;
    while t.state.phase == SagaPhase::ReservingCredit {
        t = fire(&t.state);
        if t.state.phase == SagaPhase::ReservingCredit {
            sent.extend(t.messages.clone());
        }
    }
    assert_eq!(sent, (1..=MAX).map(reserve_msg).collect::<Vec<_>>());
}

#[test]
fn given_backoff_when_credit_reserved_arrives_then_approving_order_and_backoff_ends() {
    let s = started(SagaKind::CreateOrder).state;
    let s = fire(&s).state;
    assert!(s.in_backoff);
    let now = s.deadline.unwrap() - 1;
    let t = reply(&s, credit_reserved(), now);
    assert_entered(&t, SagaPhase::ApprovingOrder, now, "CreditReserved");
    assert_eq!(t.messages, vec![approve_msg(1)]);
}

#[test]
fn given_a_late_attempt_when_credit_limit_exceeded_then_rejecting_order_with_attempt_one() {
    let s = started(SagaKind::CreateOrder).state;
    let s = fire(&fire(&s).state).state;
    assert_eq!(s.attempt, 2);
    let t = reply(&s, credit_limit_exceeded(), s.updated_at + 1);
    assert_entered(
        &t,
        SagaPhase::RejectingOrder,
        s.updated_at + 1,
        "CreditLimitExceeded",
    );
    assert_eq!(
        t.messages,
        vec![reject_msg(RejectionReason::InsufficientCredit, 1)]
    );
}

#[test]
fn given_reserving_credit_when_timer_fires_before_the_deadline_then_nothing_changes() {
    let s = started(SagaKind::CreateOrder).state;
    let deadline = s.deadline.unwrap();
    for now in [T0, T0 + 1, deadline - 1] {
        assert_unchanged(&s, &timer_with(&s, now, 0.5, &policy()));
    }
}

#[test]
fn given_backoff_when_timer_fires_before_it_ends_then_nothing_changes() {
    let s = started(SagaKind::CreateOrder).state;
    let s = fire(&s).state;
    let end = s.deadline.unwrap();
    assert_unchanged(&s, &timer_with(&s, end - 1, 0.5, &policy()));
}

#[test]
fn given_reserving_credit_when_operator_retries_then_nothing_changes() {
    let s = started(SagaKind::CreateOrder).state;
    assert_unchanged(&s, &retry(&s, T0 + 10));
    let s = fire(&s).state;
    assert_unchanged(&s, &retry(&s, T0 + TIMEOUT + 10));
}

// =========================================================================
// Retries exhausted: compensate
// =========================================================================

#[test]
fn given_last_attempt_when_it_times_out_and_policy_compensates_then_releasing_credit() {
    let s = started(SagaKind::CreateOrder).state;
    let mut t = fire(&s);
    while t.state.attempt != MAX || t.state.in_backoff {
        t = fire(&t.state);
    }
    let now = t.state.deadline.unwrap();
    let t = timer_with(&t.state, now, 0.5, &policy());
    assert_entered(&t, SagaPhase::ReleasingCredit, now, "RetriesExhausted");
    assert_eq!(t.state.kind, SagaKind::CreateOrder);
    assert_eq!(t.messages, vec![release_msg(1)]);
}

#[test]
fn given_compensating_create_order_when_credit_released_then_rejecting_order_for_credit_check_timeout(
) {
    let s = compensating();
    let now = s.updated_at + 10;
    let t = reply(&s, credit_released(), now);
    assert_entered(&t, SagaPhase::RejectingOrder, now, "CreditReleased");
    assert_eq!(t.state.reason, Some(RejectionReason::CreditCheckTimeout));
    assert_eq!(
        t.messages,
        vec![reject_msg(RejectionReason::CreditCheckTimeout, 1)]
    );
}

#[test]
fn given_exhausted_credit_check_when_compensation_completes_then_rejected_with_full_history() {
    let p = policy();
    let t = started(SagaKind::CreateOrder);
    // attempt 1 times out at T0+1000, backoff(1, 0.5) = 75, resent at T0+1075,
    // attempt 2 times out at T0+2075, backoff(2, 0.5) = 150, resent at T0+2225,
    // attempt 3 times out at T0+3225: exhausted.
    assert_eq!(p.backoff(1, 0.5), 75);
    assert_eq!(p.backoff(2, 0.5), 150);
    let t = exhaust(&t.state);
    let released_at = T0 + 3_300;
    let t = reply(&t.state, credit_released(), released_at);
    let t = reply(
        &t.state,
        order_rejected(RejectionReason::CreditCheckTimeout),
        released_at + 10,
    );
    assert!(t.changed);
    assert_eq!(t.state.phase, SagaPhase::Rejected);
    assert_eq!(t.state.reason, Some(RejectionReason::CreditCheckTimeout));
    assert_eq!(t.state.deadline, None);
    assert_eq!(
        t.state.history,
        vec![
            h(T0, SagaPhase::ReservingCredit, 1, "Start"),
            h(T0 + 1_000, SagaPhase::ReservingCredit, 1, "Timeout"),
            h(T0 + 1_075, SagaPhase::ReservingCredit, 2, "Retry"),
            h(T0 + 2_075, SagaPhase::ReservingCredit, 2, "Timeout"),
            h(T0 + 2_225, SagaPhase::ReservingCredit, 3, "Retry"),
            h(
                T0 + 3_225,
                SagaPhase::ReleasingCredit,
                1,
                "RetriesExhausted"
            ),
            h(released_at, SagaPhase::RejectingOrder, 1, "CreditReleased"),
            h(released_at + 10, SagaPhase::Rejected, 1, "OrderRejected"),
        ]
    );
}

#[test]
fn given_compensating_when_late_credit_reserved_then_nothing_changes() {
    let s = compensating();
    for p in [
        credit_reserved(),
        credit_limit_exceeded(),
        customer_not_found(),
    ] {
        assert_unchanged(&s, &reply(&s, p, s.updated_at + 1));
    }
}

#[test]
fn given_compensating_when_release_times_out_then_release_resent_with_next_attempt() {
    let s = compensating();
    let t = fire(&s);
    assert!(t.state.in_backoff);
    assert!(t.messages.is_empty());
    let t = fire(&t.state);
    assert_eq!(t.state.phase, SagaPhase::ReleasingCredit);
    assert_eq!(t.state.attempt, 2);
    assert_eq!(t.messages, vec![release_msg(2)]);
}

#[test]
fn given_compensating_when_release_never_answered_then_failed() {
    let s = compensating();
    let t = exhaust(&s);
    assert!(t.changed);
    assert!(t.messages.is_empty());
    assert_eq!(t.state.phase, SagaPhase::Failed);
    assert_eq!(t.state.resume, Some(SagaPhase::ReleasingCredit));
    assert_eq!(t.state.attempt, MAX);
    assert_eq!(t.state.deadline, None);
    assert_eq!(
        t.state.error.as_deref(),
        Some("RELEASING_CREDIT got no reply after 3 attempts")
    );
    let at = t.state.updated_at;
    assert_eq!(
        last(&t.state),
        &h(at, SagaPhase::Failed, MAX, "RetriesExhausted")
    );
}

#[test]
fn given_failed_compensation_when_operator_retries_then_releasing_credit_again() {
    let s = exhaust(&compensating()).state;
    let now = s.updated_at + 60_000;
    let t = retry(&s, now);
    assert_entered(&t, SagaPhase::ReleasingCredit, now, "OperatorRetry");
    assert_eq!(t.messages, vec![release_msg(1)]);
    let t = reply(&t.state, credit_released(), now + 1);
    assert_eq!(t.state.phase, SagaPhase::RejectingOrder);
    assert_eq!(t.state.reason, Some(RejectionReason::CreditCheckTimeout));
}

#[test]
fn given_failed_compensation_when_a_late_credit_released_arrives_then_the_rejection_goes_on() {
    let s = exhaust(&compensating()).state;
    assert_eq!(s.phase, SagaPhase::Failed);
    let t = reply(&s, credit_released(), s.updated_at + 1);
    assert!(t.changed);
    assert_eq!(t.state.phase, SagaPhase::RejectingOrder);
    assert_eq!(t.state.reason, Some(RejectionReason::CreditCheckTimeout));
    assert_eq!(t.state.error, None);
    assert_eq!(t.state.resume, None);
    assert_eq!(t.messages.len(), 1);
}

#[test]
fn given_failed_approval_when_the_late_order_approved_arrives_then_approved() {
    let s = failed();
    assert_eq!(s.resume, Some(SagaPhase::ApprovingOrder));
    let t = reply(
        &s,
        Payload::OrderApproved { order_id: oid() },
        s.updated_at + 1,
    );
    assert!(t.changed);
    assert_eq!(t.state.phase, SagaPhase::Approved);
    assert_eq!(t.state.error, None);
    assert!(t.messages.is_empty());
    // Once approved, the saga is frozen as usual.
    assert_unchanged(&t.state, &retry(&t.state, t.state.updated_at + 1));
}

// =========================================================================
// Retries exhausted: pause
// =========================================================================

#[test]
fn given_last_attempt_when_it_times_out_and_policy_pauses_then_paused() {
    let p = pause_policy();
    let s = started_with(SagaKind::CreateOrder, &p).state;
    let t = exhaust_with(&s, &p);
    assert!(t.changed);
    assert!(t.messages.is_empty());
    assert_eq!(t.state.phase, SagaPhase::Paused);
    assert_eq!(t.state.resume, Some(SagaPhase::ReservingCredit));
    assert_eq!(
        t.state.error.as_deref(),
        Some("RESERVING_CREDIT got no reply after 3 attempts")
    );
    assert_eq!(t.state.attempt, MAX);
    assert_eq!(t.state.deadline, None);
    assert_eq!(t.timer(), None);
    assert!(!t.state.in_backoff);
    let at = t.state.updated_at;
    assert_eq!(
        last(&t.state),
        &h(at, SagaPhase::Paused, MAX, "RetriesExhausted")
    );
    assert!(!t.state.phase.is_terminal());
    assert!(!t.state.phase.is_active());
}

#[test]
fn given_paused_when_late_credit_reserved_then_approving_order() {
    let s = paused();
    let now = s.updated_at + 10;
    let t = reply_with(&s, credit_reserved(), now, &pause_policy());
    assert_entered(&t, SagaPhase::ApprovingOrder, now, "CreditReserved");
    assert_eq!(t.messages, vec![approve_msg(1)]);
}

#[test]
fn given_paused_when_late_credit_limit_exceeded_then_rejecting_order() {
    let s = paused();
    let now = s.updated_at + 10;
    let t = reply_with(&s, credit_limit_exceeded(), now, &pause_policy());
    assert_entered(&t, SagaPhase::RejectingOrder, now, "CreditLimitExceeded");
    assert_eq!(
        t.messages,
        vec![reject_msg(RejectionReason::InsufficientCredit, 1)]
    );
}

#[test]
fn given_paused_when_late_customer_not_found_then_rejecting_order() {
    let s = paused();
    let now = s.updated_at + 10;
    let t = reply_with(&s, customer_not_found(), now, &pause_policy());
    assert_entered(&t, SagaPhase::RejectingOrder, now, "CustomerNotFound");
    assert_eq!(
        t.messages,
        vec![reject_msg(RejectionReason::UnknownCustomer, 1)]
    );
}

#[test]
fn given_paused_when_operator_retries_then_reserving_credit_from_attempt_one() {
    let p = pause_policy();
    let s = paused();
    let now = s.updated_at + 60_000;
    let t = retry_with(&s, now, &p);
    assert_entered(&t, SagaPhase::ReservingCredit, now, "OperatorRetry");
    assert_eq!(t.messages, vec![reserve_msg(1)]);
    let t = reply_with(&t.state, credit_reserved(), now + 1, &p);
    assert_eq!(t.state.phase, SagaPhase::ApprovingOrder);
}

#[test]
fn given_paused_when_timer_fires_then_nothing_changes() {
    let s = paused();
    for now in [s.updated_at, s.updated_at + 1_000_000] {
        assert_unchanged(&s, &timer_with(&s, now, 0.5, &pause_policy()));
    }
}

#[test]
fn given_paused_when_unrelated_replies_arrive_then_nothing_changes() {
    let s = paused();
    for p in [
        credit_released(),
        order_approved(),
        order_rejected(RejectionReason::InsufficientCredit),
        refused(),
    ] {
        assert_unchanged(&s, &reply_with(&s, p, s.updated_at + 1, &pause_policy()));
    }
}

#[test]
fn given_paused_when_replies_for_another_order_arrive_then_nothing_changes() {
    let s = paused();
    for p in all_replies(&other_oid()) {
        assert_unchanged(&s, &reply_with(&s, p, s.updated_at + 1, &pause_policy()));
    }
}

// =========================================================================
// CancelOrder
// =========================================================================

#[test]
fn given_releasing_credit_for_cancel_when_credit_released_then_cancelling_order() {
    let s = started(SagaKind::CancelOrder).state;
    let t = reply(&s, credit_released(), T0 + 10);
    assert_entered(&t, SagaPhase::CancellingOrder, T0 + 10, "CreditReleased");
    assert_eq!(t.state.reason, None);
    assert_eq!(t.messages, vec![cancel_msg(1)]);
}

#[test]
fn given_cancelling_order_when_order_cancelled_then_cancelled() {
    let s = cancelling();
    let t = reply(&s, order_cancelled(), T0 + 20);
    assert_entered(&t, SagaPhase::Cancelled, T0 + 20, "OrderCancelled");
    assert_eq!(
        t.state.history,
        vec![
            h(T0, SagaPhase::ReleasingCredit, 1, "Start"),
            h(T0 + 10, SagaPhase::CancellingOrder, 1, "CreditReleased"),
            h(T0 + 20, SagaPhase::Cancelled, 1, "OrderCancelled"),
        ]
    );
}

#[test]
fn given_releasing_credit_for_cancel_when_credit_check_replies_arrive_then_nothing_changes() {
    let s = started(SagaKind::CancelOrder).state;
    for p in [
        credit_reserved(),
        credit_limit_exceeded(),
        customer_not_found(),
        order_approved(),
        order_cancelled(),
        refused(),
    ] {
        assert_unchanged(&s, &reply(&s, p, T0 + 10));
    }
}

#[test]
fn given_releasing_credit_for_cancel_when_reply_times_out_then_backoff_then_release_resent() {
    let p = policy();
    let s = started(SagaKind::CancelOrder).state;
    let now = T0 + TIMEOUT;
    let t = timer_with(&s, now, 0.3, &p);
    assert!(t.state.in_backoff);
    assert!(t.messages.is_empty());
    assert_eq!(t.state.deadline, Some(now + p.backoff(1, 0.3)));
    assert_eq!(
        last(&t.state),
        &h(now, SagaPhase::ReleasingCredit, 1, "Timeout")
    );
    let end = t.state.deadline.unwrap();
    let t = timer_with(&t.state, end, 0.3, &p);
    assert_eq!(t.state.attempt, 2);
    assert_eq!(t.state.deadline, Some(end + TIMEOUT));
    assert_eq!(t.messages, vec![release_msg(2)]);
    assert_eq!(
        last(&t.state),
        &h(end, SagaPhase::ReleasingCredit, 2, "Retry")
    );
}

#[test]
fn given_releasing_credit_for_cancel_when_retries_exhausted_then_failed_under_either_policy() {
    for p in [policy(), pause_policy()] {
        let s = started_with(SagaKind::CancelOrder, &p).state;
        let t = exhaust_with(&s, &p);
        assert!(t.messages.is_empty());
        assert_eq!(t.state.phase, SagaPhase::Failed);
        assert_eq!(t.state.resume, Some(SagaPhase::ReleasingCredit));
        assert_eq!(
            t.state.error.as_deref(),
            Some("RELEASING_CREDIT got no reply after 3 attempts")
        );
        assert_eq!(last(&t.state).cause, "RetriesExhausted");
    }
}

#[test]
fn given_failed_cancel_release_when_operator_retries_then_releasing_credit_then_cancelling() {
    let s = exhaust(&started(SagaKind::CancelOrder).state).state;
    let now = s.updated_at + 100;
    let t = retry(&s, now);
    assert_entered(&t, SagaPhase::ReleasingCredit, now, "OperatorRetry");
    assert_eq!(t.messages, vec![release_msg(1)]);
    let t = reply(&t.state, credit_released(), now + 1);
    assert_eq!(t.state.phase, SagaPhase::CancellingOrder);
    assert_eq!(t.messages, vec![cancel_msg(1)]);
}

#[test]
fn given_cancelling_order_when_order_command_refused_then_failed() {
    let s = cancelling();
    let t = reply(&s, refused(), T0 + 20);
    assert!(t.changed);
    assert!(t.messages.is_empty());
    assert_eq!(t.state.phase, SagaPhase::Failed);
    assert_eq!(t.state.resume, Some(SagaPhase::CancellingOrder));
    assert!(t
        .state
        .error
        .as_deref()
        .unwrap()
        .contains("CANCELLING_ORDER"));
    assert_eq!(
        last(&t.state),
        &h(T0 + 20, SagaPhase::Failed, 1, "OrderCommandRefused")
    );
    let t = retry(&t.state, T0 + 30);
    assert_entered(&t, SagaPhase::CancellingOrder, T0 + 30, "OperatorRetry");
    assert_eq!(t.messages, vec![cancel_msg(1)]);
}

#[test]
fn given_cancelling_order_when_cancel_never_answered_then_failed_and_retry_resends_cancel() {
    let s = cancelling();
    let t = exhaust(&s);
    assert_eq!(t.state.phase, SagaPhase::Failed);
    assert_eq!(t.state.resume, Some(SagaPhase::CancellingOrder));
    let t = retry(&t.state, t.state.updated_at + 1);
    assert_eq!(t.state.phase, SagaPhase::CancellingOrder);
    assert_eq!(t.messages, vec![cancel_msg(1)]);
}

#[test]
fn given_cancelling_order_when_cancel_times_out_then_resent_with_next_attempt() {
    let s = cancelling();
    let t = fire(&fire(&s).state);
    assert_eq!(t.state.attempt, 2);
    assert_eq!(t.messages, vec![cancel_msg(2)]);
}

#[test]
fn given_cancelling_order_when_duplicate_credit_released_then_nothing_changes() {
    let s = cancelling();
    assert_unchanged(&s, &reply(&s, credit_released(), T0 + 15));
}

#[test]
fn given_cancel_saga_when_replies_for_another_order_arrive_then_nothing_changes() {
    for s in [started(SagaKind::CancelOrder).state, cancelling()] {
        for p in all_replies(&other_oid()) {
            assert_unchanged(&s, &reply(&s, p, T0 + 15));
        }
    }
}

#[test]
fn given_cancelling_order_when_timer_fires_before_the_deadline_then_nothing_changes() {
    let s = cancelling();
    let deadline = s.deadline.unwrap();
    assert_unchanged(&s, &timer_with(&s, deadline - 1, 0.5, &policy()));
}

// =========================================================================
// Late and duplicate replies
// =========================================================================

#[test]
fn given_approving_order_when_duplicate_credit_reserved_then_nothing_changes() {
    let s = approving();
    assert_unchanged(&s, &reply(&s, credit_reserved(), T0 + 15));
}

#[test]
fn given_approving_order_when_late_credit_check_replies_arrive_then_nothing_changes() {
    let s = approving();
    for p in [
        credit_limit_exceeded(),
        customer_not_found(),
        credit_released(),
        order_rejected(RejectionReason::InsufficientCredit),
        order_cancelled(),
    ] {
        assert_unchanged(&s, &reply(&s, p, T0 + 15));
    }
}

#[test]
fn given_rejecting_order_when_late_credit_reserved_then_nothing_changes() {
    let s = rejecting();
    for p in [
        credit_reserved(),
        credit_limit_exceeded(),
        customer_not_found(),
        credit_released(),
        order_approved(),
        order_cancelled(),
    ] {
        assert_unchanged(&s, &reply(&s, p, T0 + 15));
    }
}

#[test]
fn given_approved_when_duplicate_order_approved_then_nothing_changes() {
    let s = approved();
    assert_unchanged(&s, &reply(&s, order_approved(), T0 + 30));
    assert_unchanged(&s, &reply(&s, credit_reserved(), T0 + 30));
}

#[test]
fn given_rejected_when_duplicate_order_rejected_then_nothing_changes() {
    let s = rejected();
    assert_unchanged(
        &s,
        &reply(
            &s,
            order_rejected(RejectionReason::InsufficientCredit),
            T0 + 30,
        ),
    );
    assert_unchanged(&s, &reply(&s, credit_limit_exceeded(), T0 + 30));
}

#[test]
fn given_any_active_phase_when_replies_for_another_order_arrive_then_nothing_changes() {
    let states = [
        started(SagaKind::CreateOrder).state,
        approving(),
        rejecting(),
        compensating(),
        cancelling(),
    ];
    for s in states {
        for p in all_replies(&other_oid()) {
            assert_unchanged(&s, &reply(&s, p, s.updated_at + 1));
        }
    }
}

#[test]
fn given_a_command_payload_as_a_reply_then_nothing_changes() {
    let s = started(SagaKind::CreateOrder).state;
    for p in [
        reserve_msg(1).payload,
        release_msg(1).payload,
        approve_msg(1).payload,
        Payload::StartCreateOrder {
            order_id: oid(),
            customer_id: cid(),
            total: total(),
        },
        Payload::StartCancelOrder {
            order_id: oid(),
            customer_id: cid(),
        },
    ] {
        assert_unchanged(&s, &reply(&s, p, T0 + 1));
    }
}

// =========================================================================
// Terminal states
// =========================================================================

#[test]
fn given_approved_rejected_or_cancelled_when_any_input_then_nothing_changes() {
    for s in [approved(), rejected(), cancelled()] {
        assert!(s.phase.is_terminal());
        assert_eq!(s.deadline, None);
        for input in all_inputs(&oid())
            .into_iter()
            .chain(all_inputs(&other_oid()))
        {
            for now in [s.updated_at, s.updated_at + 1_000_000] {
                for jitter in [0.0, 1.0] {
                    assert_unchanged(&s, &step(&s, &input, now, jitter, &policy()));
                }
            }
        }
    }
}

#[test]
fn given_failed_when_any_input_but_retry_or_the_awaited_reply_then_nothing_changes() {
    let failed_states = [
        failed(),
        exhaust(&compensating()).state,
        exhaust(&cancelling()).state,
    ];
    for s in failed_states {
        assert_eq!(s.phase, SagaPhase::Failed);
        assert!(s.phase.is_terminal());
        let awaited = match s.resume {
            Some(SagaPhase::ReleasingCredit) => "CreditReleased",
            Some(SagaPhase::ApprovingOrder) => "OrderApproved",
            Some(SagaPhase::RejectingOrder) => "OrderRejected",
            Some(SagaPhase::CancellingOrder) => "OrderCancelled",
            other => panic!("unexpected resume phase {other:?}"),
        };
        for input in all_inputs(&oid()) {
            if input == SagaInput::Retry {
                continue;
            }
            let t = step(&s, &input, s.updated_at + 1_000_000, 0.5, &policy());
            match &input {
                SagaInput::Reply(p) if p.kind() == awaited => {
                    assert!(t.changed, "{awaited} must revive {s:?}");
                    assert_ne!(t.state.phase, SagaPhase::Failed);
                }
                _ => assert_unchanged(&s, &t),
            }
        }
        for input in all_inputs(&other_oid()) {
            if input != SagaInput::Retry {
                assert_unchanged(
                    &s,
                    &step(&s, &input, s.updated_at + 1_000_000, 0.5, &policy()),
                );
            }
        }
        assert!(retry(&s, s.updated_at + 1).changed);
    }
}

#[test]
fn given_a_terminal_phase_then_it_is_neither_active_nor_paused() {
    for p in [
        SagaPhase::Approved,
        SagaPhase::Rejected,
        SagaPhase::Cancelled,
        SagaPhase::Failed,
    ] {
        assert!(p.is_terminal());
        assert!(!p.is_active());
    }
    for p in [
        SagaPhase::ReservingCredit,
        SagaPhase::ReleasingCredit,
        SagaPhase::ApprovingOrder,
        SagaPhase::RejectingOrder,
        SagaPhase::CancellingOrder,
    ] {
        assert!(!p.is_terminal());
        assert!(p.is_active());
        assert_eq!(SagaPhase::parse(p.as_str()), Some(p));
    }
    assert_eq!(SagaPhase::parse("PAUSED"), Some(SagaPhase::Paused));
    assert_eq!(SagaPhase::parse("nope"), None);
}

// =========================================================================
// Backoff
// =========================================================================

#[test]
fn given_full_jitter_then_backoff_doubles_per_attempt_and_is_capped_at_backoff_max() {
    let p = SagaPolicy {
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        ..policy()
    };
    let got: Vec<i64> = (1..=7).map(|a| p.backoff(a, 1.0)).collect();
    assert_eq!(got, vec![100, 200, 400, 800, 1_000, 1_000, 1_000]);
    assert_eq!(p.backoff(0, 1.0), 100);
    assert_eq!(p.backoff(u32::MAX, 1.0), 1_000);
}

#[test]
fn given_zero_jitter_then_backoff_is_half_and_given_full_jitter_then_it_is_the_whole() {
    let p = SagaPolicy {
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        ..policy()
    };
    assert_eq!(p.backoff(1, 0.0), 50);
    assert_eq!(p.backoff(1, 1.0), 100);
    assert_eq!(p.backoff(1, 0.5), 75);
    assert_eq!(p.backoff(10, 0.0), 500);
    assert_eq!(p.backoff(10, 1.0), 1_000);
}

#[test]
fn given_any_jitter_then_backoff_is_between_half_and_full_of_the_capped_exponential() {
    let p = SagaPolicy {
        backoff_base_ms: 101,
        backoff_max_ms: 5_001,
        ..policy()
    };
    for attempt in 0_u32..40 {
        let raw = (101_i64 << attempt.max(1).saturating_sub(1).min(30)).min(5_001);
        let mut prev = i64::MIN;
        for i in 0..=100 {
            let jitter = f64::from(i) / 100.0;
            let b = p.backoff(attempt, jitter);
            assert!(
                b >= raw / 2 && b <= raw,
                "attempt {attempt} jitter {jitter}: {b} not in [{}, {raw}]",
                raw / 2
            );
            assert!(b >= prev, "backoff must not shrink as jitter grows");
            prev = b;
        }
    }
}

#[test]
fn given_out_of_range_jitter_then_backoff_stays_within_bounds() {
    let p = SagaPolicy {
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        ..policy()
    };
    assert_eq!(p.backoff(1, -3.0), 50);
    assert_eq!(p.backoff(1, 7.0), 100);
    assert_eq!(p.backoff(1, f64::INFINITY), 75);
    assert_eq!(p.backoff(1, f64::NEG_INFINITY), 75);
    assert_eq!(p.backoff(1, f64::NAN), 75);
}

#[test]
fn given_huge_base_then_backoff_saturates_at_the_cap() {
    let p = SagaPolicy {
        backoff_base_ms: i64::MAX / 2,
        backoff_max_ms: 60_000,
        ..policy()
    };
    for attempt in [1, 2, 31, 64, u32::MAX] {
        let b = p.backoff(attempt, 1.0);
        assert_eq!(b, 60_000);
    }
}

#[test]
fn given_a_late_attempt_when_it_times_out_then_the_backoff_deadline_is_capped() {
    let p = SagaPolicy {
        max_attempts: 10,
        backoff_base_ms: 100,
        backoff_max_ms: 300,
        ..policy()
    };
    let mut s = started_with(SagaKind::CreateOrder, &p).state;
    // Run to attempt 5 (raw backoff 1600 > cap 300).
    while s.attempt < 5 {
        s = fire_with(&s, 1.0, &p).state;
    }
    assert!(!s.in_backoff);
    let now = s.deadline.unwrap();
    let t = timer_with(&s, now, 1.0, &p);
    assert_eq!(t.state.deadline, Some(now + 300));
    let t0 = timer_with(&s, now, 0.0, &p);
    assert_eq!(t0.state.deadline, Some(now + 150));
}
