//! `durasaga fill`: writes a data directory of a given size straight through
//! the storage layer, for the scale checks (memory and disk with many stored
//! orders; recovery time with many sagas in flight). Not a service path: it
//! builds records with the same domain functions the actors use, writes them
//! without per-record flushes, and flushes once at the end.

use crate::actors::entity::new_envelope_id;
use crate::domain::saga::{self, SagaInput};
use crate::domain::{
    Address, Customer, CustomerHistory, CustomerId, Envelope, Money, OrderId, OrderState, Payload,
    RecordedEvent, SagaId, SagaKind, SagaPolicy, SCHEMA_VERSION,
};
use crate::domain::{CustomerCommand, OrderEvent};
use crate::persistence::{Durability, EntityRecord, OrderRecord, Store, StoreError};
use std::path::Path;

/// What `fill` wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filled {
    pub customers: usize,
    pub settled_orders: usize,
    pub in_flight: usize,
}

fn id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:010}")
}

/// Writes `customers` customers, `orders` settled (APPROVED) orders with their
/// sagas and views, and `in_flight` sagas that have just sent `ReserveCredit`
/// (as after a crash mid-flight: the envelope is still in the saga's outbox).
pub fn fill(
    dir: &Path,
    customers: usize,
    orders: usize,
    in_flight: usize,
    now: i64,
) -> Result<Filled, StoreError> {
    let store = Store::open(dir, Durability::Flush, 64 << 20)?;
    // The recovery index stays complete only if it was (or nothing was here):
    // in-flight sagas are marked below, settled entities need no mark.
    let mut index_complete = true;
    for db in [&store.customer, &store.order, &store.saga, &store.view] {
        index_complete &= db.entities.is_empty() || db.active_index_complete();
    }
    let policy = SagaPolicy::default();
    let customers = customers.max(1);
    let amount = Money::from_cents(100).unwrap_or(Money::ZERO);
    let limit = Money::from_cents(1_000_000_000).unwrap_or(Money::ZERO);
    let mut cust: Vec<Customer> = (0..customers)
        .map(|i| {
            let cid = CustomerId::parse(id("c", i)).unwrap_or_else(|_| unreachable!());
            Customer::new(cid, format!("customer {i}"), limit, now)
        })
        .collect();
    let mut views: Vec<CustomerHistory> = cust
        .iter()
        .map(|c| CustomerHistory::new(c.id.clone()))
        .collect();
    for (c, v) in cust.iter().zip(views.iter_mut()) {
        v.apply(&Payload::CustomerRegistered {
            customer_id: c.id.clone(),
            name: c.name.clone(),
            credit_limit: c.credit_limit,
        });
    }
    for i in 0..orders {
        let k = i % customers;
        let oid = OrderId::parse(id("o", i)).unwrap_or_else(|_| unreachable!());
        let cid = cust[k].id.clone();
        cust[k].handle(&CustomerCommand::ReserveCredit {
            order_id: oid.clone(),
            amount,
        });
        let rec = OrderRecord {
            id: oid.clone(),
            saga_id: oid.to_string(),
            events: vec![
                RecordedEvent {
                    seq: 1,
                    at: now,
                    event: OrderEvent::OrderCreated {
                        customer_id: cid.clone(),
                        total: amount,
                    },
                },
                RecordedEvent {
                    seq: 2,
                    at: now,
                    event: OrderEvent::OrderApproved,
                },
            ],
            cancel_requested: false,
        };
        store.order.save(
            oid.as_str(),
            &EntityRecord {
                state: Some(rec),
                ..Default::default()
            },
        )?;
        let sid = SagaId::create_order(&oid);
        let t = saga::start(
            sid.clone(),
            SagaKind::CreateOrder,
            oid.clone(),
            cid.clone(),
            amount,
            now,
            &policy,
        );
        let t = saga::step(
            &t.state,
            &SagaInput::Reply(Payload::CreditReserved {
                order_id: oid.clone(),
            }),
            now,
            0.5,
            &policy,
        );
        let t = saga::step(
            &t.state,
            &SagaInput::Reply(Payload::OrderApproved {
                order_id: oid.clone(),
            }),
            now,
            0.5,
            &policy,
        );
        store.saga.save(
            sid.as_str(),
            &EntityRecord {
                state: Some(t.state),
                ..Default::default()
            },
        )?;
        views[k].apply(&Payload::OrderChanged {
            order_id: oid,
            customer_id: cid,
            total: amount,
            state: OrderState::Approved,
            reason: None,
            seq: 2,
        });
    }
    for i in 0..in_flight {
        let k = i % customers;
        let oid = OrderId::parse(id("f", i)).unwrap_or_else(|_| unreachable!());
        let cid = cust[k].id.clone();
        let rec = OrderRecord {
            id: oid.clone(),
            saga_id: oid.to_string(),
            events: vec![RecordedEvent {
                seq: 1,
                at: now,
                event: OrderEvent::OrderCreated {
                    customer_id: cid.clone(),
                    total: amount,
                },
            }],
            cancel_requested: false,
        };
        store.order.save(
            oid.as_str(),
            &EntityRecord {
                state: Some(rec),
                ..Default::default()
            },
        )?;
        let sid = SagaId::create_order(&oid);
        let t = saga::start(
            sid.clone(),
            SagaKind::CreateOrder,
            oid.clone(),
            cid.clone(),
            amount,
            now,
            &policy,
        );
        let outbox: Vec<Envelope> = t
            .messages
            .iter()
            .map(|m| Envelope {
                id: new_envelope_id(),
                kind: m.payload.kind().to_owned(),
                schema_version: SCHEMA_VERSION,
                from: Address::saga(&sid),
                to: m.to.clone(),
                correlation: sid.to_string(),
                reply_to: Some(Address::saga(&sid)),
                attempt: m.attempt,
                sent_at: now,
                payload: m.payload.clone(),
            })
            .collect();
        store.saga.mark_active(sid.as_str())?;
        store.saga.save(
            sid.as_str(),
            &EntityRecord {
                state: Some(t.state),
                outbox,
                ..Default::default()
            },
        )?;
        views[k].apply(&Payload::OrderChanged {
            order_id: oid,
            customer_id: cid,
            total: amount,
            state: OrderState::Pending,
            reason: None,
            seq: 1,
        });
    }
    for c in &cust {
        store.customer.save(
            c.id.as_str(),
            &EntityRecord {
                state: Some(c.clone()),
                ..Default::default()
            },
        )?;
    }
    for v in &views {
        store.view.save(
            v.customer_id.as_str(),
            &EntityRecord {
                state: Some(v.clone()),
                ..Default::default()
            },
        )?;
    }
    if index_complete {
        for db in [&store.customer, &store.order, &store.saga, &store.view] {
            db.set_active_index_complete()?;
        }
    }
    store.close()?;
    Ok(Filled {
        customers,
        settled_orders: orders,
        in_flight,
    })
}
