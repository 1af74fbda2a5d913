//! The Order aggregate, event-sourced: its events are the record and its state
//! is their fold.
//!
//! `decide` holds all the business logic (which events a command produces, or
//! why it is refused); `apply` only evolves state. Commands that would repeat a
//! transition already made (a redelivered `ApproveOrder`) produce no events, so
//! handling is idempotent. Illegal transitions are errors, never panics.

use super::ids::{CustomerId, OrderId};
use super::messages::RejectionReason;
use super::money::Money;
use super::Millis;
use serde::{Deserialize, Serialize};

/// The lifecycle state of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderState {
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

impl OrderState {
    /// The wire name, e.g. `PENDING`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "PENDING",
            OrderState::Approved => "APPROVED",
            OrderState::Rejected => "REJECTED",
            OrderState::Cancelled => "CANCELLED",
        }
    }
    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(OrderState::Pending),
            "APPROVED" => Some(OrderState::Approved),
            "REJECTED" => Some(OrderState::Rejected),
            "CANCELLED" => Some(OrderState::Cancelled),
            _ => None,
        }
    }
    /// Whether the CreateOrder saga is over for an order in this state.
    pub fn is_settled(self) -> bool {
        !matches!(self, OrderState::Pending)
    }
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderCreated {
        customer_id: CustomerId,
        total: Money,
    },
    OrderApproved,
    OrderRejected {
        reason: RejectionReason,
    },
    OrderCancelled,
}

impl OrderEvent {
    /// The event type name used in the history API.
    pub fn type_name(&self) -> &'static str {
        match self {
            OrderEvent::OrderCreated { .. } => "OrderCreated",
            OrderEvent::OrderApproved => "OrderApproved",
            OrderEvent::OrderRejected { .. } => "OrderRejected",
            OrderEvent::OrderCancelled => "OrderCancelled",
        }
    }
}

/// An event with its position in the order's log and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// 1-based, strictly increasing per order.
    pub seq: u64,
    pub at: Millis,
    pub event: OrderEvent,
}

/// Commands the Order service handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    Create {
        customer_id: CustomerId,
        total: Money,
    },
    Approve,
    Reject {
        reason: RejectionReason,
    },
    Cancel,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order does not exist")]
    NotFound,
    #[error("order already exists with different data")]
    AlreadyExists,
    #[error("cannot {command} an order that is {state}")]
    IllegalTransition {
        command: &'static str,
        state: &'static str,
    },
}

/// The fold of an order's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub total: Money,
    pub state: OrderState,
    pub rejection_reason: Option<RejectionReason>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Order {
    /// Folds a log of events into the order they describe; `None` if the log is
    /// empty or does not start with `OrderCreated`.
    pub fn fold<'a>(
        id: &OrderId,
        events: impl IntoIterator<Item = &'a RecordedEvent>,
    ) -> Option<Order> {
        let mut order: Option<Order> = None;
        for e in events {
            order = apply(order, id, e);
        }
        order
    }
}

/// Decides which events `cmd` produces for the current state (`None`: the order
/// does not exist yet).
pub fn decide(order: Option<&Order>, cmd: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
    use OrderCommand as C;
    use OrderState as S;
    let Some(o) = order else {
        return match cmd {
            C::Create { customer_id, total } => Ok(vec![OrderEvent::OrderCreated {
                customer_id: customer_id.clone(),
                total: *total,
            }]),
            _ => Err(OrderError::NotFound),
        };
    };
    let refuse = |command| {
        Err(OrderError::IllegalTransition {
            command,
            state: o.state.as_str(),
        })
    };
    match (cmd, o.state) {
        (C::Create { customer_id, total }, _) => {
            if &o.customer_id == customer_id && o.total == *total {
                Ok(vec![])
            } else {
                Err(OrderError::AlreadyExists)
            }
        }
        (C::Approve, S::Pending) => Ok(vec![OrderEvent::OrderApproved]),
        // A CANCELLED order was APPROVED first: approving it again (a late
        // retry of its CreateOrder saga) is done already, not an error.
        (C::Approve, S::Approved | S::Cancelled) => Ok(vec![]),
        (C::Approve, _) => refuse("approve"),
        (C::Reject { reason }, S::Pending) => {
            Ok(vec![OrderEvent::OrderRejected { reason: *reason }])
        }
        (C::Reject { .. }, S::Rejected) => Ok(vec![]),
        (C::Reject { .. }, _) => refuse("reject"),
        (C::Cancel, S::Approved) => Ok(vec![OrderEvent::OrderCancelled]),
        (C::Cancel, S::Cancelled) => Ok(vec![]),
        (C::Cancel, _) => refuse("cancel"),
    }
}

/// Evolves state by one recorded event. No decisions here: an event that does
/// not fit (which `decide` never produces) leaves the state as it was.
pub fn apply(order: Option<Order>, id: &OrderId, e: &RecordedEvent) -> Option<Order> {
    match (&e.event, order) {
        (OrderEvent::OrderCreated { customer_id, total }, None) => Some(Order {
            id: id.clone(),
            customer_id: customer_id.clone(),
            total: *total,
            state: OrderState::Pending,
            rejection_reason: None,
            created_at: e.at,
            updated_at: e.at,
        }),
        (_, None) => None,
        (OrderEvent::OrderCreated { .. }, Some(o)) => Some(o),
        (OrderEvent::OrderApproved, Some(o)) => Some(Order {
            state: OrderState::Approved,
            updated_at: e.at,
            ..o
        }),
        (OrderEvent::OrderRejected { reason }, Some(o)) => Some(Order {
            state: OrderState::Rejected,
            rejection_reason: Some(*reason),
            updated_at: e.at,
            ..o
        }),
        (OrderEvent::OrderCancelled, Some(o)) => Some(Order {
            state: OrderState::Cancelled,
            updated_at: e.at,
            ..o
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid() -> OrderId {
        OrderId::parse("o1").unwrap()
    }
    fn create() -> OrderCommand {
        OrderCommand::Create {
            customer_id: CustomerId::parse("c1").unwrap(),
            total: "12.34".parse().unwrap(),
        }
    }
    /// Runs commands through decide + apply, as the actor does.
    fn run(
        cmds: &[OrderCommand],
    ) -> (
        Option<Order>,
        Vec<RecordedEvent>,
        Vec<Result<usize, OrderError>>,
    ) {
        let mut log: Vec<RecordedEvent> = Vec::new();
        let mut results = Vec::new();
        for (t, c) in cmds.iter().enumerate() {
            let state = Order::fold(&oid(), &log);
            match decide(state.as_ref(), c) {
                Ok(evs) => {
                    results.push(Ok(evs.len()));
                    for ev in evs {
                        log.push(RecordedEvent {
                            seq: log.len() as u64 + 1,
                            at: t as i64,
                            event: ev,
                        });
                    }
                }
                Err(e) => results.push(Err(e)),
            }
        }
        (Order::fold(&oid(), &log), log, results)
    }

    #[test]
    fn given_nothing_when_created_then_pending() {
        let (o, log, _) = run(&[create()]);
        assert_eq!(o.unwrap().state, OrderState::Pending);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn given_pending_when_approved_twice_then_one_approval_event() {
        let (o, log, r) = run(&[create(), OrderCommand::Approve, OrderCommand::Approve]);
        assert_eq!(o.unwrap().state, OrderState::Approved);
        assert_eq!(log.len(), 2);
        assert_eq!(r[2], Ok(0));
    }

    #[test]
    fn given_pending_when_rejected_then_rejected_with_reason() {
        let reason = RejectionReason::InsufficientCredit;
        let (o, _, _) = run(&[create(), OrderCommand::Reject { reason }]);
        let o = o.unwrap();
        assert_eq!(o.state, OrderState::Rejected);
        assert_eq!(o.rejection_reason, Some(reason));
    }

    #[test]
    fn given_pending_when_cancelled_then_refused() {
        let (o, _, r) = run(&[create(), OrderCommand::Cancel]);
        assert_eq!(o.unwrap().state, OrderState::Pending);
        assert!(matches!(
            r[1],
            Err(OrderError::IllegalTransition {
                command: "cancel",
                state: "PENDING"
            })
        ));
    }

    #[test]
    fn given_approved_when_cancelled_then_cancelled_and_a_late_approve_changes_nothing() {
        let (o, _, r) = run(&[
            create(),
            OrderCommand::Approve,
            OrderCommand::Cancel,
            OrderCommand::Approve,
        ]);
        assert_eq!(o.unwrap().state, OrderState::Cancelled);
        assert_eq!(r[3], Ok(0));
    }

    #[test]
    fn given_rejected_when_approved_then_refused() {
        let reason = RejectionReason::UnknownCustomer;
        let (o, _, r) = run(&[
            create(),
            OrderCommand::Reject { reason },
            OrderCommand::Approve,
        ]);
        assert_eq!(o.unwrap().state, OrderState::Rejected);
        assert!(r[2].is_err());
    }

    #[test]
    fn given_nothing_when_approved_then_not_found() {
        let (o, _, r) = run(&[OrderCommand::Approve]);
        assert!(o.is_none());
        assert_eq!(r[0], Err(OrderError::NotFound));
    }

    #[test]
    fn given_an_order_when_created_again_with_other_data_then_refused() {
        let other = OrderCommand::Create {
            customer_id: CustomerId::parse("c2").unwrap(),
            total: "1.00".parse().unwrap(),
        };
        let (_, _, r) = run(&[create(), create(), other]);
        assert_eq!(r[1], Ok(0));
        assert_eq!(r[2], Err(OrderError::AlreadyExists));
    }
}
