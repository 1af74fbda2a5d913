//! The CreateOrder and CancelOrder sagas as pure state machines.
//!
//! `start` and `step` are `(state, input, now, jitter) -> Transition`: the new
//! state, the messages to send and the next timer deadline. The caller persists
//! the state together with the messages (outbox) in one write and arms the
//! timer; nothing here does I/O, reads a clock or draws random numbers.
//!
//! Invariants: a saga approves only after a `CreditReserved` reply; it ends in
//! exactly one terminal phase (`Approved`, `Rejected`, `Cancelled` or `Failed`)
//! and ignores every input once there (except, for `Failed`, an operator retry
//! or the late reply its failed step was waiting for);
//! replies that do not fit the current phase (late or duplicate) change nothing.

use super::ids::{CustomerId, OrderId, SagaId};
use super::messages::{Address, Payload, RejectionReason};
use super::money::Money;
use super::Millis;
use serde::{Deserialize, Serialize};

/// Which saga this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SagaKind {
    /// Reserve credit, then approve or reject the order.
    CreateOrder,
    /// Release the credit of an approved order, then cancel it.
    CancelOrder,
}

impl SagaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaKind::CreateOrder => "CreateOrder",
            SagaKind::CancelOrder => "CancelOrder",
        }
    }
}

/// What to do when the credit check runs out of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExhaustedPolicy {
    /// Release any credit and reject the order with `CREDIT_CHECK_TIMEOUT`.
    Compensate,
    /// Stop and wait for an operator's retry.
    Pause,
}

/// Timeouts and retry limits of every saga step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaPolicy {
    /// How long to wait for a reply before the attempt counts as failed.
    pub reply_timeout_ms: i64,
    /// Attempts per step, the first included.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt.
    pub backoff_base_ms: i64,
    /// Ceiling of the backoff.
    pub backoff_max_ms: i64,
    pub on_exhausted: ExhaustedPolicy,
}

impl Default for SagaPolicy {
    fn default() -> Self {
        Self {
            reply_timeout_ms: 5_000,
            max_attempts: 5,
            backoff_base_ms: 200,
            backoff_max_ms: 10_000,
            on_exhausted: ExhaustedPolicy::Compensate,
        }
    }
}

impl SagaPolicy {
    /// Backoff before attempt `attempt + 1`: exponential, capped, with "equal
    /// jitter" (half fixed, half scaled by `jitter` in `[0, 1]`).
    pub fn backoff(&self, attempt: u32, jitter: f64) -> i64 {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self
            .backoff_base_ms
            .saturating_mul(1_i64 << exp)
            .min(self.backoff_max_ms)
            .max(0);
        let j = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.5
        };
        raw / 2 + ((raw - raw / 2) as f64 * j) as i64
    }
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SagaPhase {
    ReservingCredit,
    ReleasingCredit,
    ApprovingOrder,
    RejectingOrder,
    CancellingOrder,
    /// Waiting for an operator (`POST /sagas/{id}/retry`).
    Paused,
    Approved,
    Rejected,
    Cancelled,
    /// A step ran out of attempts; visible and retryable through the admin API.
    Failed,
}

impl SagaPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaPhase::ReservingCredit => "RESERVING_CREDIT",
            SagaPhase::ReleasingCredit => "RELEASING_CREDIT",
            SagaPhase::ApprovingOrder => "APPROVING_ORDER",
            SagaPhase::RejectingOrder => "REJECTING_ORDER",
            SagaPhase::CancellingOrder => "CANCELLING_ORDER",
            SagaPhase::Paused => "PAUSED",
            SagaPhase::Approved => "APPROVED",
            SagaPhase::Rejected => "REJECTED",
            SagaPhase::Cancelled => "CANCELLED",
            SagaPhase::Failed => "FAILED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            SagaPhase::ReservingCredit,
            SagaPhase::ReleasingCredit,
            SagaPhase::ApprovingOrder,
            SagaPhase::RejectingOrder,
            SagaPhase::CancellingOrder,
            SagaPhase::Paused,
            SagaPhase::Approved,
            SagaPhase::Rejected,
            SagaPhase::Cancelled,
            SagaPhase::Failed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
    /// Finished for good (`Failed` only ends until an operator retries it).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaPhase::Approved | SagaPhase::Rejected | SagaPhase::Cancelled | SagaPhase::Failed
        )
    }
    /// Whether the saga is waiting on a reply or a timer.
    pub fn is_active(self) -> bool {
        !self.is_terminal() && self != SagaPhase::Paused
    }
}

/// One entry of a saga's transition history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaHistoryEntry {
    pub at: Millis,
    pub phase: SagaPhase,
    pub attempt: u32,
    /// What caused the transition, e.g. `Start`, `CreditReserved`, `Timeout`.
    pub cause: String,
}

/// The durable state of one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    pub id: SagaId,
    pub kind: SagaKind,
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub total: Money,
    pub phase: SagaPhase,
    /// The reason the order is being (or was) rejected.
    pub reason: Option<RejectionReason>,
    /// Attempt number of the current step, 1-based.
    pub attempt: u32,
    /// When the timer fires: the reply timeout, or the end of a backoff.
    pub deadline: Option<Millis>,
    /// Whether `deadline` ends a backoff (then the step is re-sent) rather than
    /// a reply timeout.
    pub in_backoff: bool,
    /// The phase an operator retry resumes (set when `Paused` or `Failed`).
    pub resume: Option<SagaPhase>,
    /// Why the saga is paused or failed.
    pub error: Option<String>,
    pub started_at: Millis,
    pub updated_at: Millis,
    pub history: Vec<SagaHistoryEntry>,
}

/// An input to a running saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaInput {
    /// A reply from another service.
    Reply(Payload),
    /// A timer fired; only acts if the current deadline has passed.
    Timer,
    /// An operator asked to resume a paused or failed saga.
    Retry,
}

/// A message the saga wants sent; the caller wraps it in an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Address,
    pub payload: Payload,
    pub attempt: u32,
}

/// The result of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: SagaState,
    pub messages: Vec<Outgoing>,
    /// Whether anything changed (if not, there is nothing to persist).
    pub changed: bool,
}

impl Transition {
    /// When the caller must deliver `SagaInput::Timer`, if ever.
    pub fn timer(&self) -> Option<Millis> {
        self.state.deadline
    }
}

/// Starts a saga: the first step's message and its reply timeout.
pub fn start(
    id: SagaId,
    kind: SagaKind,
    order_id: OrderId,
    customer_id: CustomerId,
    total: Money,
    now: Millis,
    policy: &SagaPolicy,
) -> Transition {
    let phase = match kind {
        SagaKind::CreateOrder => SagaPhase::ReservingCredit,
        SagaKind::CancelOrder => SagaPhase::ReleasingCredit,
    };
    let state = SagaState {
        id,
        kind,
        order_id,
        customer_id,
        total,
        phase,
        reason: None,
        attempt: 0,
        deadline: None,
        in_backoff: false,
        resume: None,
        error: None,
        started_at: now,
        updated_at: now,
        history: Vec::new(),
    };
    enter(state, phase, "Start", now, policy)
}

/// Advances a saga by one input.
pub fn step(
    state: &SagaState,
    input: &SagaInput,
    now: Millis,
    jitter: f64,
    policy: &SagaPolicy,
) -> Transition {
    match input {
        SagaInput::Reply(p) => on_reply(state, p, now, policy),
        SagaInput::Timer => on_timer(state, now, jitter, policy),
        SagaInput::Retry => on_retry(state, now, policy),
    }
}

fn unchanged(state: &SagaState) -> Transition {
    Transition {
        state: state.clone(),
        messages: Vec::new(),
        changed: false,
    }
}

/// Enters `phase` with attempt 1 and sends its message (if it has one).
fn enter(
    mut s: SagaState,
    phase: SagaPhase,
    cause: &str,
    now: Millis,
    policy: &SagaPolicy,
) -> Transition {
    s.phase = phase;
    s.attempt = 1;
    s.in_backoff = false;
    s.updated_at = now;
    if phase.is_terminal() || phase == SagaPhase::Paused {
        s.deadline = None;
    } else {
        s.resume = None;
        s.error = None;
        s.deadline = Some(now.saturating_add(policy.reply_timeout_ms));
    }
    s.history.push(SagaHistoryEntry {
        at: now,
        phase,
        attempt: s.attempt,
        cause: cause.to_owned(),
    });
    let messages = step_message(&s).into_iter().collect();
    Transition {
        state: s,
        messages,
        changed: true,
    }
}

/// The command the current phase sends, if any.
fn step_message(s: &SagaState) -> Option<Outgoing> {
    let payload = match s.phase {
        SagaPhase::ReservingCredit => Payload::ReserveCredit {
            order_id: s.order_id.clone(),
            customer_id: s.customer_id.clone(),
            amount: s.total,
        },
        SagaPhase::ReleasingCredit => Payload::ReleaseCredit {
            order_id: s.order_id.clone(),
            customer_id: s.customer_id.clone(),
        },
        SagaPhase::ApprovingOrder => Payload::ApproveOrder {
            order_id: s.order_id.clone(),
        },
        SagaPhase::RejectingOrder => Payload::RejectOrder {
            order_id: s.order_id.clone(),
            reason: s.reason.unwrap_or(RejectionReason::CreditCheckTimeout),
        },
        SagaPhase::CancellingOrder => Payload::CancelOrder {
            order_id: s.order_id.clone(),
        },
        _ => return None,
    };
    let to = match s.phase {
        SagaPhase::ReservingCredit | SagaPhase::ReleasingCredit => {
            Address::customer(&s.customer_id)
        }
        _ => Address::order(&s.order_id),
    };
    Some(Outgoing {
        to,
        payload,
        attempt: s.attempt,
    })
}

fn reject(
    s: &SagaState,
    reason: RejectionReason,
    cause: &str,
    now: Millis,
    policy: &SagaPolicy,
) -> Transition {
    let mut s = s.clone();
    s.reason = Some(reason);
    enter(s, SagaPhase::RejectingOrder, cause, now, policy)
}

fn fail(s: &SagaState, error: String, cause: &str, now: Millis) -> Transition {
    let mut s = s.clone();
    s.resume = Some(s.phase);
    s.error = Some(error);
    s.phase = SagaPhase::Failed;
    s.deadline = None;
    s.in_backoff = false;
    s.updated_at = now;
    s.history.push(SagaHistoryEntry {
        at: now,
        phase: SagaPhase::Failed,
        attempt: s.attempt,
        cause: cause.to_owned(),
    });
    Transition {
        state: s,
        messages: Vec::new(),
        changed: true,
    }
}

fn on_reply(s: &SagaState, p: &Payload, now: Millis, policy: &SagaPolicy) -> Transition {
    if p_order(p) != Some(&s.order_id) {
        return unchanged(s);
    }
    // A paused or failed saga still accepts the reply it was waiting for: a
    // late answer proves the step happened (e.g. an order approved while its
    // saga's attempts timed out behind a backlog). A failed saga moves only
    // forward this way; a late refusal leaves it as it is.
    if s.phase == SagaPhase::Failed {
        let mut waiting = s.clone();
        waiting.phase = s.resume.unwrap_or(s.phase);
        waiting.resume = None;
        waiting.error = None;
        let t = on_reply(&waiting, p, now, policy);
        return if t.changed && t.state.phase != SagaPhase::Failed {
            t
        } else {
            unchanged(s)
        };
    }
    let phase = if s.phase == SagaPhase::Paused {
        s.resume.unwrap_or(s.phase)
    } else {
        s.phase
    };
    let cause = p.kind();
    match (phase, p) {
        (SagaPhase::ReservingCredit, Payload::CreditReserved { .. }) => {
            enter(s.clone(), SagaPhase::ApprovingOrder, cause, now, policy)
        }
        (SagaPhase::ReservingCredit, Payload::CreditLimitExceeded { .. }) => {
            reject(s, RejectionReason::InsufficientCredit, cause, now, policy)
        }
        (SagaPhase::ReservingCredit, Payload::CustomerNotFound { .. }) => {
            reject(s, RejectionReason::UnknownCustomer, cause, now, policy)
        }
        (SagaPhase::ReleasingCredit, Payload::CreditReleased { .. }) => match s.kind {
            SagaKind::CreateOrder => {
                reject(s, RejectionReason::CreditCheckTimeout, cause, now, policy)
            }
            SagaKind::CancelOrder => {
                enter(s.clone(), SagaPhase::CancellingOrder, cause, now, policy)
            }
        },
        (SagaPhase::ApprovingOrder, Payload::OrderApproved { .. }) => {
            enter(s.clone(), SagaPhase::Approved, cause, now, policy)
        }
        (SagaPhase::RejectingOrder, Payload::OrderRejected { .. }) => {
            enter(s.clone(), SagaPhase::Rejected, cause, now, policy)
        }
        (SagaPhase::CancellingOrder, Payload::OrderCancelled { .. }) => {
            enter(s.clone(), SagaPhase::Cancelled, cause, now, policy)
        }
        (
            SagaPhase::ApprovingOrder | SagaPhase::RejectingOrder | SagaPhase::CancellingOrder,
            Payload::OrderCommandRefused { error, .. },
        ) => fail(
            s,
            format!("order refused {}: {error}", phase.as_str()),
            cause,
            now,
        ),
        _ => unchanged(s),
    }
}

fn p_order(p: &Payload) -> Option<&OrderId> {
    p.order_id()
}

fn on_timer(s: &SagaState, now: Millis, jitter: f64, policy: &SagaPolicy) -> Transition {
    let Some(deadline) = s.deadline else {
        return unchanged(s);
    };
    if now < deadline || !s.phase.is_active() {
        return unchanged(s);
    }
    let mut n = s.clone();
    n.updated_at = now;
    if s.in_backoff {
        // Backoff over: send the step again.
        n.attempt = s.attempt.saturating_add(1);
        n.in_backoff = false;
        n.deadline = Some(now.saturating_add(policy.reply_timeout_ms));
        n.history.push(SagaHistoryEntry {
            at: now,
            phase: n.phase,
            attempt: n.attempt,
            cause: "Retry".into(),
        });
        let messages = step_message(&n).into_iter().collect();
        return Transition {
            state: n,
            messages,
            changed: true,
        };
    }
    if s.attempt < policy.max_attempts {
        n.in_backoff = true;
        n.deadline = Some(now.saturating_add(policy.backoff(s.attempt, jitter)));
        n.history.push(SagaHistoryEntry {
            at: now,
            phase: n.phase,
            attempt: n.attempt,
            cause: "Timeout".into(),
        });
        return Transition {
            state: n,
            messages: Vec::new(),
            changed: true,
        };
    }
    let exhausted = format!(
        "{} got no reply after {} attempts",
        s.phase.as_str(),
        s.attempt
    );
    match (s.phase, policy.on_exhausted) {
        (SagaPhase::ReservingCredit, ExhaustedPolicy::Compensate) => enter(
            n,
            SagaPhase::ReleasingCredit,
            "RetriesExhausted",
            now,
            policy,
        ),
        (SagaPhase::ReservingCredit, ExhaustedPolicy::Pause) => {
            n.resume = Some(SagaPhase::ReservingCredit);
            n.error = Some(exhausted);
            n.phase = SagaPhase::Paused;
            n.deadline = None;
            n.in_backoff = false;
            n.history.push(SagaHistoryEntry {
                at: now,
                phase: SagaPhase::Paused,
                attempt: n.attempt,
                cause: "RetriesExhausted".into(),
            });
            Transition {
                state: n,
                messages: Vec::new(),
                changed: true,
            }
        }
        _ => fail(s, exhausted, "RetriesExhausted", now),
    }
}

fn on_retry(s: &SagaState, now: Millis, policy: &SagaPolicy) -> Transition {
    match (s.phase, s.resume) {
        (SagaPhase::Paused | SagaPhase::Failed, Some(resume)) => {
            enter(s.clone(), resume, "OperatorRetry", now, policy)
        }
        _ => unchanged(s),
    }
}

#[cfg(test)]
mod tests;
