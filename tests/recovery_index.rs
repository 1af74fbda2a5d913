//! The recovery index (`active` tree): start-up reads only the entities that
//! have something to resend or a deadline, finishes every in-flight saga, and
//! builds the index once for data written before it existed. And the list
//! index (`lists` tree) behind filtered `GET /orders` and `GET /sagas`.

use durasaga::actors::{OrderFilter, Runtime};
use durasaga::config::Settings;
use durasaga::domain::OrderState;
use durasaga::persistence::{keys, Durability, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts a runtime on `dir` (shutdown releases the databases before it
/// returns, so no wait for sled's file lock is needed).
async fn start_on(dir: &Path) -> Arc<Runtime> {
    let settings = Settings::defaults()
        .with(serde_json::json!({"storage": {"data_dir": dir}}))
        .expect("settings");
    Runtime::start(settings).await.expect("runtime starts")
}

fn open_store(dir: &Path) -> Store {
    Store::open(dir, Durability::Flush, 8 << 20).expect("open right after shutdown")
}

fn check(dir: &Path) -> durasaga::check::CheckReport {
    durasaga::check::check(dir).expect("check")
}

/// Stops `rt` and asserts that `durasaga check` finds nothing wrong in `dir`.
async fn stop_and_check(rt: Arc<Runtime>, dir: &Path) {
    stop(rt).await;
    let report = check(dir);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

/// Waits (bounded) until no order is PENDING and every saga has ended (a
/// saga ends only after its order settles); returns how many orders exist.
async fn settle(rt: &Runtime) -> usize {
    let pending = OrderFilter {
        customer_id: None,
        state: Some(OrderState::Pending),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (p, _) = rt.list_orders(&pending, None, 1).await.expect("list");
        let (sagas, _) = rt
            .list_sagas(None, None, None, 100_000)
            .await
            .expect("list sagas");
        if p.is_empty() && sagas.iter().all(|s| s.phase.is_terminal()) {
            break;
        }
        assert!(Instant::now() < deadline, "not settled after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = OrderFilter {
        customer_id: None,
        state: None,
    };
    let (orders, _) = rt.list_orders(&all, None, 100_000).await.expect("list");
    orders.len()
}

async fn stop(rt: Arc<Runtime>) {
    rt.shutdown(Duration::from_secs(5)).await.expect("shutdown");
}

fn fill(dir: &Path, settled: usize, in_flight: usize) {
    durasaga::scale::fill(dir, 5, settled, in_flight, 0).expect("fill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_reads_only_indexed_entities_and_finishes_every_saga() {
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 300, 40);

    let rt = start_on(dir.path()).await;
    // The 40 in-flight sagas and their 40 PENDING orders, not the 300 settled
    // ones.
    assert_eq!(rt.recovery.indexed_entities, 80, "{:?}", rt.recovery);
    assert_eq!(rt.recovery.outbox_envelopes, 40, "{:?}", rt.recovery);
    // Their deadlines are armed, but no actor is started until one is due or
    // a reply comes: recovering many sagas does not start an actor for each.
    assert_eq!(rt.recovery.active_sagas, 40, "{:?}", rt.recovery);
    assert_eq!(rt.recovery.entities_woken, 0, "{:?}", rt.recovery);
    assert_eq!(settle(&rt).await, 340);
    stop(rt).await;

    // After a clean stop nothing needs recovery: the index is empty.
    let rt = start_on(dir.path()).await;
    assert_eq!(rt.recovery.indexed_entities, 0, "{:?}", rt.recovery);
    assert_eq!(rt.recovery.outbox_envelopes, 0, "{:?}", rt.recovery);
    stop_and_check(rt, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_without_the_index_is_scanned_once_and_indexed() {
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 100, 25);
    // As written before the index existed: no marks, no completion key.
    {
        let store = open_store(dir.path());
        for db in [&store.customer, &store.order, &store.saga, &store.view] {
            db.active.clear().expect("clear index");
            db.db.remove(keys::META_ACTIVE_INDEX).expect("remove key");
        }
        store.close().expect("close");
        drop(store);
        let store = Store::open(dir.path(), Durability::Flush, 8 << 20).expect("reopen");
        for db in [&store.customer, &store.order, &store.saga, &store.view] {
            assert!(!db.active_index_complete(), "{}", db.name);
        }
        store.close().expect("close");
    }

    let rt = start_on(dir.path()).await;
    assert_eq!(rt.recovery.indexed_entities, 0, "full scan, not the index");
    assert_eq!(rt.recovery.outbox_envelopes, 25, "{:?}", rt.recovery);
    assert_eq!(settle(&rt).await, 125);
    for db in [&rt.store.customer, &rt.store.order, &rt.store.saga] {
        assert!(db.active_index_complete(), "{}", db.name);
    }
    stop(rt).await;

    let rt = start_on(dir.path()).await;
    assert_eq!(rt.recovery.indexed_entities, 0, "{:?}", rt.recovery);
    stop_and_check(rt, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_inbox_entries_are_removed_by_their_actors_and_left_overs_by_recovery() {
    use durasaga::domain::{Address, Envelope, OrderId, Payload, Service, SCHEMA_VERSION};
    use durasaga::persistence::OrderRecord;
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 20, 20);
    let rt = start_on(dir.path()).await;
    assert_eq!(settle(&rt).await, 40);
    stop(rt).await;

    let order_id;
    {
        let store = open_store(dir.path());
        // Every consumed entry was removed by the actor that consumed it.
        for db in [&store.customer, &store.order, &store.saga, &store.view] {
            let heads = db.inbox_heads().expect("heads");
            assert!(heads.is_empty(), "{}: {heads:?}", db.name);
        }
        // What a crash between a commit and the removal leaves behind: an
        // entry at the entity's cursor.
        let (id, mut rec) = store
            .order
            .scan::<OrderRecord>(None)
            .next()
            .expect("an order")
            .expect("decodes");
        let env = Envelope {
            id: 7,
            kind: "ApproveOrder".into(),
            schema_version: SCHEMA_VERSION,
            from: Address {
                service: Service::Saga,
                entity: id.clone(),
            },
            to: Address {
                service: Service::Order,
                entity: id.clone(),
            },
            correlation: id.clone(),
            reply_to: None,
            attempt: 1,
            sent_at: 0,
            payload: Payload::ApproveOrder {
                order_id: OrderId::parse(&id).expect("order id"),
            },
        };
        let (seq, _) = store.order.inbox_append(&env).expect("append");
        rec.inbox_cursor = seq;
        store.order.save(&id, &rec).expect("save");
        store.close().expect("close");
        order_id = id;
    }

    let rt = start_on(dir.path()).await;
    assert_eq!(rt.recovery.entities_woken, 0, "{:?}", rt.recovery);
    let heads = rt.store.order.inbox_heads().expect("heads");
    assert!(
        heads.is_empty(),
        "left-over entry of {order_id} kept: {heads:?}"
    );
    stop_and_check(rt, dir.path()).await;
}

fn by_state(state: OrderState) -> OrderFilter {
    OrderFilter {
        customer_id: None,
        state: Some(state),
    }
}

fn by_customer(customer: &str) -> OrderFilter {
    OrderFilter {
        customer_id: Some(customer.to_owned()),
        state: None,
    }
}

/// Every order id matching `filter`, fetched `page` at a time.
async fn all_orders(rt: &Runtime, filter: &OrderFilter, page: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (items, next) = rt
            .list_orders(filter, after.as_deref(), page)
            .await
            .expect("list");
        ids.extend(items.iter().map(|o| o.order.id.to_string()));
        match next {
            Some(n) => after = Some(n),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_lists_follow_every_state_change_through_the_list_index() {
    use durasaga::domain::SagaPhase;
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 30, 12);
    let rt = start_on(dir.path()).await;
    assert_eq!(settle(&rt).await, 42);
    assert!(rt.store.order.list_index_complete());

    // Each list read through the index equals the same filter over every record.
    let all = all_orders(&rt, &OrderFilter::default(), 1000).await;
    assert_eq!(all.len(), 42);
    let mut seen = 0;
    for state in [
        OrderState::Pending,
        OrderState::Approved,
        OrderState::Rejected,
    ] {
        let (every, _) = rt
            .list_orders(&OrderFilter::default(), None, 1000)
            .await
            .expect("list");
        let expected: Vec<String> = every
            .iter()
            .filter(|o| o.order.state == state)
            .map(|o| o.order.id.to_string())
            .collect();
        // Paged 5 at a time: the cursor works through the index too.
        assert_eq!(
            all_orders(&rt, &by_state(state), 5).await,
            expected,
            "{state:?}"
        );
        seen += expected.len();
    }
    assert_eq!(seen, 42, "every order is in exactly one state list");
    let mut per_customer = 0;
    for c in 0..5 {
        let cid = format!("c{c:010}");
        let ids = all_orders(&rt, &by_customer(&cid), 4).await;
        per_customer += ids.len();
        for id in &ids {
            let o = rt.get_order(id).await.expect("get");
            assert_eq!(o.expect("order").order.customer_id.as_str(), cid);
        }
    }
    assert_eq!(per_customer, 42);
    let (every, _) = rt.list_sagas(None, None, None, 1000).await.expect("sagas");
    for phase in [
        SagaPhase::Approved,
        SagaPhase::ReservingCredit,
        SagaPhase::Failed,
    ] {
        let (listed, _) = rt
            .list_sagas(Some(phase), None, None, 1000)
            .await
            .expect("sagas");
        assert_eq!(
            listed.len(),
            every.iter().filter(|s| s.phase == phase).count(),
            "{phase:?}"
        );
    }
    // Nothing listed after normal operation: APPROVED orders and sagas are
    // not listed terms.
    assert_eq!(rt.store.order.lists.len(), 0);
    assert_eq!(rt.store.saga.lists.len(), 0);
    stop_and_check(rt, dir.path()).await;

    // In flight: PENDING orders and sagas in flight are found through the
    // recovery index, in id order, after a cursor.
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 0, 3);
    {
        let store = open_store(dir.path());
        let pending: Vec<String> = store.order.active_ids().expect("ids");
        assert_eq!(pending.len(), 3);
        let open: Vec<String> = store.saga.active_ids().expect("ids");
        assert_eq!(open.len(), 3);
        let rest: Vec<String> = store
            .saga
            .active_ids_after(Some(&open[0]))
            .collect::<Result<_, _>>()
            .expect("ids");
        assert_eq!(rest, open[1..].to_vec());
        store.close().expect("close");
    }
    let rt = start_on(dir.path()).await;
    let (in_flight, _) = rt
        .list_sagas(Some(SagaPhase::ReservingCredit), None, None, 100)
        .await
        .expect("sagas");
    assert!(in_flight
        .iter()
        .all(|s| s.phase == SagaPhase::ReservingCredit));
    assert_eq!(settle(&rt).await, 3);
    assert_eq!(rt.store.order.lists.len(), 0);
    assert_eq!(rt.store.saga.lists.len(), 0);
    stop_and_check(rt, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_orders_are_listed_stale_entries_ignored_and_a_missing_list_index_built_once() {
    use durasaga::domain::OrderId;
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 20, 0);
    let rt = start_on(dir.path()).await;
    let approved = all_orders(&rt, &by_state(OrderState::Approved), 100).await;
    assert_eq!(approved.len(), 20);
    let cancelled: Vec<String> = approved.iter().step_by(7).cloned().collect();
    for id in &cancelled {
        rt.cancel_order(&OrderId::parse(id).expect("id"))
            .await
            .expect("cancel");
    }
    assert_eq!(settle(&rt).await, 20);
    assert_eq!(
        all_orders(&rt, &by_state(OrderState::Cancelled), 2).await,
        cancelled
    );
    assert_eq!(rt.store.order.lists.len(), cancelled.len());
    stop(rt).await;

    // What a crash between a commit and the removal of an old term leaves.
    let stale = approved[1].clone();
    {
        let store = open_store(dir.path());
        store
            .order
            .list_index_add(&stale, &[("state", "CANCELLED".to_owned())])
            .expect("add");
        store.close().expect("close");
    }
    let rt = start_on(dir.path()).await;
    assert_eq!(
        all_orders(&rt, &by_state(OrderState::Cancelled), 100).await,
        cancelled,
        "the stale entry of {stale} is not listed"
    );
    stop(rt).await;

    {
        let store = open_store(dir.path());
        // `check` names a record missing from a complete index.
        store
            .order
            .list_index_remove(&cancelled[0], &[("state", "CANCELLED".to_owned())])
            .expect("remove");
        let report = durasaga::check::check_store(&store).expect("check");
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.invariant.contains("list index") && v.detail.contains(&cancelled[0])),
            "{:?}",
            report.violations
        );
        // As written before the list index existed.
        for db in [&store.order, &store.saga] {
            db.lists.clear().expect("clear");
            db.db.remove(keys::META_LIST_INDEX).expect("remove key");
        }
        store.close().expect("close");
    }
    let rt = start_on(dir.path()).await;
    assert!(rt.store.order.list_index_complete());
    assert!(rt.store.saga.list_index_complete());
    assert_eq!(
        all_orders(&rt, &by_state(OrderState::Cancelled), 100).await,
        cancelled
    );
    assert_eq!(rt.store.order.lists.len(), cancelled.len());
    stop(rt).await;
    // (Stopped right after start-up: replies resent by recovery may still be
    // in flight, so only the list index is checked here.)
    let report = check(dir.path());
    assert!(
        !report
            .violations
            .iter()
            .any(|v| v.invariant.contains("list index")),
        "{:?}",
        report.violations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_orders_left_unmarked_by_older_data_are_marked_when_the_list_index_is_built() {
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 10, 3);
    // As older data has it: a passivated PENDING order was not kept marked,
    // and there was no list index.
    {
        let store = open_store(dir.path());
        let orders: Vec<String> = store.order.active_ids().expect("ids");
        assert_eq!(orders.len(), 3);
        for id in &orders {
            store.order.unmark_active(id).expect("unmark");
        }
        for db in [&store.order, &store.saga] {
            db.lists.clear().expect("clear");
            db.db.remove(keys::META_LIST_INDEX).expect("remove key");
        }
        store.close().expect("close");
    }
    let rt = start_on(dir.path()).await;
    // The 3 sagas in flight and, marked again by the build, their 3 orders.
    assert_eq!(rt.recovery.indexed_entities, 6, "{:?}", rt.recovery);
    assert_eq!(settle(&rt).await, 13);
    stop_and_check(rt, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_databases_can_be_reopened_as_soon_as_shutdown_returns_even_mid_delivery() {
    for round in 0..8 {
        let dir = tempfile::tempdir().expect("temp dir");
        fill(dir.path(), 0, 300);
        let rt = start_on(dir.path()).await;
        // Recovery has just handed 300 envelopes to the relays: stop now.
        stop(rt).await;
        let store = Store::open(dir.path(), Durability::Flush, 8 << 20)
            .unwrap_or_else(|e| panic!("round {round}: reopen right after shutdown: {e}"));
        store.close().expect("close");
    }
}

/// A message stays in its sender's outbox until its receiver has handled it
/// durably, not merely received it: with the Customer service unable to start
/// an actor, the saga's `ReserveCredit` is queued but never handled, so the
/// saga's stored outbox still holds it after shutdown, and the next start
/// resends it and finishes the saga, reserving credit once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stays_in_its_senders_outbox_until_its_receiver_handled_it() {
    use durasaga::domain::{CustomerId, Money, Payload, SagaState};
    let dir = tempfile::tempdir().expect("temp dir");
    let with = |rt_settings: serde_json::Value| {
        Settings::defaults()
            .with(serde_json::json!({"storage": {"data_dir": dir.path()}}))
            .and_then(|s| s.with(rt_settings))
            .expect("settings")
    };
    // No reply timeout within the test: the saga sends ReserveCredit once.
    let no_retry = serde_json::json!({"saga": {"reply_timeout_ms": 600_000}});
    let rt = Runtime::start(with(no_retry.clone())).await.expect("start");
    let customer = rt
        .create_customer("Queued".into(), Money::from_cents(10_000).unwrap(), None)
        .await
        .expect("customer");
    let cid: CustomerId = customer.id.clone();
    stop(rt).await;

    // No customer actor is live after a restart, and none may start now.
    let rt = Runtime::start(with(no_retry.clone()))
        .await
        .expect("restart");
    rt.customers.close();
    let order = rt
        .create_order(cid.clone(), Money::from_cents(2_500).unwrap(), None)
        .await
        .expect("order");
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.customers.depth_of(cid.as_str()) == 0 {
        assert!(
            Instant::now() < deadline,
            "ReserveCredit never reached the customer's queue"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rt.customers.depth_of(cid.as_str()), 1);
    stop(rt).await;

    {
        let store = open_store(dir.path());
        let saga = store
            .saga
            .get::<SagaState>(&order.saga_id)
            .expect("read saga")
            .expect("saga stored");
        let reserve: Vec<_> = saga
            .outbox
            .iter()
            .filter(|e| matches!(e.payload, Payload::ReserveCredit { .. }))
            .collect();
        assert_eq!(
            reserve.len(),
            1,
            "the unhandled ReserveCredit left the saga's outbox: {:?}",
            saga.outbox
        );
        assert!(
            store
                .saga
                .active_ids()
                .expect("ids")
                .contains(&order.saga_id),
            "the saga left the recovery index"
        );
        assert!(
            store.customer.inbox_heads().expect("heads").is_empty(),
            "nothing goes to the durable inbox"
        );
        store.close().expect("close");
    }

    let rt = Runtime::start(with(no_retry)).await.expect("third start");
    assert_eq!(settle(&rt).await, 1);
    let o = rt
        .get_order(order.order.id.as_str())
        .await
        .expect("get")
        .expect("order");
    assert_eq!(o.order.state, OrderState::Approved, "{:?}", o.order);
    let c = rt
        .get_customer(cid.as_str())
        .await
        .expect("get")
        .expect("customer");
    assert_eq!(c.available_credit(), Money::from_cents(7_500).unwrap());
    stop_and_check(rt, dir.path()).await;
}

/// `GET /orders?customerId` finds an order whose only `OrderChanged` the
/// view set aside as a dead letter (the order has left the recovery index,
/// and the view does not list it): the list reads the view's dead letters
/// too, not only its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_view_event_was_dead_lettered_is_still_listed_by_customer() {
    use durasaga::domain::{CustomerHistory, Money, Payload};
    use durasaga::persistence::deadletters::DeadLetter;
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = start_on(dir.path()).await;
    let customer = rt
        .create_customer("Lost".into(), Money::from_cents(10_000).unwrap(), None)
        .await
        .expect("customer");
    let cid = customer.id.to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let o = rt
            .create_order(customer.id.clone(), Money::from_cents(100).unwrap(), None)
            .await
            .expect("order");
        ids.push(o.order.id.to_string());
    }
    assert_eq!(settle(&rt).await, 2);
    stop(rt).await;

    // As if the view had failed on the second order's event too often: the
    // event is a dead letter, the view record lacks the order, and the order
    // (its outbox delivered) is out of the recovery index.
    {
        let store = open_store(dir.path());
        // The summary is inline (few orders) or a part (see
        // `persistence::parts`): remove it from both.
        let mut view = store
            .view
            .load::<CustomerHistory>(&cid)
            .expect("view record");
        let lost = durasaga::domain::OrderId::parse(&ids[1]).expect("order id");
        let inline = view
            .state
            .as_mut()
            .expect("view state")
            .orders
            .remove(&lost)
            .is_some();
        store.view.save(&cid, &view).expect("save view");
        let part = store
            .view
            .parts
            .remove(keys::part(&cid, &ids[1]))
            .expect("remove part")
            .is_some();
        assert!(inline || part, "the view knew the order");
        let history = durasaga::actors::logic::load_history(&store.view, &cid)
            .expect("history")
            .and_then(|r| r.state)
            .expect("view state");
        assert_eq!(history.orders.len(), 1, "{history:?}");
        let order = store
            .order
            .get::<durasaga::persistence::OrderRecord>(&ids[1])
            .expect("read order")
            .and_then(|r| r.state)
            .expect("order stored");
        let changed = durasaga::actors::logic::order_changed(&order).expect("event");
        assert!(matches!(changed, Payload::OrderChanged { .. }));
        let envelope = durasaga::domain::Envelope {
            id: 7,
            kind: changed.kind().to_owned(),
            schema_version: durasaga::domain::SCHEMA_VERSION,
            from: durasaga::domain::Address {
                service: durasaga::domain::Service::Order,
                entity: ids[1].clone(),
            },
            to: durasaga::domain::Address {
                service: durasaga::domain::Service::View,
                entity: cid.clone(),
            },
            correlation: ids[1].clone(),
            reply_to: None,
            attempt: 1,
            sent_at: 0,
            payload: changed,
        };
        store
            .view
            .deadletter_put(&DeadLetter {
                id: 7,
                entity: cid.clone(),
                envelope: Some(envelope),
                error: "injected by the test".into(),
                attempts: 3,
                at: 0,
            })
            .expect("dead letter");
        assert!(!store.order.active_ids().expect("ids").contains(&ids[1]));
        store.close().expect("close");
    }

    let rt = start_on(dir.path()).await;
    let by_customer = OrderFilter {
        customer_id: Some(cid.clone()),
        state: None,
    };
    let (orders, next) = rt.list_orders(&by_customer, None, 100).await.expect("list");
    let listed: Vec<String> = orders.iter().map(|o| o.order.id.to_string()).collect();
    assert_eq!(listed, ids, "both orders, the dead-lettered one included");
    assert!(next.is_none());
    stop(rt).await;
}

/// A view written before order summaries became parts (`fill` writes that
/// inline form) reads the same, and the first event the view handles for a
/// customer with more than `INLINE_PIECES` orders moves every summary out of
/// the record into parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_order_history_moves_into_parts_at_its_next_event() {
    use durasaga::domain::{CustomerId, Money};
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 200, 0);
    let cid = "c0000000001";
    {
        let store = open_store(dir.path());
        let inline = store
            .view
            .load::<durasaga::domain::CustomerHistory>(cid)
            .expect("view")
            .state
            .expect("state");
        assert_eq!(inline.orders.len(), 40, "fill writes the inline form");
        assert!(store.view.parts_of(cid).expect("parts").is_empty());
        store.close().expect("close");
    }
    let rt = start_on(dir.path()).await;
    let before = rt
        .order_history_view(cid)
        .await
        .expect("view")
        .expect("known customer");
    assert_eq!(before.orders.len(), 40);
    let order = rt
        .create_order(
            CustomerId::parse(cid).unwrap(),
            Money::from_cents(100).unwrap(),
            None,
        )
        .await
        .expect("order");
    assert_eq!(settle(&rt).await, 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let v = rt
            .order_history_view(cid)
            .await
            .expect("view")
            .expect("known customer");
        if v.orders
            .get(&order.order.id)
            .is_some_and(|o| o.state != OrderState::Pending)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "the view never settled: {v:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(after.orders.len(), 41);
    for (id, summary) in &before.orders {
        assert_eq!(after.orders.get(id), Some(summary), "order {id} changed");
    }
    stop_and_check(rt, dir.path()).await;

    let store = open_store(dir.path());
    let rec = store
        .view
        .load::<durasaga::domain::CustomerHistory>(cid)
        .expect("view");
    // The order's first event (41 summaries, over the inline limit) moved
    // them all out; its second one is inline again.
    let inline: Vec<_> = rec.state.expect("state").orders.into_keys().collect();
    assert_eq!(
        inline,
        vec![order.order.id.clone()],
        "the summaries left the record"
    );
    assert_eq!(store.view.parts_of(cid).expect("parts").len(), 41);
    store.close().expect("close");
}

/// A customer's credit decisions move into parts once its record holds more
/// than `INLINE_PIECES`. A customer written before parts existed (`fill`
/// writes that inline form) with 40 has them all moved out by its next
/// commit; `check` (which merges both) still finds every decision, and the
/// next commit keeps the record small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_inline_decisions_move_into_parts_at_its_next_commit() {
    use durasaga::domain::{Customer, CustomerId, Money};
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path(), 200, 0);
    let cid = "c0000000002";
    let inline = |store: &Store| {
        store
            .customer
            .load::<Customer>(cid)
            .expect("customer")
            .state
            .expect("state")
            .reservations()
            .count()
    };
    {
        let store = open_store(dir.path());
        assert_eq!(inline(&store), 40, "fill writes the inline form");
        assert!(store.customer.parts_of(cid).expect("parts").is_empty());
        store.close().expect("close");
    }
    let customer = CustomerId::parse(cid).unwrap();
    let rt = start_on(dir.path()).await;
    let before = rt.get_customer(cid).await.expect("get").expect("customer");
    for n in 1..=2 {
        rt.create_order(customer.clone(), Money::from_cents(100).unwrap(), None)
            .await
            .expect("order");
        assert_eq!(settle(&rt).await, 200 + n);
    }
    let after = rt.get_customer(cid).await.expect("get").expect("customer");
    assert_eq!(
        after.available_credit(),
        before
            .available_credit()
            .checked_sub(Money::from_cents(200).unwrap())
            .unwrap()
    );
    stop_and_check(rt, dir.path()).await;

    let store = open_store(dir.path());
    assert_eq!(
        store.customer.parts_of(cid).expect("parts").len(),
        41,
        "the first commit (41 decisions, over the inline limit) moved them out"
    );
    assert_eq!(
        inline(&store),
        1,
        "the record keeps its last commit's decision"
    );
    store.close().expect("close");
}
