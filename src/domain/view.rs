//! The order-history read model of one customer (CQRS): its name, credit
//! limit, and every order with state, total and rejection reason.
//!
//! Invariant: applying events is idempotent and order-insensitive per order:
//! an `OrderChanged` only replaces what is known of an order if its `seq` is
//! higher, so at-least-once delivery and replays converge to the fold of the
//! order events.

use super::ids::{CustomerId, OrderId};
use super::messages::{Payload, RejectionReason};
use super::money::Money;
use super::order::OrderState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the view knows of one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummary {
    pub state: OrderState,
    pub total: Money,
    pub reason: Option<RejectionReason>,
    /// The order event sequence this summary reflects.
    pub seq: u64,
}

/// The order history of one customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerHistory {
    pub customer_id: CustomerId,
    /// `None` until the customer's registration arrives (or if it never
    /// existed: orders for unknown customers are still recorded).
    pub name: Option<String>,
    pub credit_limit: Option<Money>,
    /// The order summaries: all of them in a history built in memory; for one
    /// loaded from storage, only those its record keeps inline (the rest are
    /// parts: read through `actors::logic::load_history`).
    pub orders: BTreeMap<OrderId, OrderSummary>,
}

impl CustomerHistory {
    /// An empty history.
    pub fn new(customer_id: CustomerId) -> Self {
        Self {
            customer_id,
            name: None,
            credit_limit: None,
            orders: BTreeMap::new(),
        }
    }

    /// Applies one event; returns whether anything changed.
    pub fn apply(&mut self, p: &Payload) -> bool {
        match p {
            Payload::CustomerRegistered {
                name, credit_limit, ..
            } => {
                let changed =
                    self.name.as_ref() != Some(name) || self.credit_limit != Some(*credit_limit);
                self.name = Some(name.clone());
                self.credit_limit = Some(*credit_limit);
                changed
            }
            Payload::OrderChanged {
                order_id,
                total,
                state,
                reason,
                seq,
                ..
            } => {
                if self.orders.get(order_id).is_some_and(|o| o.seq >= *seq) {
                    return false;
                }
                self.orders.insert(
                    order_id.clone(),
                    OrderSummary {
                        state: *state,
                        total: *total,
                        reason: *reason,
                        seq: *seq,
                    },
                );
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(seq: u64, state: OrderState) -> Payload {
        Payload::OrderChanged {
            order_id: OrderId::parse("o1").unwrap(),
            customer_id: CustomerId::parse("c1").unwrap(),
            total: "1.00".parse().unwrap(),
            state,
            reason: None,
            seq,
        }
    }

    #[test]
    fn given_a_newer_event_when_an_older_one_arrives_late_then_it_is_ignored() {
        let mut v = CustomerHistory::new(CustomerId::parse("c1").unwrap());
        assert!(v.apply(&changed(2, OrderState::Approved)));
        assert!(!v.apply(&changed(1, OrderState::Pending)));
        assert!(!v.apply(&changed(2, OrderState::Approved)));
        assert_eq!(
            v.orders.values().next().unwrap().state,
            OrderState::Approved
        );
    }

    #[test]
    fn given_orders_before_registration_then_both_are_kept() {
        let mut v = CustomerHistory::new(CustomerId::parse("c1").unwrap());
        v.apply(&changed(1, OrderState::Pending));
        v.apply(&Payload::CustomerRegistered {
            customer_id: CustomerId::parse("c1").unwrap(),
            name: "Fred".into(),
            credit_limit: "15.00".parse().unwrap(),
        });
        assert_eq!(v.name.as_deref(), Some("Fred"));
        assert_eq!(v.orders.len(), 1);
    }
}
