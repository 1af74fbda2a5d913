//! Offline tools over a stopped durasaga's data directory: `check` (the
//! invariant checker) and `rebuild-view` (the order-history view from the
//! event logs).
//!
//! Both open the service databases directly (sled allows one process per
//! database, so the service must be stopped) and never change the customer,
//! order or saga databases.

use crate::domain::{Customer, Order, OrderState};
use crate::domain::{CustomerHistory, Payload, Reservation, SagaState};
use crate::persistence::{keys, EntityRecord, ListTerm, OrderRecord, ServiceDb, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One broken invariant, with the entities involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

/// What `check` looked at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub customers: usize,
    pub orders: usize,
    pub sagas: usize,
    pub views: usize,
    pub violations: Vec<Violation>,
}

fn open(dir: &Path) -> Result<Store, StoreError> {
    if !dir.join("order").exists() {
        return Err(StoreError::Open {
            path: dir.to_owned(),
            message: "no durasaga data here".into(),
        });
    }
    Store::open(dir, crate::persistence::Durability::Flush, 64 << 20)
}

/// Every record is listed under each of its terms (filtered lists would
/// miss it otherwise). Extra entries are allowed: readers re-check them.
fn check_listed<S>(
    db: &ServiceDb,
    records: &[(String, EntityRecord<S>)],
    terms: fn(Option<&S>) -> Vec<ListTerm>,
    v: &mut Vec<Violation>,
) -> Result<(), StoreError> {
    if !db.list_index_complete() {
        return Ok(());
    }
    for (id, rec) in records {
        for (term, value) in terms(rec.state.as_ref()) {
            if !db.lists.contains_key(keys::list(term, &value, id))? {
                v.push(Violation {
                    invariant: "every record is in the list index under its terms",
                    detail: format!("{} {id} is not listed under {term} = {value}", db.name),
                });
            }
        }
    }
    Ok(())
}

fn scan_all<S: serde::de::DeserializeOwned>(
    db: &ServiceDb,
    v: &mut Vec<Violation>,
) -> Result<Vec<(String, EntityRecord<S>)>, StoreError> {
    let heads = db.inbox_heads()?;
    let mut out = Vec::new();
    for item in db.scan::<S>(None) {
        match item {
            Ok((id, mut rec)) => {
                // Delivered envelopes of an entity outside the recovery index
                // (see `ServiceDb::load_indexed`).
                if db.active_index_complete() && !db.is_marked_active(&id)? {
                    rec.outbox.clear();
                }
                if heads.get(&id).is_some_and(|h| h.last > rec.inbox_cursor) {
                    v.push(Violation {
                        invariant: "no pending inbox after quiescence",
                        detail: format!("{} {id} has unconsumed inbox entries", db.name),
                    });
                }
                out.push((id, rec));
            }
            Err(e) => v.push(Violation {
                invariant: "every record decodes",
                detail: format!("{}: {e}", db.name),
            }),
        }
    }
    Ok(out)
}

/// Checks every invariant of a quiescent data directory.
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
    let store = open(dir)?;
    let r = check_store(&store);
    store.close()?;
    r
}

/// Checks a store (see [`check`]).
pub fn check_store(store: &Store) -> Result<CheckReport, StoreError> {
    let mut v = Vec::new();
    let mut customers: Vec<(String, EntityRecord<Customer>)> = scan_all(&store.customer, &mut v)?;
    for (id, rec) in &mut customers {
        if let Some(c) = rec.state.as_mut() {
            if let Err(e) = crate::actors::logic::merge_decisions(&store.customer, id, c) {
                v.push(Violation {
                    invariant: "every record decodes",
                    detail: format!("customer {id}: a decision part: {e}"),
                });
            }
        }
    }
    let orders: Vec<(String, EntityRecord<OrderRecord>)> = scan_all(&store.order, &mut v)?;
    let sagas: Vec<(String, EntityRecord<SagaState>)> = scan_all(&store.saga, &mut v)?;
    let mut views: Vec<(String, EntityRecord<CustomerHistory>)> = scan_all(&store.view, &mut v)?;
    for (id, rec) in &mut views {
        if let Some(h) = rec.state.as_mut() {
            if let Err(e) = crate::actors::logic::merge_parts(&store.view, id, h) {
                v.push(Violation {
                    invariant: "every record decodes",
                    detail: format!("view of customer {id}: an order-summary part: {e}"),
                });
            }
        }
    }

    check_listed(
        &store.order,
        &orders,
        crate::actors::logic::order_list_terms,
        &mut v,
    )?;
    check_listed(
        &store.saga,
        &sagas,
        crate::actors::logic::saga_list_terms,
        &mut v,
    )?;

    let undelivered: usize = customers.iter().map(|(_, r)| r.outbox.len()).sum::<usize>()
        + orders.iter().map(|(_, r)| r.outbox.len()).sum::<usize>()
        + sagas.iter().map(|(_, r)| r.outbox.len()).sum::<usize>()
        + views.iter().map(|(_, r)| r.outbox.len()).sum::<usize>();
    if undelivered > 0 {
        v.push(Violation {
            invariant: "no undelivered message after quiescence",
            detail: format!(
                "{undelivered} messages are still in outboxes (customer {}, order {}, saga {}, view {}); not quiescent: restart and let it drain",
                customers.iter().map(|(_, r)| r.outbox.len()).sum::<usize>(),
                orders.iter().map(|(_, r)| r.outbox.len()).sum::<usize>(),
                sagas.iter().map(|(_, r)| r.outbox.len()).sum::<usize>(),
                views.iter().map(|(_, r)| r.outbox.len()).sum::<usize>(),
            ),
        });
    }

    let by_customer: HashMap<&str, &Customer> = customers
        .iter()
        .filter_map(|(id, r)| r.state.as_ref().map(|c| (id.as_str(), c)))
        .collect();
    for c in by_customer.values() {
        let mut sum = crate::domain::Money::ZERO;
        for (_, r) in c.reservations() {
            if let Reservation::Reserved(a) = r {
                sum = sum.checked_add(*a).unwrap_or(sum);
            }
        }
        if sum != c.reserved_total()
            || c.available_credit().checked_add(sum).ok() != Some(c.credit_limit)
        {
            v.push(Violation {
                invariant: "available + Σ reservations == limit",
                detail: format!(
                    "customer {}: limit {}, reserved {sum}, available {}",
                    c.id,
                    c.credit_limit,
                    c.available_credit()
                ),
            });
        }
    }

    let mut folded: BTreeMap<String, Order> = BTreeMap::new();
    for (id, rec) in &orders {
        let Some(o) = rec.state.as_ref().and_then(crate::actors::logic::fold) else {
            continue;
        };
        let held = by_customer
            .get(o.customer_id.as_str())
            .and_then(|c| c.reservation(&o.id));
        match (o.state, held) {
            (OrderState::Approved, Some(Reservation::Reserved(a))) if a == o.total => {}
            (OrderState::Approved, other) => v.push(Violation {
                invariant: "an APPROVED order holds exactly its reservation",
                detail: format!(
                    "order {id} ({} at customer {}): {other:?}",
                    o.total, o.customer_id
                ),
            }),
            (OrderState::Rejected | OrderState::Cancelled, Some(Reservation::Reserved(a))) => v
                .push(Violation {
                    invariant: "a REJECTED or CANCELLED order holds no reservation",
                    detail: format!(
                        "order {id} is {} but customer {} holds {a}",
                        o.state.as_str(),
                        o.customer_id
                    ),
                }),
            (OrderState::Pending, _) => v.push(Violation {
                invariant: "every saga ends",
                detail: format!("order {id} is still PENDING"),
            }),
            _ => {}
        }
        folded.insert(id.clone(), o);
    }
    // A reservation whose order is not APPROVED is credit leaked.
    for c in by_customer.values() {
        for (oid, r) in c.reservations() {
            if matches!(r, Reservation::Reserved(_))
                && folded.get(oid.as_str()).map(|o| o.state) != Some(OrderState::Approved)
            {
                v.push(Violation {
                    invariant: "every reservation belongs to an APPROVED order",
                    detail: format!("customer {} holds {r:?} for order {oid}", c.id),
                });
            }
        }
    }
    for (id, rec) in &sagas {
        if let Some(s) = &rec.state {
            if !s.phase.is_terminal() {
                v.push(Violation {
                    invariant: "no non-terminal saga after quiescence",
                    detail: format!("saga {id} is {} (attempt {})", s.phase.as_str(), s.attempt),
                });
            }
        }
    }
    if !views.is_empty() {
        let expected = build_views(&customers, &orders);
        let live: BTreeMap<String, CustomerHistory> = views
            .iter()
            .filter_map(|(id, r)| r.state.clone().map(|s| (id.clone(), s)))
            .collect();
        for (id, want) in &expected {
            if live.get(id) != Some(want) {
                v.push(Violation {
                    invariant: "the order-history view equals the fold of the events",
                    detail: format!("view of customer {id} differs from the event logs"),
                });
            }
        }
        for id in live.keys().filter(|k| !expected.contains_key(*k)) {
            v.push(Violation {
                invariant: "the order-history view equals the fold of the events",
                detail: format!("view of customer {id} has no events behind it"),
            });
        }
    }
    Ok(CheckReport {
        customers: customers.len(),
        orders: orders.len(),
        sagas: sagas.len(),
        views: views.len(),
        violations: v,
    })
}

/// The views the event logs imply.
fn build_views(
    customers: &[(String, EntityRecord<Customer>)],
    orders: &[(String, EntityRecord<OrderRecord>)],
) -> BTreeMap<String, CustomerHistory> {
    let mut views: BTreeMap<String, CustomerHistory> = BTreeMap::new();
    for (id, rec) in customers {
        if let Some(c) = &rec.state {
            let v = views
                .entry(id.clone())
                .or_insert_with(|| CustomerHistory::new(c.id.clone()));
            v.apply(&Payload::CustomerRegistered {
                customer_id: c.id.clone(),
                name: c.name.clone(),
                credit_limit: c.credit_limit,
            });
        }
    }
    for (_, rec) in orders {
        let Some(p) = rec
            .state
            .as_ref()
            .and_then(crate::actors::logic::order_changed)
        else {
            continue;
        };
        let Payload::OrderChanged { customer_id, .. } = &p else {
            continue;
        };
        let v = views
            .entry(customer_id.to_string())
            .or_insert_with(|| CustomerHistory::new(customer_id.clone()));
        v.apply(&p);
    }
    views
}

/// Rebuilds the order-history view from the customer and order databases,
/// replacing what the view database held. Returns the number of views.
pub fn rebuild_view(dir: &Path) -> Result<usize, StoreError> {
    let store = open(dir)?;
    let mut v = Vec::new();
    let customers: Vec<(String, EntityRecord<Customer>)> = scan_all(&store.customer, &mut v)?;
    let orders: Vec<(String, EntityRecord<OrderRecord>)> = scan_all(&store.order, &mut v)?;
    let views = build_views(&customers, &orders);
    // Keep each view's inbox cursor: entries already consumed stay consumed,
    // and later (re)deliveries are idempotent by event sequence.
    let old: HashMap<String, u64> = store
        .view
        .scan::<CustomerHistory>(None)
        .filter_map(Result::ok)
        .map(|(id, r)| (id, r.inbox_cursor))
        .collect();
    store.view.entities.clear()?;
    store.view.parts_clear()?;
    for (id, view) in &views {
        let rec = EntityRecord {
            state: Some(view.clone()),
            inbox_cursor: old.get(id).copied().unwrap_or(0),
            ..Default::default()
        };
        store.view.save(id, &rec)?;
    }
    store.close()?;
    Ok(views.len())
}
