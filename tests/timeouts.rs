//! Saga timeouts end to end: a customer service that never answers makes the
//! credit check time out, retry with backoff, and then either compensate
//! (release credit, reject with CREDIT_CHECK_TIMEOUT) or pause for an
//! operator's `POST /sagas/{id}/retry`. Also admission control, which needs
//! orders that stay in flight: beyond `saga.max_in_flight` of them, new
//! orders get 503.
//!
//! Its own test binary because `fault::set_customer_silent` is
//! process-global. Tests run one at a time (see `with_app`), and silence is
//! switched off when a test ends, passed or not.

mod common;

use common::{available, is_terminal_saga, saga_until, settled_order, with_app, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

async fn send(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = app
        .client
        .http
        .request(method, format!("{}{path}", app.url))
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// `(state, attempt, cause)` of every history entry.
fn history(saga: &Value) -> Vec<(String, u64, String)> {
    saga["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["state"].as_str().unwrap_or("?").to_owned(),
                h["attempt"].as_u64().unwrap_or(0),
                h["cause"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn settings(on_exhausted: &str) -> Value {
    json!({"saga": {
        "reply_timeout_ms": 200,
        "max_attempts": 3,
        "backoff_base_ms": 20,
        "backoff_max_ms": 100,
        "on_exhausted": on_exhausted
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_customer_times_out_then_the_saga_compensates_and_rejects() {
    with_app(settings("compensate"), |app| {
        Box::pin(async move {
            let cid = app.client.create_customer("Mute", "100.00").await.unwrap();
            durasaga::fault::set_customer_silent(true);
            let o = app.client.create_order(&cid, "10.00", 0).await.unwrap();
            assert_eq!(o["orderState"], "PENDING", "{o}");
            let sid = o["sagaId"].as_str().unwrap().to_owned();

            // Every ReserveCredit attempt goes unanswered; once they are
            // exhausted the saga compensates. The silent customer would ignore
            // ReleaseCredit too, so let it speak again now.
            let s = saga_until(&app.client, &sid, "reached RELEASING_CREDIT", |v| {
                v["state"] != "RESERVING_CREDIT"
            })
            .await;
            durasaga::fault::set_customer_silent(false);
            assert_eq!(s["state"], "RELEASING_CREDIT", "{s}");

            let o = settled_order(&app.client, o["orderId"].as_str().unwrap()).await;
            assert_eq!(o["orderState"], "REJECTED", "{o}");
            assert_eq!(o["rejectionReason"], "CREDIT_CHECK_TIMEOUT", "{o}");

            let saga = saga_until(&app.client, &sid, "ended", is_terminal_saga).await;
            assert_eq!(saga["state"], "REJECTED", "{saga}");
            assert_eq!(saga["rejectionReason"], "CREDIT_CHECK_TIMEOUT", "{saga}");
            let h = history(&saga);
            let reserving = |cause: &str| {
                h.iter()
                    .filter(|(s, _, c)| s == "RESERVING_CREDIT" && c == cause)
                    .count()
            };
            // 3 attempts: timeouts after attempts 1 and 2, each followed by a
            // retry; attempt 3 timing out exhausts the step.
            assert_eq!(reserving("Timeout"), 2, "{h:?}");
            assert_eq!(reserving("Retry"), 2, "{h:?}");
            let max_attempt = h
                .iter()
                .filter(|(s, _, _)| s == "RESERVING_CREDIT")
                .map(|(_, a, _)| *a)
                .max();
            assert_eq!(max_attempt, Some(3), "{h:?}");
            let pos = |state: &str| h.iter().position(|(s, _, _)| s == state);
            let (releasing, rejecting, rejected) =
                (pos("RELEASING_CREDIT"), pos("REJECTING_ORDER"), pos("REJECTED"));
            assert!(
                matches!((releasing, rejecting, rejected), (Some(a), Some(b), Some(c)) if a < b && b < c),
                "expected RELEASING_CREDIT, then REJECTING_ORDER, then REJECTED: {h:?}"
            );
            assert_eq!(h[releasing.unwrap()].2, "RetriesExhausted", "{h:?}");
            assert_eq!(h.last().unwrap().0, "REJECTED", "{h:?}");

            // Nothing is held for the rejected order.
            assert_eq!(available(&app.client, &cid).await, "100.00");
            let (_, ev) = send(
                app,
                reqwest::Method::GET,
                &format!("/orders/{}/history", o["orderId"].as_str().unwrap()),
            )
            .await;
            let types: Vec<&str> = ev["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["type"].as_str())
                .collect();
            assert_eq!(types, ["OrderCreated", "OrderRejected"], "{ev}");
            assert_eq!(
                ev["events"][1]["data"]["rejectionReason"],
                "CREDIT_CHECK_TIMEOUT",
                "{ev}"
            );
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_saga_resumes_on_operator_retry() {
    with_app(settings("pause"), |app| {
        Box::pin(async move {
            let cid = app.client.create_customer("Shy", "100.00").await.unwrap();
            durasaga::fault::set_customer_silent(true);
            let o = app.client.create_order(&cid, "10.00", 0).await.unwrap();
            let oid = o["orderId"].as_str().unwrap().to_owned();
            let sid = o["sagaId"].as_str().unwrap().to_owned();

            let paused = saga_until(&app.client, &sid, "paused", |v| {
                v["state"] != "RESERVING_CREDIT"
            })
            .await;
            assert_eq!(paused["state"], "PAUSED", "{paused}");
            assert!(
                paused["error"].is_string(),
                "no error on a paused saga: {paused}"
            );
            let h = history(&paused);
            assert_eq!(
                h.last().map(|(s, a, c)| (s.as_str(), *a, c.as_str())),
                Some(("PAUSED", 3, "RetriesExhausted")),
                "{h:?}"
            );

            // The order stays PENDING (the semantic lock) while paused.
            let (s, pending) = send(app, reqwest::Method::GET, &format!("/orders/{oid}")).await;
            assert_eq!(s, 200);
            assert_eq!(pending["orderState"], "PENDING", "{pending}");
            let (s, v) = send(app, reqwest::Method::POST, &format!("/orders/{oid}/cancel")).await;
            assert_eq!(s, 409, "cancel of a PENDING order: {v}");

            durasaga::fault::set_customer_silent(false);
            let (s, resumed) =
                send(app, reqwest::Method::POST, &format!("/sagas/{sid}/retry")).await;
            assert_eq!(s, 200, "{resumed}");
            assert_eq!(resumed["sagaId"], sid.as_str(), "{resumed}");
            assert_ne!(resumed["state"], "PAUSED", "{resumed}");

            let o = settled_order(&app.client, &oid).await;
            assert_eq!(o["orderState"], "APPROVED", "{o}");
            assert_eq!(o["rejectionReason"], Value::Null, "{o}");
            assert_eq!(available(&app.client, &cid).await, "90.00");

            let saga = saga_until(&app.client, &sid, "ended", is_terminal_saga).await;
            assert_eq!(saga["state"], "APPROVED", "{saga}");
            let h = history(&saga);
            let retry = h.iter().position(|(_, _, c)| c == "OperatorRetry");
            let paused_at = h.iter().position(|(s, _, _)| s == "PAUSED");
            assert!(
                matches!((paused_at, retry), (Some(p), Some(r)) if p < r),
                "no OperatorRetry after PAUSED: {h:?}"
            );

            // Only PAUSED or FAILED sagas can be retried.
            let (s, v) = send(app, reqwest::Method::POST, &format!("/sagas/{sid}/retry")).await;
            assert_eq!(s, 409, "retry of an APPROVED saga: {v}");
            assert_eq!(v["error"]["code"], "SAGA_NOT_RETRYABLE", "{v}");
        })
    })
    .await;
}

/// The `durasaga_orders_in_flight` gauge of `/metrics`.
async fn orders_in_flight(app: &TestApp) -> u64 {
    let text = app
        .client
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let line = text
        .lines()
        .find(|l| l.starts_with("durasaga_orders_in_flight "))
        .unwrap_or_else(|| panic!("no durasaga_orders_in_flight gauge in:\n{text}"));
    line["durasaga_orders_in_flight ".len()..]
        .trim()
        .parse::<f64>()
        .expect("gauge value") as u64
}

/// Admission control: with `saga.max_in_flight` orders unsettled, a new
/// `POST /orders` is refused with 503 OVERLOADED and Retry-After, and creates
/// nothing; once orders settle, new ones are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_beyond_max_in_flight_are_refused_until_some_settle() {
    // The silent customer keeps the sagas retrying (not exhausting) for the
    // whole test, so the orders stay PENDING until it speaks again.
    let patch = json!({"saga": {
        "reply_timeout_ms": 300,
        "max_attempts": 1000,
        "backoff_base_ms": 10,
        "backoff_max_ms": 50,
        "max_in_flight": 3
    }});
    with_app(patch, |app| {
        Box::pin(async move {
            let cid = app.client.create_customer("Busy", "100.00").await.unwrap();
            durasaga::fault::set_customer_silent(true);
            let post = |key: &'static str| {
                app.client
                    .http
                    .post(format!("{}/orders", app.url))
                    .header("Idempotency-Key", key)
                    .json(&json!({"customerId": cid, "orderTotal": {"amount": "10.00"}}))
                    .send()
            };
            let mut ids = Vec::new();
            for key in ["k1", "k2", "k3"] {
                let r = post(key).await.expect("POST /orders");
                assert_eq!(r.status().as_u16(), 201);
                let o: Value = r.json().await.expect("order");
                assert_eq!(o["orderState"], "PENDING", "{o}");
                ids.push(o["orderId"].as_str().unwrap().to_owned());
            }
            assert_eq!(orders_in_flight(app).await, 3);
            // A replay of an accepted request is answered, even at the limit.
            let r = post("k1").await.expect("POST /orders again");
            assert_eq!(r.status().as_u16(), 201, "replay at the limit");
            let again: Value = r.json().await.expect("order");
            assert_eq!(again["orderId"], ids[0].as_str(), "{again}");

            let r = app
                .client
                .http
                .post(format!("{}/orders", app.url))
                .json(&json!({"customerId": cid, "orderTotal": {"amount": "10.00"}}))
                .send()
                .await
                .expect("POST /orders");
            assert_eq!(r.status().as_u16(), 503);
            assert!(
                r.headers().contains_key(reqwest::header::RETRY_AFTER),
                "no Retry-After: {:?}",
                r.headers()
            );
            let v: Value = r.json().await.expect("error body");
            assert_eq!(v["error"]["code"], "OVERLOADED", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("max_in_flight")),
                "{v}"
            );
            // The refused request created nothing.
            let (s, list) = send(app, reqwest::Method::GET, "/orders?limit=100").await;
            assert_eq!(s, 200, "{list}");
            assert_eq!(list["orders"].as_array().map(Vec::len), Some(3), "{list}");

            durasaga::fault::set_customer_silent(false);
            for id in &ids {
                let o = settled_order(&app.client, id).await;
                assert_eq!(o["orderState"], "APPROVED", "{o}");
            }
            // Settled orders leave the count once their messages are
            // delivered; then orders are accepted again.
            let deadline = Instant::now() + DEADLINE;
            while orders_in_flight(app).await >= 3 {
                assert!(Instant::now() < deadline, "the in-flight count never fell");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let o = app.client.create_order(&cid, "10.00", 10).await.unwrap();
            assert_eq!(o["orderState"], "APPROVED", "{o}");
        })
    })
    .await;
}

/// A saga's deadline that passed while the process was down does not fire at
/// restart: recovery resends the saga's `ReserveCredit`, so the saga waits a
/// whole reply window from the restart before it times out (here the customer
/// stays silent, so it does time out, and when it does tells how long the
/// saga waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_resent_message_gets_a_whole_reply_window() {
    use durasaga::actors::Runtime;
    use durasaga::domain::{Money, SagaPhase};
    const REPLY_TIMEOUT_MS: i64 = 1_500;
    let _one_app = common::exclusive().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = durasaga::config::Settings::defaults()
        .with(json!({
            "storage": {"data_dir": dir.path()},
            "saga": {"reply_timeout_ms": REPLY_TIMEOUT_MS},
        }))
        .expect("settings");
    let rt = Runtime::start(settings.clone()).await.expect("start");
    let customer = rt
        .create_customer("Later".into(), Money::from_cents(10_000).unwrap(), None)
        .await
        .expect("customer");
    // After a restart no customer actor is live, and then none may start:
    // ReserveCredit stays in the saga's outbox.
    stop(rt).await;
    let rt = Runtime::start(settings.clone()).await.expect("restart");
    rt.customers.close();
    let order = rt
        .create_order(customer.id.clone(), Money::from_cents(1_000).unwrap(), None)
        .await
        .expect("order");
    let deadline = Instant::now() + DEADLINE;
    let reply_due = loop {
        let s = rt.get_saga(&order.saga_id).await.expect("saga");
        if let Some(d) = s
            .filter(|s| s.phase == SagaPhase::ReservingCredit)
            .and_then(|s| s.deadline)
        {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the saga never asked for credit: {:?}",
            rt.get_saga(&order.saga_id).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop(rt).await;

    // Down until the reply deadline has passed.
    while durasaga::actors::entity::now_millis() <= reply_due {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    durasaga::fault::set_customer_silent(true);
    let restarted_at = durasaga::actors::entity::now_millis();
    let rt = Runtime::start(settings).await.expect("restart");
    let timed_out_at = first_timeout(&rt, &order.saga_id).await;
    rt.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    assert!(
        timed_out_at >= restarted_at + REPLY_TIMEOUT_MS,
        "timed out {} ms after the restart; the resent ReserveCredit deserved {REPLY_TIMEOUT_MS} ms",
        timed_out_at - restarted_at
    );
}

/// When the saga first recorded a reply timeout (waits for it; the saga
/// may not exist yet).
async fn first_timeout(rt: &durasaga::actors::Runtime, saga: &str) -> durasaga::domain::Millis {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = rt.get_saga(saga).await.expect("saga");
        if let Some(h) = s
            .as_ref()
            .and_then(|s| s.history.iter().find(|h| h.cause == "Timeout"))
        {
            return h.at;
        }
        assert!(
            Instant::now() < deadline,
            "saga {saga} never timed out: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Shuts `rt` down and waits until its actors left the registry, so that
/// the next runtime of this test process can start.
async fn stop(rt: std::sync::Arc<durasaga::actors::Runtime>) {
    rt.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    drop(rt);
    common::wait_unregistered().await;
}

/// Every saga of `rt`, once none is in flight any more: how many of them
/// recorded a reply timeout, and how many ended other than APPROVED.
async fn once_all_settled(rt: &durasaga::actors::Runtime, n: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (mut all, mut after) = (Vec::new(), None::<String>);
        loop {
            let (page, next) = rt
                .list_sagas(None, None, after.as_deref(), 1_000)
                .await
                .expect("list sagas");
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(all.len(), n, "every filled saga is listed");
        if all.iter().all(|s| s.phase.is_terminal()) {
            let timed_out = all
                .iter()
                .filter(|s| s.history.iter().any(|h| h.cause == "Timeout"))
                .count();
            let not_approved = all
                .iter()
                .filter(|s| s.phase != durasaga::domain::SagaPhase::Approved)
                .count();
            return (timed_out, not_approved);
        }
        assert!(
            Instant::now() < deadline,
            "{} sagas still in flight",
            all.iter().filter(|s| !s.phase.is_terminal()).count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A crash can leave more queued work than one reply window clears. While
/// the services work through that backlog, recovery holds the timers of the
/// sagas it found in flight (see `Runtime::hold_timers_while_backlog_drains`):
/// no step times out on a message still waiting in the queue, so none is
/// resent into it, and no
/// order is rejected with CREDIT_CHECK_TIMEOUT for want of patience. With the
/// hold limited to the one window (`recovery_hold_max_ms` = the reply
/// timeout), the same backlog makes sagas time out: the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_left_by_a_crash_drains_without_reply_timeouts() {
    use durasaga::actors::Runtime;
    const IN_FLIGHT: usize = 1_500;
    const REPLY_TIMEOUT_MS: u64 = 250;
    let _one_app = common::exclusive().await;
    // (sagas that timed out, sagas not APPROVED) per hold.
    let mut outcomes = Vec::new();
    for hold_max_ms in [60_000, REPLY_TIMEOUT_MS] {
        let dir = tempfile::tempdir().expect("temp dir");
        // Sagas that had sent ReserveCredit when the process died, their
        // reply deadlines long past; every customer has credit enough.
        let then = durasaga::actors::entity::now_millis() - 60_000;
        durasaga::scale::fill(dir.path(), 50, 0, IN_FLIGHT, then).expect("fill");
        let settings = durasaga::config::Settings::defaults()
            .with(json!({
                "storage": {"data_dir": dir.path()},
                "saga": {
                    "reply_timeout_ms": REPLY_TIMEOUT_MS,
                    "max_attempts": 2,
                    "backoff_base_ms": 10,
                    "backoff_max_ms": 20,
                    "recovery_hold_max_ms": hold_max_ms,
                },
            }))
            .expect("settings");
        let rt = Runtime::start(settings).await.expect("start");
        outcomes.push(once_all_settled(&rt, IN_FLIGHT).await);
        stop(rt).await;
    }
    eprintln!("(timed out, not approved) with a hold of 60 s and of one window: {outcomes:?}");
    assert_eq!(
        outcomes[0],
        (0, 0),
        "(timed out, not approved) while the backlog drained, held for 60 s at most; \
         with a hold of one window: {:?}",
        outcomes[1]
    );
    // The control needs a backlog slower than one window: true of a debug
    // build here (~2 s for 1,500 sagas), not necessarily of a release one.
    if cfg!(debug_assertions) {
        assert!(
            outcomes[1].0 > 0,
            "with one window of hold, a backlog of {IN_FLIGHT} sagas should outlast it: {outcomes:?}"
        );
    }
}

/// Recovery holds the timers of the sagas it found in flight, not those of
/// sagas started after the restart. With every customer silent, the
/// recovered sagas wait for replies that do not come, so the hold keeps the
/// extension it made at start-up (two windows). A saga started after the
/// restart times out one window after it started, while none of the
/// recovered ones has timed out. Before, the hold covered every saga timer,
/// and the new one fired two windows after the start at the earliest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_started_after_a_restart_are_not_held() {
    use durasaga::actors::entity::now_millis;
    use durasaga::actors::Runtime;
    use durasaga::domain::Money;
    const IN_FLIGHT: usize = 200;
    const W: i64 = 2_000;
    let _one_app = common::exclusive().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Sagas that had sent ReserveCredit when the process died.
    durasaga::scale::fill(dir.path(), 10, 0, IN_FLIGHT, now_millis() - 60_000).expect("fill");
    let settings = durasaga::config::Settings::defaults()
        .with(json!({
            "storage": {"data_dir": dir.path()},
            "saga": {
                "reply_timeout_ms": W,
                "max_attempts": 3,
                "backoff_base_ms": 10,
                "backoff_max_ms": 20,
                "recovery_hold_max_ms": 60_000,
            },
        }))
        .expect("settings");
    durasaga::fault::set_customer_silent(true);
    let rt = Runtime::start(settings).await.expect("start");
    let hold = rt.saga_timer_hold_seconds();
    assert!(
        hold * 1_000.0 > 1.5 * W as f64 && rt.saga_timer_held_sagas() == IN_FLIGHT as u64,
        "recovery should hold the {IN_FLIGHT} sagas two windows ahead: {hold} s, {} sagas",
        rt.saga_timer_held_sagas()
    );
    let mute = rt
        .create_customer("Mute".into(), Money::from_cents(10_000).unwrap(), None)
        .await
        .expect("customer");
    let created = now_millis();
    let order = rt
        .create_order(mute.id.clone(), Money::from_cents(1_000).unwrap(), None)
        .await
        .expect("order");
    let timed_out_at = first_timeout(&rt, &order.saga_id).await;
    assert!(
        (created + W..created + W + W / 2).contains(&timed_out_at),
        "timed out {} ms after it started; its reply window was {W} ms",
        timed_out_at - created
    );
    let (recovered, _) = rt
        .list_sagas(None, None, None, 1_000)
        .await
        .expect("list sagas");
    let recovered_timeouts = recovered
        .iter()
        .filter(|s| s.id.as_str() != order.saga_id)
        .filter(|s| s.history.iter().any(|h| h.cause == "Timeout"))
        .count();
    assert_eq!(recovered_timeouts, 0, "a held saga timed out");
    // Answered from now on: every saga ends APPROVED (the recovered ones
    // after timing out once the hold is over).
    durasaga::fault::set_customer_silent(false);
    let (_, not_approved) = once_all_settled(&rt, IN_FLIGHT + 1).await;
    assert_eq!(not_approved, 0);
    stop(rt).await;
}

/// A saga that a resent start message creates after a restart is recovered
/// work too: recovery holds it like the sagas in flight. The order's
/// StartSaga never reached a saga before the restart (the saga service took
/// no new actors), so the saga is born after it, its customer silent: it
/// times out only when the hold's first extension (two windows) ends, not
/// one window after it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_started_by_a_resent_message_is_held() {
    use durasaga::actors::entity::now_millis;
    use durasaga::actors::Runtime;
    use durasaga::domain::Money;
    const W: i64 = 2_000;
    let _one_app = common::exclusive().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = durasaga::config::Settings::defaults()
        .with(json!({
            "storage": {"data_dir": dir.path()},
            "saga": {"reply_timeout_ms": W, "max_attempts": 3, "recovery_hold_max_ms": 60_000},
        }))
        .expect("settings");
    let rt = Runtime::start(settings.clone()).await.expect("start");
    let customer = rt
        .create_customer("Later".into(), Money::from_cents(10_000).unwrap(), None)
        .await
        .expect("customer");
    rt.sagas.close();
    let order = rt
        .create_order(customer.id.clone(), Money::from_cents(1_000).unwrap(), None)
        .await
        .expect("order");
    stop(rt).await;

    durasaga::fault::set_customer_silent(true);
    let started = now_millis();
    let rt = Runtime::start(settings).await.expect("restart");
    assert_eq!(
        rt.saga_timer_held_sagas(),
        1,
        "the saga of the resent StartSaga should be held"
    );
    let timed_out_at = first_timeout(&rt, &order.saga_id).await;
    assert!(
        timed_out_at >= started + W + W / 2,
        "timed out {} ms after the restart: not held",
        timed_out_at - started
    );
    durasaga::fault::set_customer_silent(false);
    let o = rt
        .wait_order(
            order.order.id.as_str(),
            Duration::from_secs(30),
            None,
            |v| v.order.state.is_settled(),
        )
        .await
        .expect("order")
        .expect("order exists");
    assert!(o.order.state.is_settled(), "{:?}", o.order.state);
    stop(rt).await;
}
