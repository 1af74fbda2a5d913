//! Supervision end to end: a CustomerActor that panics is restarted and
//! resumes its durable inbox; a message that keeps failing goes to the dead
//! letters and the saga still ends.
//!
//! Its own test binary because the fault flags in `durasaga::fault` are
//! process-global. Tests run one at a time (one app per process at a time, see
//! `with_app`), and every fault is disarmed when a test ends, passed or not.

mod common;

use common::{available, ended_saga, exclusive, settled_order, spawn_app_with, with_app, TestApp};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .http
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn assert_credit_adds_up(app: &TestApp, customer: &str) {
    let bad = durasaga::harness::credit_violations(&app.client, &[customer.to_owned()])
        .await
        .expect("credit check");
    assert!(bad.is_empty(), "{bad:?}");
}

fn causes(saga: &Value) -> Vec<String> {
    saga["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            format!(
                "{}:{}",
                h["state"].as_str().unwrap_or("?"),
                h["cause"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_customer_actor_is_restarted_and_the_saga_completes() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let cid = app
                .client
                .create_customer("Wobbly", "100.00")
                .await
                .unwrap();
            let restarts_before = app.rt.customers.restarts.load(SeqCst);

            durasaga::fault::arm_customer_panics(1);
            let o = app.client.create_order(&cid, "10.00", 10).await.unwrap();
            let oid = o["orderId"].as_str().unwrap().to_owned();
            let o = settled_order(&app.client, &oid).await;
            // The armed panic really happened (otherwise it is still armed).
            assert!(
                !durasaga::fault::take_customer_panic(),
                "the armed panic was never triggered"
            );

            assert_eq!(o["orderState"], "APPROVED", "{o}");
            let restarts = app.rt.customers.restarts.load(SeqCst) - restarts_before;
            assert!(restarts >= 1, "the customer actor was not restarted");

            // Credit was reserved exactly once.
            assert_eq!(available(&app.client, &cid).await, "90.00");
            assert_credit_adds_up(app, &cid).await;

            // The restarted actor handled the same message again: no dead
            // letter, and the saga needed no retry of its own.
            let dead = app.rt.store.customer.deadletter_list(None, 10).unwrap();
            assert!(dead.is_empty(), "unexpected dead letters: {dead:?}");
            let saga = ended_saga(&app.client, o["sagaId"].as_str().unwrap()).await;
            assert_eq!(saga["state"], "APPROVED", "{saga}");
            let c = causes(&saga);
            assert!(
                !c.iter()
                    .any(|c| c.ends_with(":Timeout") || c.ends_with(":Retry")),
                "the saga had to time out: {c:?}"
            );

            // The customer keeps working.
            let o2 = app.client.create_order(&cid, "5.00", 10).await.unwrap();
            let o2 = settled_order(&app.client, o2["orderId"].as_str().unwrap()).await;
            assert_eq!(o2["orderState"], "APPROVED", "{o2}");
            assert_eq!(available(&app.client, &cid).await, "85.00");
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dead_letters_and_the_saga_still_ends() {
    let settings = json!({
        "mailbox": {"max_attempts": 2},
        "saga": {"reply_timeout_ms": 500, "max_attempts": 2, "backoff_base_ms": 10}
    });
    with_app(settings, |app| {
        Box::pin(async move {
            let cid = app
                .client
                .create_customer("Poisoned", "100.00")
                .await
                .unwrap();
            let restarts_before = app.rt.customers.restarts.load(SeqCst);

            // Every ReserveCredit panics, every time it is handled.
            durasaga::fault::arm_customer_panics(100);
            let o = app.client.create_order(&cid, "10.00", 0).await.unwrap();
            let oid = o["orderId"].as_str().unwrap().to_owned();
            let o = settled_order(&app.client, &oid).await;
            assert_eq!(o["orderState"], "REJECTED", "{o}");
            assert_eq!(o["rejectionReason"], "CREDIT_CHECK_TIMEOUT", "{o}");

            // Each attempt's ReserveCredit was set aside after failing
            // mailbox.max_attempts times.
            let dead = app.rt.store.customer.deadletter_list(None, 10).unwrap();
            assert!(!dead.is_empty(), "no dead letters");
            for d in &dead {
                assert_eq!(d.entity, cid, "{d:?}");
                let env = d.envelope.as_ref().expect("the envelope is kept");
                assert_eq!(env.kind, "ReserveCredit", "{d:?}");
                assert_eq!(env.correlation, o["sagaId"].as_str().unwrap(), "{d:?}");
                assert!(d.attempts >= 2, "{d:?}");
            }
            let restarts = app.rt.customers.restarts.load(SeqCst) - restarts_before;
            assert!(restarts >= 2, "only {restarts} restarts");

            // The saga compensated, then rejected the order.
            let saga = ended_saga(&app.client, o["sagaId"].as_str().unwrap()).await;
            assert_eq!(saga["state"], "REJECTED", "{saga}");
            assert_eq!(saga["rejectionReason"], "CREDIT_CHECK_TIMEOUT", "{saga}");
            let c = causes(&saga);
            let releasing = c.iter().position(|c| c.starts_with("RELEASING_CREDIT:"));
            let rejected = c.iter().position(|c| c.starts_with("REJECTED:"));
            assert!(
                matches!((releasing, rejected), (Some(a), Some(b)) if a < b),
                "no RELEASING_CREDIT before REJECTED: {c:?}"
            );

            // Credit adds up: nothing is held for the rejected order.
            assert_eq!(available(&app.client, &cid).await, "100.00");
            assert_credit_adds_up(app, &cid).await;

            // The admin API shows the same dead letters.
            let (s, v) = get(app, "/deadletters").await;
            assert_eq!(s, 200, "{v}");
            let listed = v["deadletters"].as_array().expect("deadletters");
            assert_eq!(listed.len(), dead.len(), "{v}");
            for d in listed {
                assert_eq!(d["service"], "customer", "{d}");
                assert_eq!(d["entity"], cid.as_str(), "{d}");
                assert_eq!(d["kind"], "ReserveCredit", "{d}");
                assert_eq!(d["sagaId"], o["sagaId"], "{d}");
            }

            // Disarmed, the same customer is not stuck behind the poison.
            durasaga::fault::arm_customer_panics(0);

            // Redelivering the late ReserveCredit after the compensation must
            // not reserve credit again (ReleaseCredit left a tombstone).
            for d in listed {
                let id = d["id"].as_str().expect("dead letter id");
                let r = app
                    .client
                    .http
                    .post(format!("{}/deadletters/{id}/redeliver", app.url))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200, "redeliver {id}");
            }
            let (_, v) = get(app, "/deadletters").await;
            assert_eq!(v["deadletters"].as_array().map(Vec::len), Some(0), "{v}");
            // The next order's ReserveCredit is handled after the redelivered
            // ones (durable inbox entries go before queued messages), so its
            // outcome shows theirs.
            let o2 = app.client.create_order(&cid, "5.00", 10).await.unwrap();
            let o2 = settled_order(&app.client, o2["orderId"].as_str().unwrap()).await;
            assert_eq!(o2["orderState"], "APPROVED", "{o2}");
            assert_eq!(available(&app.client, &cid).await, "95.00");
            assert_credit_adds_up(app, &cid).await;
            let first = app.client.get_order(&oid, 0).await.unwrap().unwrap();
            assert_eq!(first["orderState"], "REJECTED", "{first}");
        })
    })
    .await;
}

/// A message whose handling keeps failing stays queued for the entity's next
/// actor and stays in its sender's durable outbox (it is acknowledged only
/// once a handling commit is durable); after a restart it is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_kept_by_its_sender_until_handled() {
    use durasaga::actors::Runtime;
    use durasaga::config::Settings;
    use durasaga::domain::{Payload, SagaState};
    use durasaga::persistence::{Durability, Store};
    let patch = json!({
        "mailbox": {"max_attempts": 1000},
        "supervision": {"max_restarts": 1000, "backoff_base_ms": 20, "backoff_max_ms": 20},
        "saga": {"reply_timeout_ms": 600_000}
    });
    let one = exclusive().await;
    let app = spawn_app_with(patch.clone()).await;
    let cid = app
        .client
        .create_customer("Failing", "100.00")
        .await
        .unwrap();
    durasaga::fault::arm_customer_panics(1_000_000);
    let o = app.client.create_order(&cid, "10.00", 0).await.unwrap();
    let saga_id = o["sagaId"].as_str().unwrap().to_owned();
    let oid = o["orderId"].as_str().unwrap().to_owned();
    // Handled (and failed) by three successive actors: the queue outlives them.
    let deadline = Instant::now() + DEADLINE;
    while app.rt.customers.restarts.load(SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the customer did not fail 3 times"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        app.rt.customers.depth_of(&cid),
        1,
        "the message left the queue"
    );
    let dir = app.stop().await;
    durasaga::fault::arm_customer_panics(0);

    let store = Store::open(dir.path(), Durability::Flush, 8 << 20).expect("open");
    let saga = store
        .saga
        .get::<SagaState>(&saga_id)
        .expect("read")
        .expect("saga stored");
    assert!(
        saga.outbox
            .iter()
            .any(|e| matches!(e.payload, Payload::ReserveCredit { .. })),
        "the saga forgot a ReserveCredit that was never handled: {:?}",
        saga.outbox
    );
    store.close().expect("close");
    drop(store);

    let settings = Settings::defaults()
        .with(json!({"storage": {"data_dir": dir.path()}}))
        .and_then(|s| s.with(patch))
        .expect("settings");
    let rt = Runtime::start(settings).await.expect("restart");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = rt.get_order(&oid).await.expect("get").expect("order");
        if v.order.state != durasaga::domain::OrderState::Pending {
            assert_eq!(v.order.state, durasaga::domain::OrderState::Approved);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "order still PENDING after restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = rt.get_customer(&cid).await.expect("get").expect("customer");
    assert_eq!(c.available_credit().to_string(), "90.00");
    rt.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    drop(one);
}
