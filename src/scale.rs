//! `durasaga fill`: writes a data directory of a given size straight through
//! the storage layer, for the scale checks (memory and disk with many stored
//! orders; recovery time with many sagas in flight). Not a service path: it
//! builds records with the same domain functions the actors use, writes them
//! without per-record flushes, and flushes once at the end.

use crate::actors::entity::new_envelope_id;
use crate::actors::logic;
use crate::domain::saga::{self, SagaInput, SagaState};
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

/// Lists and saves an order: created, and approved if `approved` (a PENDING
/// one is marked for recovery first, as the order actor does).
fn put_order(
    store: &Store,
    oid: &OrderId,
    cid: &CustomerId,
    amount: Money,
    approved: bool,
    now: i64,
) -> Result<(), StoreError> {
    let mut events = vec![RecordedEvent {
        seq: 1,
        at: now,
        event: OrderEvent::OrderCreated {
            customer_id: cid.clone(),
            total: amount,
        },
    }];
    if approved {
        events.push(RecordedEvent {
            seq: 2,
            at: now,
            event: OrderEvent::OrderApproved,
        });
    }
    let rec = OrderRecord {
        id: oid.clone(),
        saga_id: oid.to_string(),
        events,
        cancel_requested: false,
    };
    if logic::order_pending(Some(&rec)) {
        store.order.mark_active(oid.as_str())?;
    }
    store
        .order
        .list_index_add(oid.as_str(), &logic::order_list_terms(Some(&rec)))?;
    store.order.save(
        oid.as_str(),
        &EntityRecord {
            state: Some(rec),
            ..Default::default()
        },
    )?;
    Ok(())
}

/// Lists and saves a saga; one with an outbox is marked for recovery first.
fn put_saga(store: &Store, state: SagaState, outbox: Vec<Envelope>) -> Result<(), StoreError> {
    let sid = state.id.to_string();
    if !outbox.is_empty() {
        store.saga.mark_active(&sid)?;
    }
    store
        .saga
        .list_index_add(&sid, &logic::saga_list_terms(Some(&state)))?;
    store.saga.save(
        &sid,
        &EntityRecord {
            state: Some(state),
            outbox,
            ..Default::default()
        },
    )?;
    Ok(())
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
    // Likewise the list index: every order and saga written here is listed.
    let lists_complete = [&store.order, &store.saga]
        .iter()
        .all(|db| db.entities.is_empty() || db.list_index_complete());
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
        put_order(&store, &oid, &cid, amount, true, now)?;
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
        put_saga(&store, t.state, Vec::new())?;
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
        put_order(&store, &oid, &cid, amount, false, now)?;
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
        put_saga(&store, t.state, outbox)?;
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
    // Views in the inline form of the versions before order-summary parts:
    // readers merge both forms, and the view's next event for a customer
    // moves its summaries out (so scale checks also cover that path).
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
    if lists_complete {
        store.order.set_list_index_complete()?;
        store.saga.set_list_index_complete()?;
    }
    store.close()?;
    Ok(Filled {
        customers,
        settled_orders: orders,
        in_flight,
    })
}
