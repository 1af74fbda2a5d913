//! The Customer aggregate: credit limit and one credit decision per order.
//!
//! Invariants: `available + Σ reserved == limit` and `available >= 0`. The first
//! decision taken for an order sticks: a duplicate `ReserveCredit` gets the same
//! answer again, and after `ReleaseCredit` the order holds a tombstone so that a
//! late, redelivered `ReserveCredit` never re-reserves.

use super::ids::{CustomerId, OrderId};
use super::money::Money;
use super::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an order holds, or held, of a customer's credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reservation {
    /// Credit is held for the order.
    Reserved(Money),
    /// The order asked for more than was available; it holds nothing.
    Refused,
    /// Credit was released (or the release came before any reserve): tombstone.
    Released,
}

/// A customer and its credit decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    pub name: String,
    pub credit_limit: Money,
    pub created_at: Millis,
    /// Sum of all `Reserved` amounts, kept so `available_credit` is O(1).
    reserved_total: Money,
    reservations: BTreeMap<OrderId, Reservation>,
}

/// Commands the Customer service handles for an existing or missing customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    ReserveCredit { order_id: OrderId, amount: Money },
    ReleaseCredit { order_id: OrderId },
}

/// The outcome of a command; these become reply messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerReply {
    CreditReserved,
    CreditLimitExceeded,
    CustomerNotFound,
    CreditReleased,
}

impl Customer {
    /// A new customer with no reservations.
    pub fn new(id: CustomerId, name: String, credit_limit: Money, created_at: Millis) -> Self {
        Self {
            id,
            name,
            credit_limit,
            created_at,
            reserved_total: Money::ZERO,
            reservations: BTreeMap::new(),
        }
    }

    /// `credit_limit - Σ reserved`.
    pub fn available_credit(&self) -> Money {
        // reserved_total <= credit_limit is an invariant of `reserve`.
        self.credit_limit
            .checked_sub(self.reserved_total)
            .unwrap_or(Money::ZERO)
    }

    /// The sum of all current reservations.
    pub fn reserved_total(&self) -> Money {
        self.reserved_total
    }

    /// What `order` holds or held, if anything.
    pub fn reservation(&self, order: &OrderId) -> Option<Reservation> {
        self.reservations.get(order).copied()
    }

    /// The decisions held, in order id order: all of them in a customer built
    /// in memory; for one loaded from storage, only those its record keeps
    /// inline (the rest are parts: `actors::logic::merge_decisions` merges).
    pub fn reservations(&self) -> impl Iterator<Item = (&OrderId, &Reservation)> {
        self.reservations.iter()
    }

    /// Puts a decision read from storage back into memory, unless one for the
    /// order is already held (the record's own copy is the newer). The actor
    /// loads the decision a message needs before `handle` (decisions are
    /// stored apart from the customer: see `actors::logic::CustomerLogic`).
    pub fn load_decision(&mut self, order: OrderId, r: Reservation) {
        self.reservations.entry(order).or_insert(r);
    }

    /// How many decisions are held in memory.
    pub fn decisions_held(&self) -> usize {
        self.reservations.len()
    }

    /// Takes every decision held in memory out (to be stored apart).
    pub fn take_decisions(&mut self) -> BTreeMap<OrderId, Reservation> {
        std::mem::take(&mut self.reservations)
    }

    /// Forgets the decision taken for `order` without returning its credit.
    /// Only for the deliberately broken build of the crash-cycle harness
    /// (`DURASAGA_TEST_SKIP_DEDUP`): it makes a duplicate reserve count twice.
    #[doc(hidden)]
    pub fn forget_decision_for_fault_injection(&mut self, order: &OrderId) {
        self.reservations.remove(order);
    }

    /// Decides and applies a command. Never fails: every outcome is a reply.
    pub fn handle(&mut self, cmd: &CustomerCommand) -> CustomerReply {
        match cmd {
            CustomerCommand::ReserveCredit { order_id, amount } => self.reserve(order_id, *amount),
            CustomerCommand::ReleaseCredit { order_id } => self.release(order_id),
        }
    }

    fn reserve(&mut self, order: &OrderId, amount: Money) -> CustomerReply {
        match self.reservations.get(order) {
            Some(Reservation::Reserved(_)) => return CustomerReply::CreditReserved,
            Some(Reservation::Refused) | Some(Reservation::Released) => {
                return CustomerReply::CreditLimitExceeded
            }
            None => {}
        }
        match self.reserved_total.checked_add(amount) {
            Ok(total) if total <= self.credit_limit => {
                self.reserved_total = total;
                self.reservations
                    .insert(order.clone(), Reservation::Reserved(amount));
                CustomerReply::CreditReserved
            }
            _ => {
                self.reservations
                    .insert(order.clone(), Reservation::Refused);
                CustomerReply::CreditLimitExceeded
            }
        }
    }

    fn release(&mut self, order: &OrderId) -> CustomerReply {
        if let Some(Reservation::Reserved(amount)) = self.reservations.get(order) {
            // amount <= reserved_total always holds.
            self.reserved_total = self
                .reserved_total
                .checked_sub(*amount)
                .unwrap_or(Money::ZERO);
        }
        self.reservations
            .insert(order.clone(), Reservation::Released);
        CustomerReply::CreditReleased
    }
}

/// The reply to a command for a customer that does not exist.
pub fn handle_missing(cmd: &CustomerCommand) -> CustomerReply {
    match cmd {
        CustomerCommand::ReserveCredit { .. } => CustomerReply::CustomerNotFound,
        // Nothing can be held by a customer that does not exist.
        CustomerCommand::ReleaseCredit { .. } => CustomerReply::CreditReleased,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(s: &str) -> Money {
        s.parse().unwrap()
    }
    fn oid(s: &str) -> OrderId {
        OrderId::parse(s).unwrap()
    }
    fn customer(limit: &str) -> Customer {
        Customer::new(
            CustomerId::parse("c1").unwrap(),
            "Fred".into(),
            money(limit),
            0,
        )
    }
    fn reserve(o: &str, a: &str) -> CustomerCommand {
        CustomerCommand::ReserveCredit {
            order_id: oid(o),
            amount: money(a),
        }
    }
    fn release(o: &str) -> CustomerCommand {
        CustomerCommand::ReleaseCredit { order_id: oid(o) }
    }

    #[test]
    fn given_enough_credit_when_reserving_then_reserved() {
        let mut c = customer("15.00");
        assert_eq!(
            c.handle(&reserve("o1", "12.34")),
            CustomerReply::CreditReserved
        );
        assert_eq!(c.available_credit(), money("2.66"));
    }

    #[test]
    fn given_exactly_enough_credit_when_reserving_then_reserved() {
        let mut c = customer("15.00");
        assert_eq!(
            c.handle(&reserve("o1", "15.00")),
            CustomerReply::CreditReserved
        );
        assert_eq!(c.available_credit(), Money::ZERO);
    }

    #[test]
    fn given_too_little_credit_when_reserving_then_limit_exceeded_and_nothing_held() {
        let mut c = customer("15.00");
        assert_eq!(
            c.handle(&reserve("o1", "123.40")),
            CustomerReply::CreditLimitExceeded
        );
        assert_eq!(c.available_credit(), money("15.00"));
        assert_eq!(c.reservation(&oid("o1")), Some(Reservation::Refused));
    }

    #[test]
    fn given_a_reservation_when_the_reserve_is_duplicated_then_same_reply_and_held_once() {
        let mut c = customer("15.00");
        c.handle(&reserve("o1", "10.00"));
        assert_eq!(
            c.handle(&reserve("o1", "10.00")),
            CustomerReply::CreditReserved
        );
        assert_eq!(c.available_credit(), money("5.00"));
    }

    #[test]
    fn given_a_refusal_when_credit_frees_up_and_the_reserve_is_redelivered_then_still_refused() {
        let mut c = customer("15.00");
        c.handle(&reserve("o1", "10.00"));
        assert_eq!(
            c.handle(&reserve("o2", "10.00")),
            CustomerReply::CreditLimitExceeded
        );
        c.handle(&release("o1"));
        assert_eq!(
            c.handle(&reserve("o2", "10.00")),
            CustomerReply::CreditLimitExceeded
        );
        assert_eq!(c.available_credit(), money("15.00"));
    }

    #[test]
    fn given_a_reservation_when_released_twice_then_credit_returned_once() {
        let mut c = customer("15.00");
        c.handle(&reserve("o1", "10.00"));
        c.handle(&reserve("o2", "5.00"));
        assert_eq!(c.handle(&release("o1")), CustomerReply::CreditReleased);
        assert_eq!(c.handle(&release("o1")), CustomerReply::CreditReleased);
        assert_eq!(c.available_credit(), money("10.00"));
    }

    #[test]
    fn given_a_release_when_a_late_reserve_arrives_then_it_is_refused() {
        let mut c = customer("15.00");
        assert_eq!(c.handle(&release("o1")), CustomerReply::CreditReleased);
        assert_eq!(
            c.handle(&reserve("o1", "1.00")),
            CustomerReply::CreditLimitExceeded
        );
        assert_eq!(c.available_credit(), money("15.00"));
    }

    #[test]
    fn given_no_customer_then_reserve_is_not_found_and_release_is_a_no_op() {
        assert_eq!(
            handle_missing(&reserve("o1", "1.00")),
            CustomerReply::CustomerNotFound
        );
        assert_eq!(
            handle_missing(&release("o1")),
            CustomerReply::CreditReleased
        );
    }
}
