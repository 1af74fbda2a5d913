//! End-to-end tests, over a real socket, of the order history and `asOf`
//! time travel, the CQRS order-history view, cancellation, idempotency keys
//! (also across a restart), the admin API (paused sagas, retry, dead letters),
//! pagination of every list endpoint, and the Prometheus metrics.
//!
//! Every test runs alone: `Runtime::start` registers its supervisors under
//! fixed names in ractor's process-global registry, and the fault hooks
//! (`fault::set_customer_silent`, `fault::arm_customer_panics`) and the
//! metrics recorder are process-global too. `with_app` holds one lock for
//! the whole test, disarms every fault when the test ends (passed or not),
//! stops the app and waits until its actor names are released.
//!
//! Every wait is for a condition: a `Prefer: wait=N` long-poll, or a polling
//! loop bounded by a deadline.

mod common;

use common::{
    available, exclusive, is_terminal_saga, saga_until, settled_order, spawn_app_with,
    wait_unregistered, with_app,
};
use durasaga::actors::Runtime;
use durasaga::config::Settings;
use durasaga::harness::{cents, credit_violations, Client};
use futures::FutureExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// An app started on an existing data directory (a restart).
struct Restarted {
    rt: Arc<Runtime>,
    client: Client,
    dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Restarted {
    /// Starts durasaga on `dir` (which holds a stopped app's data), the same
    /// way `tests/common` starts a fresh one.
    async fn start(dir: tempfile::TempDir) -> Self {
        let settings = Settings::defaults()
            .with(json!({"storage": {"data_dir": dir.path()}, "http": {"bind": "127.0.0.1:0"}}))
            .expect("settings");
        let _ = durasaga::metrics::prometheus();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let rt = Runtime::start(settings)
            .await
            .expect("runtime restarts on its data");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(durasaga::http::serve(rt.clone(), listener, async move {
            let _ = rx.await;
        }));
        Self {
            rt,
            client: Client::new(&url),
            dir,
            stop,
            server,
        }
    }

    async fn stop(self) -> tempfile::TempDir {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.rt
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
        self.dir
    }
}

// ------------------------------------------------------------- helpers

/// Sends a request (with a JSON body if given); answers the status and the
/// body as JSON (`Value::Null` if it is not JSON).
async fn send(
    c: &Client,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = c.http.request(method, format!("{}{path}", c.url));
    if let Some(b) = body {
        req = req.json(b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(c: &Client, path: &str) -> (u16, Value) {
    send(c, Method::GET, path, None, &[]).await
}

async fn post(c: &Client, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    send(c, Method::POST, path, None, headers).await
}

fn order_body(customer: &str, amount: &str) -> Value {
    json!({"customerId": customer, "orderTotal": {"amount": amount}})
}

async fn create_customer(c: &Client, name: &str, limit: &str) -> String {
    c.create_customer(name, limit)
        .await
        .expect("create customer")
}

/// `POST /orders` with `Prefer: wait=10`; asserts 201.
async fn post_order(c: &Client, customer: &str, amount: &str) -> Value {
    let (s, v) = send(
        c,
        Method::POST,
        "/orders",
        Some(&order_body(customer, amount)),
        &[("Prefer", "wait=10")],
    )
    .await;
    assert_eq!(s, 201, "POST /orders answered {v}");
    v
}

fn id_of(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
        .to_owned()
}

/// Asserts that every customer's `limit - available == Σ APPROVED totals`.
async fn assert_credit_consistent(c: &Client, customers: &[String]) {
    let bad = credit_violations(c, customers).await.expect("credit check");
    assert!(bad.is_empty(), "credit does not add up: {bad:#?}");
}

/// Asserts the error body `{"error": {"code", "message", "field"}}`, with
/// `code` if given.
fn assert_error(what: &str, v: &Value, code: Option<&str>) {
    let e = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no error object in {v}"));
    let c = e
        .get("code")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| panic!("{what}: no error.code in {v}"));
    assert!(
        e.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "{what}: no error.message in {v}"
    );
    if let Some(code) = code {
        assert_eq!(c, code, "{what}: error code in {v}");
    }
}

fn parse_ms(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"));
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("time in range")
}

/// `ms` as RFC 3339 in the time zone `offset_hours` east of UTC.
fn fmt_ms(ms: i64, offset_hours: i8) -> String {
    let offset = time::UtcOffset::from_hms(offset_hours, 0, 0).expect("offset");
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .expect("time in range")
        .to_offset(offset)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// `GET /orders/{id}?asOf=...`, the time URL-encoded.
async fn order_as_of(c: &Client, id: &str, as_of: &str) -> (u16, Value) {
    let q = serde_urlencoded::to_string([("asOf", as_of)]).expect("query");
    get(c, &format!("/orders/{id}?{q}")).await
}

/// Asserts the DESIGN.md time format: RFC 3339, UTC, microseconds.
fn assert_time_format(what: &str, s: &str) {
    parse_ms(s);
    let frac = s
        .strip_suffix('Z')
        .and_then(|t| t.rsplit_once('.'))
        .map(|(_, f)| f);
    assert!(
        frac.is_some_and(|f| f.len() == 6 && f.bytes().all(|b| b.is_ascii_digit())),
        "{what}: {s:?} is not UTC with microseconds"
    );
}

/// Pages through `path` with `limit`, following `next`; asserts that every
/// page but the last is full and has `next`, that the last has none, and
/// that no item is seen twice. Returns the ids (`id_field`) in page order.
async fn page_through(
    c: &Client,
    path: &str,
    items: &str,
    id_field: &str,
    limit: usize,
) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let mut after: Option<String> = None;
    for pages in 0.. {
        assert!(pages < 10_000, "{path}: paging does not end");
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(a) = &after {
            url.push('&');
            url.push_str(&serde_urlencoded::to_string([("after", a)]).expect("query"));
        }
        let (s, v) = get(c, &url).await;
        assert_eq!(s, 200, "GET {url}: {v}");
        let page = v[items]
            .as_array()
            .unwrap_or_else(|| panic!("GET {url}: no {items} array in {v}"));
        assert!(page.len() <= limit, "GET {url}: more than {limit}: {v}");
        for item in page {
            let id = id_of(item, id_field);
            assert!(seen.insert(id.clone()), "{path}: {id} seen twice");
            ids.push(id);
        }
        match v.get("next") {
            None => break,
            Some(Value::String(n)) => {
                assert_eq!(
                    page.len(),
                    limit,
                    "GET {url}: a page with `next` must be full: {v}"
                );
                after = Some(n.clone());
            }
            Some(other) => panic!("GET {url}: `next` is not a string: {other}"),
        }
    }
    ids
}

/// Every id of `path` in one page (`limit=1000`, asserting there is no more).
async fn all_ids(c: &Client, path: &str, items: &str, id_field: &str) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (s, v) = get(c, &format!("{path}{sep}limit=1000")).await;
    assert_eq!(s, 200, "GET {path}: {v}");
    assert!(v.get("next").is_none(), "more than 1000 in {path}");
    v[items]
        .as_array()
        .unwrap_or_else(|| panic!("no {items} in {v}"))
        .iter()
        .map(|i| id_of(i, id_field))
        .collect()
}

/// Paging with `limit` visits exactly the items of the unpaged list, in the
/// same order.
async fn assert_pages(c: &Client, path: &str, items: &str, id_field: &str, limit: usize) {
    let paged = page_through(c, path, items, id_field, limit).await;
    let all = all_ids(c, path, items, id_field).await;
    assert_eq!(
        paged, all,
        "{path} paged by {limit} differs from the whole list"
    );
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

async fn metrics(c: &Client) -> prometheus_parse::Scrape {
    let r = c
        .http
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status().as_u16(), 200);
    scrape(&r.text().await.expect("metrics text"))
}

/// The sum of the counter samples of `metric` whose labels include `labels`.
fn counter_sum(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{metric} is not a counter: {other:?}"),
        })
        .sum()
}

// ------------------------------------------------------------- history

/// `GET /orders/{id}/history` lists the order's events in order, and
/// `GET /orders/{id}?asOf=` folds them up to a time (inclusive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_events_and_as_of_travels_in_time() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Historian", "100.00").await;
            let o = post_order(c, &cid, "12.34").await;
            assert_eq!(o["orderState"], "APPROVED", "{o}");
            let oid = id_of(&o, "orderId");

            let (s, h) = get(c, &format!("/orders/{oid}/history")).await;
            assert_eq!(s, 200, "{h}");
            assert_eq!(h["orderId"], oid.as_str(), "{h}");
            let events = h["events"].as_array().expect("events");
            let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
            assert_eq!(types, ["OrderCreated", "OrderApproved"], "{h}");
            let seqs: Vec<u64> = events
                .iter()
                .map(|e| e["seq"].as_u64().expect("seq"))
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "seq not strictly increasing: {h}"
            );
            let ats: Vec<&str> = events
                .iter()
                .map(|e| e["at"].as_str().expect("at"))
                .collect();
            for at in &ats {
                assert_time_format("event at", at);
            }
            let created = parse_ms(ats[0]);
            let approved = parse_ms(ats[1]);
            assert!(created <= approved, "events out of time order: {h}");
            assert_eq!(events[0]["data"]["customerId"], cid.as_str(), "{h}");
            assert_eq!(events[0]["data"]["orderTotal"]["amount"], "12.34", "{h}");

            // asOf is inclusive: at the creation instant the order is PENDING.
            let (s, v) = order_as_of(c, &oid, ats[0]).await;
            assert_eq!(s, 200, "asOf creation: {v}");
            assert_eq!(v["orderState"], "PENDING", "asOf {}: {v}", ats[0]);
            assert_eq!(v["rejectionReason"], Value::Null, "{v}");
            assert_eq!(v["orderTotal"]["amount"], "12.34", "{v}");
            // The same instant written in another time zone.
            let (s, v) = order_as_of(c, &oid, &fmt_ms(created, 2)).await;
            assert_eq!(s, 200, "asOf creation at +02:00: {v}");
            assert_eq!(v["orderState"], "PENDING", "{v}");
            if approved - created >= 2 {
                let between = fmt_ms(created + (approved - created) / 2, 0);
                let (s, v) = order_as_of(c, &oid, &between).await;
                assert_eq!(s, 200, "asOf {between}: {v}");
                assert_eq!(v["orderState"], "PENDING", "asOf {between}: {v}");
            }
            let (s, v) = order_as_of(c, &oid, ats[1]).await;
            assert_eq!(s, 200, "asOf approval: {v}");
            assert_eq!(v["orderState"], "APPROVED", "asOf {}: {v}", ats[1]);
            let (s, v) = order_as_of(c, &oid, "2999-01-01T00:00:00Z").await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["orderState"], "APPROVED", "{v}");

            // Before the order existed: 404.
            let before = fmt_ms(created - 1, 0);
            let (s, v) = order_as_of(c, &oid, &before).await;
            assert_eq!(s, 404, "asOf {before} (before creation): {v}");
            assert_error("asOf before creation", &v, Some("ORDER_NOT_FOUND"));

            for garbage in ["garbage", "yesterday", "2024-13-01T00:00:00Z", ""] {
                let (s, v) = order_as_of(c, &oid, garbage).await;
                assert_eq!(s, 400, "asOf={garbage:?}: {v}");
                assert_error("bad asOf", &v, None);
            }

            // A rejected order's history carries the reason.
            let r = post_order(c, &cid, "1000.00").await;
            assert_eq!(r["orderState"], "REJECTED", "{r}");
            let rid = id_of(&r, "orderId");
            let (_, h) = get(c, &format!("/orders/{rid}/history")).await;
            let types: Vec<&str> = h["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter_map(|e| e["type"].as_str())
                .collect();
            assert_eq!(types, ["OrderCreated", "OrderRejected"], "{h}");
            assert_eq!(
                h["events"][1]["data"]["rejectionReason"], "INSUFFICIENT_CREDIT",
                "{h}"
            );

            let (s, v) = get(c, "/orders/no-such-order/history").await;
            assert_eq!(s, 404, "{v}");
            assert_error("history of an unknown order", &v, Some("ORDER_NOT_FOUND"));
        })
    })
    .await;
}

// ---------------------------------------------------------------- view

/// The CQRS view of a customer shows its name, limit and every order with
/// state, total and rejection reason, eventually.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_history_view_shows_approved_and_rejected_orders() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Viewer", "10.00").await;
            let a = post_order(c, &cid, "6.00").await;
            assert_eq!(a["orderState"], "APPROVED", "{a}");
            let b = post_order(c, &cid, "5.00").await;
            assert_eq!(b["orderState"], "REJECTED", "{b}");
            assert_eq!(b["rejectionReason"], "INSUFFICIENT_CREDIT", "{b}");
            let (aid, bid) = (id_of(&a, "orderId"), id_of(&b, "orderId"));

            let want: BTreeMap<String, (String, String, Value)> = BTreeMap::from([
                (aid.clone(), ("APPROVED".into(), "6.00".into(), Value::Null)),
                (
                    bid.clone(),
                    (
                        "REJECTED".into(),
                        "5.00".into(),
                        json!("INSUFFICIENT_CREDIT"),
                    ),
                ),
            ]);
            let deadline = Instant::now() + Duration::from_secs(10);
            let view = loop {
                let (s, v) = get(c, &format!("/customers/{cid}/orderhistory")).await;
                assert!(s == 200 || s == 404, "GET orderhistory: {s} {v}");
                if s == 200 {
                    let got: BTreeMap<String, (String, String, Value)> = v["orders"]
                        .as_array()
                        .expect("orders")
                        .iter()
                        .map(|o| {
                            (
                                id_of(o, "orderId"),
                                (
                                    o["orderState"].as_str().unwrap_or("?").to_owned(),
                                    o["orderTotal"]["amount"].as_str().unwrap_or("?").to_owned(),
                                    o["rejectionReason"].clone(),
                                ),
                            )
                        })
                        .collect();
                    if got == want {
                        break v;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "the view never showed both orders settled: {s} {v}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert_eq!(view["customerId"], cid.as_str(), "{view}");
            assert_eq!(view["name"], "Viewer", "{view}");
            assert_eq!(view["creditLimit"]["amount"], "10.00", "{view}");
            assert_eq!(view["orders"].as_array().map(Vec::len), Some(2), "{view}");

            for unknown in ["0000unknown", "no-such-customer"] {
                let (s, v) = get(c, &format!("/customers/{unknown}/orderhistory")).await;
                assert_eq!(s, 404, "view of {unknown}: {v}");
                assert_error(
                    "view of an unknown customer",
                    &v,
                    Some("CUSTOMER_NOT_FOUND"),
                );
            }
        })
    })
    .await;
}

/// The view lets messages gather for `mailbox.view_linger_ms` before it
/// commits: orders placed within one linger of each other cost the view one
/// commit, not one per message, and it still shows every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_commits_once_for_the_messages_of_one_linger() {
    const ORDERS: usize = 10;
    with_app(json!({"mailbox": {"view_linger_ms": 1000}}), |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Batched", "1000.00").await;
            let view_commits = || {
                app.rt
                    .store
                    .view
                    .load::<durasaga::domain::CustomerHistory>(&cid)
                    .expect("view record")
                    .handled
            };
            // The registration, alone (nothing else is queued for it).
            let deadline = Instant::now() + DEADLINE;
            while view_commits() == 0 {
                assert!(Instant::now() < deadline, "the view never saw the customer");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let before = view_commits();
            // Each returns once its order is durable; its saga goes on.
            let customer = durasaga::domain::CustomerId::parse(cid.clone()).expect("id");
            for _ in 0..ORDERS {
                app.rt
                    .create_order(
                        customer.clone(),
                        durasaga::domain::Money::from_cents(100).expect("amount"),
                        None,
                    )
                    .await
                    .expect("order");
            }
            let deadline = Instant::now() + DEADLINE;
            loop {
                let v = app.rt.order_history_view(&cid).await.expect("view");
                let settled = v.as_ref().map_or(0, |v| {
                    v.orders
                        .values()
                        .filter(|o| o.state == durasaga::domain::OrderState::Approved)
                        .count()
                });
                if settled == ORDERS {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the view never showed {ORDERS} approved orders: {v:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // 2 messages per order (created, settled); the orders were all
            // placed within one linger, so about one commit for the created
            // ones and one or two for the settled ones.
            let commits = view_commits() - before;
            assert!(
                commits <= 4,
                "{commits} view commits for {} messages",
                2 * ORDERS
            );
        })
    })
    .await;
}

// -------------------------------------------------------------- cancel

/// Cancelling an APPROVED order releases its credit for later orders; orders
/// that are not APPROVED cannot be cancelled (409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_releases_the_credit_and_refuses_unapproved_orders() {
    with_app(json!({"saga": {"reply_timeout_ms": 300}}), |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Canceller", "10.00").await;
            let a = post_order(c, &cid, "8.00").await;
            assert_eq!(a["orderState"], "APPROVED", "{a}");
            let b = post_order(c, &cid, "5.00").await;
            assert_eq!(b["orderState"], "REJECTED", "{b}");
            assert_eq!(b["rejectionReason"], "INSUFFICIENT_CREDIT", "{b}");
            let (aid, bid) = (id_of(&a, "orderId"), id_of(&b, "orderId"));
            assert_eq!(available(c, &cid).await, "2.00");

            // REJECTED: 409, nothing changes.
            let (s, v) = post(c, &format!("/orders/{bid}/cancel"), &[]).await;
            assert_eq!(s, 409, "cancel REJECTED: {v}");
            assert_error("cancel REJECTED", &v, Some("ORDER_NOT_APPROVED"));
            let (s, v) = get(c, &format!("/sagas/{bid}:cancel")).await;
            assert_eq!(s, 404, "a refused cancel started a saga: {v}");

            // APPROVED: cancelled, credit released.
            let (s, v) = post(
                c,
                &format!("/orders/{aid}/cancel"),
                &[("Prefer", "wait=10")],
            )
            .await;
            assert_eq!(s, 200, "cancel APPROVED: {v}");
            assert_eq!(v["orderId"], aid.as_str(), "{v}");
            assert_eq!(v["orderState"], "CANCELLED", "{v}");
            let saga = saga_until(c, &format!("{aid}:cancel"), "terminal", is_terminal_saga).await;
            assert_eq!(saga["state"], "CANCELLED", "{saga}");
            assert_eq!(saga["kind"], "CancelOrder", "{saga}");
            assert_eq!(saga["orderId"], aid.as_str(), "{saga}");
            assert_eq!(available(c, &cid).await, "10.00");

            // The released credit is available again.
            let o = post_order(c, &cid, "8.00").await;
            assert_eq!(o["orderState"], "APPROVED", "{o}");
            assert_eq!(available(c, &cid).await, "2.00");

            // PENDING (the customer service does not answer): 409.
            durasaga::fault::set_customer_silent(true);
            let (s, p) = send(
                c,
                Method::POST,
                "/orders",
                Some(&order_body(&cid, "1.00")),
                &[],
            )
            .await;
            assert_eq!(s, 201, "{p}");
            assert_eq!(p["orderState"], "PENDING", "{p}");
            let pid = id_of(&p, "orderId");
            let (s, v) = post(c, &format!("/orders/{pid}/cancel"), &[]).await;
            assert_eq!(s, 409, "cancel PENDING: {v}");
            assert_error("cancel PENDING", &v, Some("ORDER_NOT_APPROVED"));
            durasaga::fault::set_customer_silent(false);
            // The saga's retry goes through once the customer answers again.
            let p = settled_order(c, &pid).await;
            assert_eq!(p["orderState"], "APPROVED", "{p}");
            let (s, v) = get(c, &format!("/sagas/{pid}:cancel")).await;
            assert_eq!(s, 404, "a refused cancel started a saga: {v}");

            assert_eq!(available(c, &cid).await, "1.00");
            assert_credit_consistent(c, std::slice::from_ref(&cid)).await;

            let (s, v) = post(c, "/orders/no-such-order/cancel", &[]).await;
            assert_eq!(s, 404, "cancel unknown: {v}");
            assert_error("cancel unknown", &v, Some("ORDER_NOT_FOUND"));
        })
    })
    .await;
}

/// DESIGN.md §4: `POST /orders/{id}/cancel` answers 409 if the order is not
/// APPROVED, so cancelling a CANCELLED order again is a 409 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_cancelled_order_again_is_a_conflict() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Twice", "10.00").await;
            let a = post_order(c, &cid, "4.00").await;
            assert_eq!(a["orderState"], "APPROVED", "{a}");
            let aid = id_of(&a, "orderId");
            let (s, v) = post(
                c,
                &format!("/orders/{aid}/cancel"),
                &[("Prefer", "wait=10")],
            )
            .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["orderState"], "CANCELLED", "{v}");
            saga_until(c, &format!("{aid}:cancel"), "terminal", is_terminal_saga).await;

            let (s, v) = post(c, &format!("/orders/{aid}/cancel"), &[]).await;
            // Whatever the answer, nothing changes.
            assert_eq!(available(c, &cid).await, "10.00");
            let (_, h) = get(c, &format!("/orders/{aid}/history")).await;
            assert_eq!(h["events"].as_array().map(Vec::len), Some(3), "{h}");
            assert_eq!(s, 409, "cancel CANCELLED: {v}");
            assert_error("cancel CANCELLED", &v, Some("ORDER_NOT_APPROVED"));
        })
    })
    .await;
}

// --------------------------------------------------------- idempotency

/// The same `Idempotency-Key` and body create one order (and reserve once);
/// another body with the key is a 422. The same for customers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_create_once_and_refuse_other_bodies() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Idem", "100.00").await;
            let body = order_body(&cid, "10.00");
            let hdr = [("Idempotency-Key", "order-key-1"), ("Prefer", "wait=10")];
            let (s1, a) = send(c, Method::POST, "/orders", Some(&body), &hdr).await;
            assert_eq!(s1, 201, "{a}");
            assert_eq!(a["orderState"], "APPROVED", "{a}");
            let (s2, b) = send(c, Method::POST, "/orders", Some(&body), &hdr).await;
            assert!((200..300).contains(&s2), "retry: {s2} {b}");
            assert_eq!(a["orderId"], b["orderId"], "same key, same body: {a} {b}");
            assert_eq!(b["orderState"], "APPROVED", "{b}");

            let other = order_body(&cid, "11.00");
            let (s3, v) = send(c, Method::POST, "/orders", Some(&other), &hdr).await;
            assert_eq!(s3, 422, "same key, other body: {v}");
            assert_error("order key reused", &v, Some("IDEMPOTENCY_KEY_REUSED"));
            let elsewhere = order_body("another-customer", "10.00");
            let (s3, v) = send(c, Method::POST, "/orders", Some(&elsewhere), &hdr).await;
            assert_eq!(s3, 422, "same key, other customer: {v}");
            assert_error("order key reused", &v, Some("IDEMPOTENCY_KEY_REUSED"));

            let orders =
                all_ids(c, &format!("/orders?customerId={cid}"), "orders", "orderId").await;
            assert_eq!(orders, [id_of(&a, "orderId")], "one order for one key");
            assert_eq!(all_ids(c, "/orders", "orders", "orderId").await.len(), 1);
            assert_eq!(available(c, &cid).await, "90.00", "reserved once");

            // Customers.
            let cbody = json!({"name": "Keyed", "creditLimit": {"amount": "5.00"}});
            let chdr = [("Idempotency-Key", "customer-key-1")];
            let (s1, x) = send(c, Method::POST, "/customers", Some(&cbody), &chdr).await;
            assert_eq!(s1, 201, "{x}");
            let (s2, y) = send(c, Method::POST, "/customers", Some(&cbody), &chdr).await;
            assert!((200..300).contains(&s2), "retry: {s2} {y}");
            assert_eq!(x["customerId"], y["customerId"], "{x} {y}");
            let cother = json!({"name": "Keyed", "creditLimit": {"amount": "6.00"}});
            let (s3, v) = send(c, Method::POST, "/customers", Some(&cother), &chdr).await;
            assert_eq!(s3, 422, "same key, other body: {v}");
            assert_error("customer key reused", &v, Some("IDEMPOTENCY_KEY_REUSED"));
            let cother = json!({"name": "Keyed2", "creditLimit": {"amount": "5.00"}});
            let (s3, v) = send(c, Method::POST, "/customers", Some(&cother), &chdr).await;
            assert_eq!(s3, 422, "same key, other name: {v}");
            let customers = all_ids(c, "/customers", "customers", "customerId").await;
            assert_eq!(customers.len(), 2, "{customers:?}");
            let kid = id_of(&x, "customerId");
            assert!(customers.contains(&kid), "{customers:?}");
            let k = c.get_customer(&kid).await.expect("keyed customer");
            assert_eq!(k["creditLimit"]["amount"], "5.00", "{k}");
            assert_eq!(k["name"], "Keyed", "{k}");
        })
    })
    .await;
}

/// Twenty concurrent requests with one `Idempotency-Key` all get the same
/// order, and only one order exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_get_one_order() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Racer", "100.00").await;
            let body = order_body(&cid, "3.00");
            let answers = futures::future::join_all((0..20).map(|_| {
                send(
                    c,
                    Method::POST,
                    "/orders",
                    Some(&body),
                    &[("Idempotency-Key", "racing-key"), ("Prefer", "wait=10")],
                )
            }))
            .await;
            let ids: BTreeSet<String> = answers
                .iter()
                .map(|(s, v)| {
                    assert!((200..300).contains(s), "{s} {v}");
                    id_of(v, "orderId")
                })
                .collect();
            assert_eq!(ids.len(), 1, "one key, several orders: {ids:?}");
            let id = ids.into_iter().next().expect("one id");
            assert_eq!(
                all_ids(c, "/orders", "orders", "orderId").await,
                std::slice::from_ref(&id)
            );
            assert_eq!(settled_order(c, &id).await["orderState"], "APPROVED");
            assert_eq!(available(c, &cid).await, "97.00", "reserved once");
        })
    })
    .await;
}

/// An `Idempotency-Key` outlives a restart: the retry after it gets the
/// order made before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_survive_a_restart() {
    let _one_at_a_time = exclusive().await;
    let app = spawn_app_with(json!({})).await;
    let first = std::panic::AssertUnwindSafe(async {
        let c = &app.client;
        let cid = create_customer(c, "Restarter", "100.00").await;
        let (s, o) = send(
            c,
            Method::POST,
            "/orders",
            Some(&order_body(&cid, "10.00")),
            &[("Idempotency-Key", "restart-key"), ("Prefer", "wait=10")],
        )
        .await;
        assert_eq!(s, 201, "{o}");
        assert_eq!(o["orderState"], "APPROVED", "{o}");
        let (s, k) = send(
            c,
            Method::POST,
            "/customers",
            Some(&json!({"name": "K", "creditLimit": {"amount": "1.00"}})),
            &[("Idempotency-Key", "restart-customer-key")],
        )
        .await;
        assert_eq!(s, 201, "{k}");
        (cid, id_of(&o, "orderId"), id_of(&k, "customerId"))
    })
    .catch_unwind()
    .await;
    let dir = app.stop().await;
    wait_unregistered().await;
    let (cid, oid, kid) = first.unwrap_or_else(|p| std::panic::resume_unwind(p));

    let app = Restarted::start(dir).await;
    let second = std::panic::AssertUnwindSafe(async {
        let c = &app.client;
        let (s, o) = send(
            c,
            Method::POST,
            "/orders",
            Some(&order_body(&cid, "10.00")),
            &[("Idempotency-Key", "restart-key"), ("Prefer", "wait=10")],
        )
        .await;
        assert!((200..300).contains(&s), "retry after restart: {s} {o}");
        assert_eq!(o["orderId"], oid.as_str(), "the retry made another order");
        assert_eq!(o["orderState"], "APPROVED", "{o}");
        let (s, v) = send(
            c,
            Method::POST,
            "/orders",
            Some(&order_body(&cid, "20.00")),
            &[("Idempotency-Key", "restart-key")],
        )
        .await;
        assert_eq!(s, 422, "other body after restart: {v}");
        assert_error(
            "key reused after restart",
            &v,
            Some("IDEMPOTENCY_KEY_REUSED"),
        );
        assert_eq!(
            all_ids(c, "/orders", "orders", "orderId").await,
            std::slice::from_ref(&oid)
        );
        assert_eq!(available(c, &cid).await, "90.00", "reserved once");

        let (s, k) = send(
            c,
            Method::POST,
            "/customers",
            Some(&json!({"name": "K", "creditLimit": {"amount": "1.00"}})),
            &[("Idempotency-Key", "restart-customer-key")],
        )
        .await;
        assert!(
            (200..300).contains(&s),
            "customer retry after restart: {s} {k}"
        );
        assert_eq!(k["customerId"], kid.as_str(), "{k}");
        assert_eq!(
            all_ids(c, "/customers", "customers", "customerId")
                .await
                .len(),
            2
        );
    })
    .catch_unwind()
    .await;
    drop(app.stop().await);
    wait_unregistered().await;
    if let Err(p) = second {
        std::panic::resume_unwind(p);
    }
}

// --------------------------------------------------------------- admin

/// With `on_exhausted = "pause"`, a credit check that never gets an answer
/// pauses its saga; the admin API finds it, and a retry finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_sagas_are_listed_and_retried() {
    let patch = json!({"saga": {
        "on_exhausted": "pause", "reply_timeout_ms": 200, "max_attempts": 2,
        "backoff_base_ms": 10, "backoff_max_ms": 20,
    }});
    with_app(patch, |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Paused", "50.00").await;
            let ok = post_order(c, &cid, "1.00").await;
            assert_eq!(ok["orderState"], "APPROVED", "{ok}");
            let ok_saga = id_of(&ok, "sagaId");
            saga_until(c, &ok_saga, "terminal", is_terminal_saga).await;

            durasaga::fault::set_customer_silent(true);
            let (s, o) = send(
                c,
                Method::POST,
                "/orders",
                Some(&order_body(&cid, "5.00")),
                &[],
            )
            .await;
            assert_eq!(s, 201, "{o}");
            let oid = id_of(&o, "orderId");
            let sid = id_of(&o, "sagaId");
            let paused = saga_until(c, &sid, "PAUSED", |v| v["state"] == "PAUSED").await;
            assert_eq!(paused["orderId"], oid.as_str(), "{paused}");
            assert!(
                paused["history"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|e| e["state"] == "PAUSED")),
                "no PAUSED transition in the history: {paused}"
            );
            let order = c.get_order(&oid, 0).await.expect("GET").expect("order");
            assert_eq!(order["orderState"], "PENDING", "{order}");
            // The semantic lock: a PENDING order cannot be cancelled.
            let (s, v) = post(c, &format!("/orders/{oid}/cancel"), &[]).await;
            assert_eq!(s, 409, "cancel of a paused order: {v}");

            assert_eq!(
                all_ids(c, "/sagas?state=PAUSED", "sagas", "sagaId").await,
                std::slice::from_ref(&sid)
            );
            let approved = all_ids(c, "/sagas?state=APPROVED", "sagas", "sagaId").await;
            assert_eq!(approved, std::slice::from_ref(&ok_saga));
            // olderThan=0: every saga last updated before now. Polled,
            // because "before now" excludes the current millisecond.
            let deadline = Instant::now() + DEADLINE;
            loop {
                let older = all_ids(c, "/sagas?olderThan=0", "sagas", "sagaId").await;
                if older.contains(&sid) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "olderThan=0 misses {sid}: {older:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let recent = all_ids(c, "/sagas?olderThan=3600", "sagas", "sagaId").await;
            assert!(recent.is_empty(), "olderThan=3600: {recent:?}");
            let (s, v) = get(c, "/sagas?state=SLEEPING").await;
            assert_eq!(s, 400, "{v}");

            // Retrying an APPROVED saga is a conflict; an unknown one, 404.
            let (s, v) = post(c, &format!("/sagas/{ok_saga}/retry"), &[]).await;
            assert_eq!(s, 409, "retry APPROVED: {v}");
            assert_error("retry APPROVED", &v, Some("SAGA_NOT_RETRYABLE"));
            let (s, v) = post(c, "/sagas/no-such-saga/retry", &[]).await;
            assert_eq!(s, 404, "retry unknown: {v}");
            assert_error("retry unknown", &v, Some("SAGA_NOT_FOUND"));

            durasaga::fault::set_customer_silent(false);
            let (s, v) = post(c, &format!("/sagas/{sid}/retry"), &[]).await;
            assert_eq!(s, 200, "retry PAUSED: {v}");
            assert_ne!(v["state"], "PAUSED", "{v}");
            let order = settled_order(c, &oid).await;
            assert_eq!(order["orderState"], "APPROVED", "{order}");
            let done = saga_until(c, &sid, "terminal", is_terminal_saga).await;
            assert_eq!(done["state"], "APPROVED", "{done}");
            let (s, v) = post(c, &format!("/sagas/{sid}/retry"), &[]).await;
            assert_eq!(s, 409, "retry after APPROVED: {v}");
            assert!(all_ids(c, "/sagas?state=PAUSED", "sagas", "sagaId")
                .await
                .is_empty());
            assert_eq!(available(c, &cid).await, "44.00");
            assert_credit_consistent(c, std::slice::from_ref(&cid)).await;
        })
    })
    .await;
}

/// A poisoned `ReserveCredit` goes to the dead letters; redelivered once the
/// fault is gone, it finishes the saga.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redelivered() {
    let patch = json!({"mailbox": {"max_attempts": 2}, "saga": {"reply_timeout_ms": 30000}});
    with_app(patch, |app| {
        Box::pin(async move {
            let c = &app.client;
            let cid = create_customer(c, "Poisoned", "100.00").await;
            durasaga::fault::arm_customer_panics(1000);
            let (s, o) = send(
                c,
                Method::POST,
                "/orders",
                Some(&order_body(&cid, "10.00")),
                &[],
            )
            .await;
            assert_eq!(s, 201, "{o}");
            let oid = id_of(&o, "orderId");
            let sid = id_of(&o, "sagaId");

            let deadline = Instant::now() + DEADLINE;
            let dl = loop {
                let (s, v) = get(c, "/deadletters").await;
                assert_eq!(s, 200, "{v}");
                let found = v["deadletters"]
                    .as_array()
                    .expect("deadletters")
                    .iter()
                    .find(|d| d["sagaId"] == sid.as_str())
                    .cloned();
                if let Some(d) = found {
                    break d;
                }
                assert!(Instant::now() < deadline, "no dead letter for {sid}: {v}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert_eq!(dl["service"], "customer", "{dl}");
            assert_eq!(dl["kind"], "ReserveCredit", "{dl}");
            assert_eq!(dl["entity"], cid.as_str(), "{dl}");
            assert!(dl["error"].as_str().is_some_and(|e| !e.is_empty()), "{dl}");
            assert!(dl["attempts"].as_u64().is_some_and(|a| a >= 2), "{dl}");
            assert_time_format("dead letter at", dl["at"].as_str().expect("at"));
            let dlid = id_of(&dl, "id");

            // The saga still waits for its reply; nothing was reserved.
            let order = c.get_order(&oid, 0).await.expect("GET").expect("order");
            assert_eq!(order["orderState"], "PENDING", "{order}");
            assert_eq!(available(c, &cid).await, "100.00");

            durasaga::fault::arm_customer_panics(0);
            let (s, v) = post(c, &format!("/deadletters/{dlid}/redeliver"), &[]).await;
            assert_eq!(s, 200, "redeliver: {v}");
            assert_eq!(v["redelivered"]["id"], dlid.as_str(), "{v}");
            let order = settled_order(c, &oid).await;
            assert_eq!(order["orderState"], "APPROVED", "{order}");
            let saga = saga_until(c, &sid, "terminal", is_terminal_saga).await;
            assert_eq!(saga["state"], "APPROVED", "{saga}");
            assert_eq!(available(c, &cid).await, "90.00");
            assert_credit_consistent(c, std::slice::from_ref(&cid)).await;

            let left = all_ids(c, "/deadletters", "deadletters", "id").await;
            assert!(
                !left.contains(&dlid),
                "still listed after redelivery: {left:?}"
            );
            let (s, v) = post(c, &format!("/deadletters/{dlid}/redeliver"), &[]).await;
            assert_eq!(s, 404, "redeliver twice: {v}");
            assert_error("redeliver twice", &v, Some("DEAD_LETTER_NOT_FOUND"));
        })
    })
    .await;
}

// ----------------------------------------------------------- pagination

/// Every list endpoint, paged two at a time, visits every item exactly once
/// and ends with a page without `next`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_endpoint_pages_through_every_item_once() {
    let patch = json!({"mailbox": {"max_attempts": 1}, "saga": {"reply_timeout_ms": 30000}});
    with_app(patch, |app| {
        Box::pin(async move {
            let c = &app.client;
            let mut customers = Vec::new();
            for i in 0..5 {
                customers.push(create_customer(c, &format!("Pager {i}"), "10.00").await);
            }
            for (i, cid) in customers.iter().enumerate() {
                let o = post_order(c, cid, if i % 2 == 0 { "4.00" } else { "40.00" }).await;
                assert_ne!(o["orderState"], "PENDING", "{o}");
            }
            let u = post_order(c, "nobody", "1.00").await;
            assert_eq!(u["rejectionReason"], "UNKNOWN_CUSTOMER", "{u}");
            for id in all_ids(c, "/sagas", "sagas", "sagaId").await {
                saga_until(c, &id, "terminal", is_terminal_saga).await;
            }

            // Three poisoned ReserveCredits: three dead letters.
            durasaga::fault::arm_customer_panics(1000);
            for cid in &customers[..3] {
                let (s, o) = send(
                    c,
                    Method::POST,
                    "/orders",
                    Some(&order_body(cid, "1.00")),
                    &[],
                )
                .await;
                assert_eq!(s, 201, "{o}");
            }
            let deadline = Instant::now() + DEADLINE;
            while all_ids(c, "/deadletters", "deadletters", "id").await.len() < 3 {
                assert!(Instant::now() < deadline, "fewer than 3 dead letters");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }

            assert_eq!(
                all_ids(c, "/customers", "customers", "customerId")
                    .await
                    .len(),
                5
            );
            assert_eq!(all_ids(c, "/orders", "orders", "orderId").await.len(), 9);
            assert_eq!(all_ids(c, "/sagas", "sagas", "sagaId").await.len(), 9);
            assert_eq!(
                all_ids(c, "/deadletters", "deadletters", "id").await.len(),
                3
            );
            for limit in [1, 2, 3] {
                assert_pages(c, "/customers", "customers", "customerId", limit).await;
                assert_pages(c, "/orders", "orders", "orderId", limit).await;
                assert_pages(c, "/sagas", "sagas", "sagaId", limit).await;
                assert_pages(c, "/deadletters", "deadletters", "id", limit).await;
                assert_pages(c, "/orders?state=APPROVED", "orders", "orderId", limit).await;
                assert_pages(c, "/orders?state=PENDING", "orders", "orderId", limit).await;
                let by_customer = format!("/orders?customerId={}", customers[0]);
                assert_pages(c, &by_customer, "orders", "orderId", limit).await;
                assert_pages(c, "/sagas?state=REJECTED", "sagas", "sagaId", limit).await;
            }
            // Exactly two items fill the one page: no `next`.
            let (_, v) = get(c, &format!("/orders?customerId={}&limit=2", customers[0])).await;
            assert_eq!(v["orders"].as_array().map(Vec::len), Some(2), "{v}");
            assert!(v.get("next").is_none(), "{v}");
        })
    })
    .await;
}

// -------------------------------------------------------------- metrics

/// `/metrics` is Prometheus text; N sagas ended add N CreateOrder outcomes
/// and N created orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_saga_outcomes_and_created_orders() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            const N: usize = 7;
            let c = &app.client;
            let before = metrics(c).await;
            let outcomes0 = counter_sum(
                &before,
                "durasaga_saga_outcomes_total",
                &[("kind", "CreateOrder")],
            );
            let approved0 = counter_sum(
                &before,
                "durasaga_saga_outcomes_total",
                &[("kind", "CreateOrder"), ("result", "APPROVED")],
            );
            let created0 = counter_sum(&before, "durasaga_orders_created_total", &[]);

            let cid = create_customer(c, "Measured", "10.00").await;
            let mut sagas = Vec::new();
            let mut approved = 0;
            for _ in 0..N {
                let o = post_order(c, &cid, "3.00").await;
                if o["orderState"] == "APPROVED" {
                    approved += 1;
                }
                sagas.push(id_of(&o, "sagaId"));
            }
            assert_eq!(approved, 3, "10.00 holds three orders of 3.00");
            for sid in &sagas {
                saga_until(c, sid, "terminal", is_terminal_saga).await;
            }

            let after = metrics(c).await;
            let outcomes = counter_sum(
                &after,
                "durasaga_saga_outcomes_total",
                &[("kind", "CreateOrder")],
            );
            assert_eq!(outcomes - outcomes0, N as f64, "CreateOrder outcomes");
            let approved1 = counter_sum(
                &after,
                "durasaga_saga_outcomes_total",
                &[("kind", "CreateOrder"), ("result", "APPROVED")],
            );
            assert_eq!(approved1 - approved0, approved as f64, "APPROVED outcomes");
            let created = counter_sum(&after, "durasaga_orders_created_total", &[]);
            assert_eq!(created - created0, N as f64, "orders created");
            for name in ["durasaga_flush_batch_size", "durasaga_http_requests_total"] {
                assert!(
                    after.samples.iter().any(|s| s.metric == name
                        || s.metric
                            .strip_prefix(name)
                            .is_some_and(|r| r.starts_with('_'))),
                    "no {name} in /metrics"
                );
            }
            assert!(
                counter_sum(
                    &after,
                    "durasaga_http_requests_total",
                    &[("route", "/orders")]
                ) >= N as f64,
                "POST /orders not counted"
            );
            let total = cents(&c.get_customer(&cid).await.expect("customer")["availableCredit"])
                .expect("cents");
            assert_eq!(total, 100);
        })
    })
    .await;
}
