//! End-to-end tests of the REST contract (DESIGN.md §4) against an in-process
//! durasaga on port 0 with a fresh data directory per test.
//!
//! Apps run one at a time and are stopped after each test, whatever its
//! outcome: `Runtime::start` registers its service supervisors under fixed
//! names in ractor's process-global registry, so a second live runtime in the
//! same process cannot start (see `two_apps_can_run_in_one_process`).
//!
//! Every wait is for a condition: a `Prefer: wait=N` long-poll, or a polling
//! loop bounded by a deadline. Nothing sleeps and hopes.

mod common;

use common::{available, ended_saga, settled_order, spawn_app_with, with_app, TestApp};
use reqwest::header::{HeaderMap, ALLOW, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.url)
}

/// Sends a JSON request; answers the status, headers and the body as JSON
/// (`Value::Null` if the body is not JSON).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = app.client.http.request(method, url(app, path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let (s, _, v) = send(app, Method::GET, path, None, &[]).await;
    (s, v)
}

async fn create_customer(app: &TestApp, name: &str, limit: &str) -> String {
    app.client
        .create_customer(name, limit)
        .await
        .expect("create customer")
}

/// `POST /orders` with `Prefer: wait=10`; asserts 201 and the Location header.
async fn post_order(app: &TestApp, customer: Value, amount: Value) -> Value {
    let (s, h, v) = send(
        app,
        Method::POST,
        "/orders",
        Some(json!({"customerId": customer, "orderTotal": {"amount": amount}})),
        &[("Prefer", "wait=10")],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "POST /orders answered {v}");
    let id = v["orderId"].as_str().expect("orderId").to_owned();
    assert_eq!(
        h.get(LOCATION).and_then(|l| l.to_str().ok()),
        Some(format!("/orders/{id}").as_str()),
        "Location header of POST /orders"
    );
    v
}

/// Checks the error body shape `{"error": {"code", "message", "field"}}`.
fn check_error_shape(what: &str, v: &Value, code: Option<&str>) -> Result<(), String> {
    let e = v["error"]
        .as_object()
        .ok_or_else(|| format!("{what}: no error object in {v}"))?;
    let c = e
        .get("code")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| format!("{what}: no error.code in {v}"))?;
    if e.get("message")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(format!("{what}: no error.message in {v}"));
    }
    if !matches!(e.get("field"), Some(Value::Null | Value::String(_))) {
        return Err(format!(
            "{what}: error.field missing or not a string/null in {v}"
        ));
    }
    match code {
        Some(code) if c != code => Err(format!("{what}: error code {c}, expected {code}")),
        _ => Ok(()),
    }
}

/// Asserts the error body shape `{"error": {"code", "message", "field"}}`.
fn assert_error_shape(what: &str, v: &Value, code: Option<&str>) {
    if let Err(e) = check_error_shape(what, v, code) {
        panic!("{e}");
    }
}

// ------------------------------------------------------------ the saga

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_approved_or_rejected_against_the_credit_limit() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let cid = create_customer(app, "Fred", "15.00").await;

            let approved = post_order(app, json!(cid), json!("12.34")).await;
            assert_eq!(approved["orderState"], "APPROVED", "{approved}");
            assert_eq!(approved["rejectionReason"], Value::Null);
            assert_eq!(approved["customerId"], cid.as_str());
            assert_eq!(approved["orderTotal"]["amount"], "12.34");
            let oid = approved["orderId"].as_str().unwrap().to_owned();

            let too_big = post_order(app, json!(cid), json!("123.40")).await;
            assert_eq!(too_big["orderState"], "REJECTED", "{too_big}");
            assert_eq!(too_big["rejectionReason"], "INSUFFICIENT_CREDIT");

            // An integer customer id that names no customer.
            let unknown = post_order(app, json!(9223372036854775807i64), json!("1.00")).await;
            assert_eq!(unknown["customerId"], "9223372036854775807");
            assert_eq!(unknown["orderState"], "REJECTED", "{unknown}");
            assert_eq!(unknown["rejectionReason"], "UNKNOWN_CUSTOMER");

            let (s, c) = get(app, &format!("/customers/{cid}")).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(c["customerId"], cid.as_str());
            assert_eq!(c["name"], "Fred");
            assert_eq!(c["creditLimit"]["amount"], "15.00");
            assert_eq!(c["availableCredit"]["amount"], "2.66");

            // GET /orders/{id} agrees with the answer of POST /orders.
            let (s, o) = get(app, &format!("/orders/{oid}")).await;
            assert_eq!(s, StatusCode::OK);
            for k in [
                "orderId",
                "customerId",
                "orderTotal",
                "orderState",
                "rejectionReason",
                "sagaId",
            ] {
                assert_eq!(o[k], approved[k], "field {k}: GET {o} vs POST {approved}");
            }

            // The saga ends just after the order does.
            let saga_id = o["sagaId"].as_str().expect("sagaId").to_owned();
            let saga = ended_saga(&app.client, &saga_id).await;
            assert_eq!(saga["state"], "APPROVED", "{saga}");
            assert_eq!(saga["orderId"], oid.as_str());
            assert_eq!(saga["customerId"], cid.as_str());
            assert_eq!(saga["kind"], "CreateOrder");
            let hist = saga["history"].as_array().expect("history");
            assert!(!hist.is_empty(), "empty saga history: {saga}");
            assert_eq!(hist.last().unwrap()["state"], "APPROVED", "{saga}");

            // The rejected sagas end REJECTED with their reason.
            for o in [&too_big, &unknown] {
                let sid = o["sagaId"].as_str().unwrap();
                let s = ended_saga(&app.client, sid).await;
                assert_eq!(s["state"], "REJECTED", "{s}");
                assert_eq!(s["rejectionReason"], o["rejectionReason"], "{s}");
            }

            // The event history: OrderCreated, then OrderApproved, seq increasing.
            let (s, h) = get(app, &format!("/orders/{oid}/history")).await;
            assert_eq!(s, StatusCode::OK, "{h}");
            assert_eq!(h["orderId"], oid.as_str());
            let events = h["events"].as_array().expect("events");
            let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
            assert_eq!(types, ["OrderCreated", "OrderApproved"], "{h}");
            let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
            assert_eq!(seqs.len(), 2, "{h}");
            assert!(seqs[0] < seqs[1], "seq not increasing: {h}");
            assert_eq!(events[0]["data"]["orderTotal"]["amount"], "12.34", "{h}");
            assert_eq!(events[0]["data"]["customerId"], cid.as_str(), "{h}");

            // Items of GET /orders have the same shape as GET /orders/{id}.
            let (s, list) = get(app, &format!("/orders?customerId={cid}&state=APPROVED")).await;
            assert_eq!(s, StatusCode::OK, "{list}");
            let items = list["orders"].as_array().expect("orders");
            assert_eq!(items.len(), 1, "{list}");
            assert_eq!(items[0], o, "list item differs from GET /orders/{{id}}");
            let (_, all) = get(app, "/orders").await;
            assert_eq!(all["orders"].as_array().map(Vec::len), Some(3), "{all}");
            assert!(all.get("next").is_none(), "{all}");
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_never_overdraw_the_credit_limit() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let cid = create_customer(app, "Busy", "50.00").await;

            let posts = (0..100).map(|_| {
                let client = app.client.clone();
                let cid = cid.clone();
                async move { client.create_order(&cid, "1.00", 30).await }
            });
            let created = futures::future::join_all(posts).await;
            let mut approved = 0;
            let mut rejected = 0;
            for o in created {
                let o = o.expect("POST /orders");
                let o = if o["orderState"] == "PENDING" {
                    settled_order(&app.client, o["orderId"].as_str().unwrap()).await
                } else {
                    o
                };
                match o["orderState"].as_str() {
                    Some("APPROVED") => approved += 1,
                    Some("REJECTED") => {
                        assert_eq!(o["rejectionReason"], "INSUFFICIENT_CREDIT", "{o}");
                        rejected += 1;
                    }
                    _ => panic!("unexpected order {o}"),
                }
            }
            assert_eq!((approved, rejected), (50, 50));
            assert_eq!(available(&app.client, &cid).await, "0.00");
            let bad = durasaga::harness::credit_violations(&app.client, std::slice::from_ref(&cid))
                .await
                .expect("credit check");
            assert!(bad.is_empty(), "{bad:?}");
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_may_be_json_numbers() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let (s, h, v) = send(
                app,
                Method::POST,
                "/customers",
                Some(json!({"name": "Numbers", "creditLimit": {"amount": 100}})),
                &[],
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            let cid = v["customerId"].as_str().expect("customerId").to_owned();
            assert_eq!(
                h.get(LOCATION).and_then(|l| l.to_str().ok()),
                Some(format!("/customers/{cid}").as_str())
            );
            let c = app.client.get_customer(&cid).await.unwrap();
            assert_eq!(c["creditLimit"]["amount"], "100.00");

            let o = post_order(app, json!(cid), json!(12.5)).await;
            assert_eq!(o["orderTotal"]["amount"], "12.50", "{o}");
            assert_eq!(o["orderState"], "APPROVED", "{o}");
            assert_eq!(available(&app.client, &cid).await, "87.50");
        })
    })
    .await;
}

// ----------------------------------------------------------- bad input

struct Bad {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    code: Option<&'static str>,
    field: Option<&'static str>,
    allow: Option<&'static str>,
}

fn bad(what: &'static str, method: Method, path: &str, status: u16) -> Bad {
    Bad {
        what,
        method,
        path: path.to_owned(),
        content_type: None,
        body: None,
        headers: Vec::new(),
        status,
        code: None,
        field: None,
        allow: None,
    }
}

impl Bad {
    fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json");
        self.body = Some(body.to_string().into_bytes());
        self
    }
    fn raw(mut self, content_type: Option<&'static str>, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = content_type;
        self.body = Some(body.into());
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.push((k, v));
        self
    }
    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
    fn allow(mut self, allow: &'static str) -> Self {
        self.allow = Some(allow);
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_change_nothing() {
    with_app(json!({}), |app| { Box::pin(async move {
    let cid = create_customer(app, "Existing", "100.00").await;
    let (_, customers_before) = get(app, "/customers").await;
    let (_, orders_before) = get(app, "/orders").await;
    let cust =
        |name: Value, amount: Value| json!({"name": name, "creditLimit": {"amount": amount}});
    let order = |amount: Value| json!({"customerId": cid, "orderTotal": {"amount": amount}});
    let valid_customer = cust(json!("Valid"), json!("10.00")).to_string();
    let big = format!(
        r#"{{"name": "{}", "creditLimit": {{"amount": "1.00"}}}}"#,
        "x".repeat(17 * 1024)
    );
    let post = Method::POST;
    let get_ = Method::GET;

    let cases = vec![
        bad("malformed JSON", post.clone(), "/customers", 400)
            .raw(Some("application/json"), r#"{"name": "a", "creditLimit": "#)
            .code("MALFORMED_JSON"),
        bad("empty body", post.clone(), "/customers", 400).raw(Some("application/json"), ""),
        bad("unknown field", post.clone(), "/customers", 400)
            .json(json!({"name": "a", "creditLimit": {"amount": "1.00"}, "vip": true}))
            .code("UNKNOWN_FIELD"),
        bad("unknown field in money", post.clone(), "/orders", 400)
            .json(json!({"customerId": cid, "orderTotal": {"amount": "1.00", "currency": "EUR"}})),
        bad("unknown field in order", post.clone(), "/orders", 400)
            .json(json!({"customerId": cid, "orderTotal": {"amount": "1.00"}, "note": "x"})),
        bad("missing field", post.clone(), "/customers", 400).json(json!({"name": "a"})),
        bad("name as number", post.clone(), "/customers", 400)
            .json(cust(json!(42), json!("1.00")))
            .field("name"),
        bad("amount as bool", post.clone(), "/orders", 400)
            .json(order(json!(true)))
            .field("orderTotal.amount"),
        bad("customerId as float", post.clone(), "/orders", 400)
            .json(json!({"customerId": 1.5, "orderTotal": {"amount": "1.00"}}))
            .field("customerId"),
        bad("customerId with a slash", post.clone(), "/orders", 400)
            .json(json!({"customerId": "a/b", "orderTotal": {"amount": "1.00"}}))
            .field("customerId"),
        bad("negative amount", post.clone(), "/orders", 400)
            .json(order(json!("-1.00")))
            .field("orderTotal.amount"),
        bad("negative number amount", post.clone(), "/customers", 400)
            .json(cust(json!("n"), json!(-5)))
            .field("creditLimit.amount"),
        bad("3-decimal amount", post.clone(), "/orders", 400)
            .json(order(json!("1.234")))
            .field("orderTotal.amount"),
        bad("3-decimal number amount", post.clone(), "/customers", 400)
            .json(cust(json!("n"), json!(1.234)))
            .field("creditLimit.amount"),
        bad(
            "oversized amount (number 1e13)",
            post.clone(),
            "/customers",
            400,
        )
        .json(cust(json!("n"), json!(1e13)))
        .field("creditLimit.amount"),
        bad("oversized amount (string)", post.clone(), "/orders", 400)
            .json(order(json!("10000000000000.00")))
            .field("orderTotal.amount"),
        bad("amount not a number", post.clone(), "/orders", 400)
            .json(order(json!("twelve")))
            .field("orderTotal.amount"),
        bad("empty name", post.clone(), "/customers", 400)
            .json(cust(json!(""), json!("1.00")))
            .field("name"),
        bad("blank name", post.clone(), "/customers", 400)
            .json(cust(json!("   "), json!("1.00")))
            .field("name"),
        bad("201-char name", post.clone(), "/customers", 400)
            .json(cust(json!("n".repeat(201)), json!("1.00")))
            .field("name"),
        bad("body over 16 KiB", post.clone(), "/customers", 413)
            .raw(Some("application/json"), big)
            .code("BODY_TOO_LARGE"),
        bad("text/plain", post.clone(), "/customers", 415)
            .raw(Some("text/plain"), valid_customer.clone())
            .code("UNSUPPORTED_MEDIA_TYPE"),
        bad("missing content type", post.clone(), "/customers", 415)
            .raw(None, valid_customer.clone())
            .code("UNSUPPORTED_MEDIA_TYPE"),
        bad("unknown route", get_.clone(), "/nope", 404).code("ROUTE_NOT_FOUND"),
        bad(
            "unknown nested route",
            get_.clone(),
            "/customers/x/y/z",
            404,
        ),
        bad("DELETE /orders", Method::DELETE, "/orders", 405)
            .code("METHOD_NOT_ALLOWED")
            .allow("GET, POST"),
        bad("PUT /customers/x", Method::PUT, "/customers/x", 405)
            .json(cust(json!("n"), json!("1.00")))
            .code("METHOD_NOT_ALLOWED")
            .allow("GET"),
        bad(
            "GET /orders/x/cancel",
            get_.clone(),
            "/orders/x/cancel",
            405,
        )
        .allow("POST"),
        bad("limit=0", get_.clone(), "/orders?limit=0", 400),
        bad("limit=1001", get_.clone(), "/customers?limit=1001", 400),
        bad("limit=abc", get_.clone(), "/customers?limit=abc", 400),
        bad("state=NOPE", get_.clone(), "/orders?state=NOPE", 400),
        bad(
            "unknown query parameter",
            get_.clone(),
            "/orders?colour=red",
            400,
        )
        .code("UNKNOWN_PARAMETER"),
        bad(
            "unknown query parameter on an item",
            get_.clone(),
            &format!("/customers/{cid}?x=1"),
            400,
        ),
        bad("unknown order", get_.clone(), "/orders/0000unknown", 404).code("ORDER_NOT_FOUND"),
        bad(
            "unknown order history",
            get_.clone(),
            "/orders/0000unknown/history",
            404,
        )
        .code("ORDER_NOT_FOUND"),
        bad(
            "cancel unknown order",
            post.clone(),
            "/orders/0000unknown/cancel",
            404,
        )
        .code("ORDER_NOT_FOUND"),
        bad(
            "unknown customer",
            get_.clone(),
            "/customers/0000unknown",
            404,
        )
        .code("CUSTOMER_NOT_FOUND"),
        bad("unknown saga", get_.clone(), "/sagas/0000unknown", 404).code("SAGA_NOT_FOUND"),
        bad(
            "retry unknown saga",
            post.clone(),
            "/sagas/0000unknown/retry",
            404,
        )
        .code("SAGA_NOT_FOUND"),
        bad("Prefer: wait=abc on POST", post.clone(), "/orders", 400)
            .json(order(json!("1.00")))
            .header("Prefer", "wait=abc"),
        bad("Prefer: wait=-1 on POST", post.clone(), "/orders", 400)
            .json(order(json!("1.00")))
            .header("Prefer", "wait=-1"),
        bad("sagas state=NOPE", get_.clone(), "/sagas?state=NOPE", 400),
        bad("sagas olderThan=soon", get_.clone(), "/sagas?olderThan=soon", 400),
        bad("sagas unknown parameter", get_.clone(), "/sagas?x=1", 400).code("UNKNOWN_PARAMETER"),
        bad("deadletters limit=0", get_.clone(), "/deadletters?limit=0", 400),
        bad("redeliver unknown dead letter", post.clone(), "/deadletters/zz/redeliver", 404)
            .code("DEAD_LETTER_NOT_FOUND"),
        bad("GET /deadletters/x/redeliver", get_.clone(), "/deadletters/x/redeliver", 405)
            .allow("POST"),
        bad("POST /sagas", post.clone(), "/sagas", 405).allow("GET"),
        bad("unknown customer's view", get_.clone(), "/customers/0000unknown/orderhistory", 404)
            .code("CUSTOMER_NOT_FOUND"),
        bad(
            "Prefer: wait=abc on GET",
            get_.clone(),
            "/orders/0000unknown",
            400,
        )
        .header("Prefer", "wait=abc"),
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let mut req = app
            .client
            .http
            .request(case.method.clone(), url(app, &case.path));
        if let Some(ct) = case.content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(b) = &case.body {
            req = req.body(b.clone());
        }
        for (k, v) in &case.headers {
            req = req.header(*k, *v);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: request failed: {e}", case.what));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != case.status {
            failures.push(format!(
                "{}: {} {} answered {status}, expected {}: {text}",
                case.what, case.method, case.path, case.status
            ));
            continue;
        }
        if let Err(e) = check_error_shape(case.what, &v, case.code) {
            failures.push(e);
        }
        if let Some(f) = case.field {
            if v["error"]["field"] != f {
                failures.push(format!("{}: error.field is not {f}: {v}", case.what));
            }
        }
        let ct = headers.get(CONTENT_TYPE).and_then(|h| h.to_str().ok());
        if ct != Some("application/json") {
            failures.push(format!("{}: error content type {ct:?}", case.what));
        }
        if let Some(a) = case.allow {
            let got = headers.get(ALLOW).and_then(|h| h.to_str().ok());
            if got != Some(a) {
                failures.push(format!("{}: Allow header {got:?}, expected {a}", case.what));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let (_, customers_after) = get(app, "/customers").await;
    let (_, orders_after) = get(app, "/orders").await;
    assert_eq!(
        customers_before, customers_after,
        "a bad request created a customer"
    );
    assert_eq!(
        orders_before, orders_after,
        "a bad request created an order"
    );
    assert_eq!(
        customers_after["customers"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(orders_after["orders"].as_array().map(Vec::len), Some(0));
    })}).await;
}

// ---------------------------------------------------------- pagination

/// `GET /orders?customerId` finds a customer's orders without a scan: those
/// in the order-history view and those whose view event is still on its way
/// (in the order database's recovery index). Both halves are exercised: the
/// view is closed before the last order, so only the index knows of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_a_customer_are_listed_from_the_view_and_the_orders_in_flight() {
    with_app(json!({"actors": {"idle_timeout_ms": 100}}), |app| {
        Box::pin(async move {
            let a = create_customer(app, "A", "100.00").await;
            let b = create_customer(app, "B", "100.00").await;
            let mut mine = Vec::new();
            for _ in 0..2 {
                let o = post_order(app, json!(a), json!("1.00")).await;
                mine.push(settled_order(&app.client, o["orderId"].as_str().unwrap()).await);
            }
            let other = post_order(app, json!(b), json!("1.00")).await;
            settled_order(&app.client, other["orderId"].as_str().unwrap()).await;

            // Every order delivered to the view and out of the recovery
            // index, and no view actor left, so that closing the view
            // service holds back the next order's view events.
            let deadline = Instant::now() + DEADLINE;
            while app.rt.store.order.active_count() > 0 || app.rt.views.active() > 0 {
                assert!(Instant::now() < deadline, "orders never left the index");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            app.rt.views.close();
            let o = post_order(app, json!(a), json!("1.00")).await;
            mine.push(settled_order(&app.client, o["orderId"].as_str().unwrap()).await);
            let (_, history) = get(app, &format!("/customers/{a}/orderhistory")).await;
            assert_eq!(
                history["orders"].as_array().map(Vec::len),
                Some(2),
                "the view must not know the last order yet: {history}"
            );

            let (s, list) = get(app, &format!("/orders?customerId={a}")).await;
            assert_eq!(s, StatusCode::OK, "{list}");
            assert_eq!(
                list["orders"],
                json!(mine),
                "all of A's orders, in id order"
            );
            assert!(list.get("next").is_none(), "{list}");

            // Paged: two, then the rest after the cursor.
            let (_, first) = get(app, &format!("/orders?customerId={a}&limit=2")).await;
            assert_eq!(first["orders"], json!(mine[..2]), "{first}");
            let next = first["next"].as_str().expect("next cursor");
            let (_, rest) = get(app, &format!("/orders?customerId={a}&limit=2&after={next}")).await;
            assert_eq!(rest["orders"], json!(mine[2..]), "{rest}");
            assert!(rest.get("next").is_none(), "{rest}");

            let (_, approved) = get(app, &format!("/orders?customerId={b}&state=APPROVED")).await;
            assert_eq!(
                approved["orders"].as_array().map(Vec::len),
                Some(1),
                "{approved}"
            );
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_are_paged_with_next_cursors() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let mut created = BTreeSet::new();
            for i in 0..7 {
                created.insert(create_customer(app, &format!("c{i}"), "1.00").await);
            }
            let mut sizes = Vec::new();
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let path = match &after {
                    Some(a) => format!("/customers?limit=3&after={a}"),
                    None => "/customers?limit=3".to_owned(),
                };
                let (s, page) = get(app, &path).await;
                assert_eq!(s, StatusCode::OK, "{page}");
                let items = page["customers"].as_array().expect("customers");
                sizes.push(items.len());
                for c in items {
                    assert!(
                        c["name"].is_string() && c["availableCredit"]["amount"].is_string(),
                        "{c}"
                    );
                    seen.push(c["customerId"].as_str().expect("customerId").to_owned());
                }
                match page.get("next") {
                    None => break,
                    Some(n) => {
                        assert!(sizes.len() < 10, "paging does not end");
                        after = Some(n.as_str().expect("next is a string").to_owned());
                    }
                }
            }
            assert_eq!(sizes, [3, 3, 1]);
            let unique: HashSet<&String> = seen.iter().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "a customer was listed twice: {seen:?}"
            );
            assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), created);
            let mut sorted = seen.clone();
            sorted.sort();
            assert_eq!(seen, sorted, "customers are not listed in id order");

            // Exactly one page: no `next`.
            let (_, page) = get(app, "/customers?limit=7").await;
            assert_eq!(page["customers"].as_array().map(Vec::len), Some(7));
            assert!(page.get("next").is_none(), "{page}");
        })
    })
    .await;
}

// ------------------------------------------- health, openapi, metrics

/// Every (method, path template) the router serves, read from the `match`
/// in `dispatch` (src/http/mod.rs): each arm `[segments] if get|post => ...`.
fn served_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/http/mod.rs");
    let body = &src[src
        .find("async fn dispatch")
        .expect("dispatch in src/http/mod.rs")..];
    let mut out = BTreeSet::new();
    for line in body.lines() {
        let line = line.trim();
        let method = if line.contains("] if get =>") {
            "get"
        } else if line.contains("] if post =>") {
            "post"
        } else {
            continue;
        };
        let pattern = &line[line.find('[').unwrap() + 1..line.find(']').unwrap()];
        let path: String = pattern
            .split(',')
            .map(|seg| {
                let seg = seg.trim();
                match seg.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Some(lit) => format!("/{lit}"),
                    None => "/{}".to_owned(),
                }
            })
            .collect();
        out.insert((method.to_owned(), path));
    }
    out
}

/// `/orders/{orderId}` -> `/orders/{}`.
fn template(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_openapi_and_metrics() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let (s, v) = get(app, "/health/live").await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let (s, v) = get(app, "/health/ready").await;
            assert_eq!(s, StatusCode::OK, "{v}");

            let (s, h, doc) = send(app, Method::GET, "/openapi.json", None, &[]).await;
            assert_eq!(s, StatusCode::OK);
            assert!(
                h.get(CONTENT_TYPE)
                    .and_then(|c| c.to_str().ok())
                    .is_some_and(|c| c.starts_with("application/json")),
                "{h:?}"
            );
            assert!(
                doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
                "openapi version: {}",
                doc["openapi"]
            );
            let paths = doc["paths"].as_object().expect("paths");
            let documented: BTreeSet<(String, String)> = paths
                .iter()
                .flat_map(|(p, ops)| {
                    ops.as_object()
                        .into_iter()
                        .flat_map(|o| o.keys())
                        .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
                        .map(|m| (m.clone(), template(p)))
                        .collect::<Vec<_>>()
                })
                .collect();
            let served = served_routes();
            // The parse found the router's arms (the original fourteen at least).
            for r in [
                ("get", "/health/live"),
                ("get", "/health/ready"),
                ("post", "/customers"),
                ("get", "/customers"),
                ("get", "/customers/{}"),
                ("post", "/orders"),
                ("get", "/orders"),
                ("get", "/orders/{}"),
                ("get", "/orders/{}/history"),
                ("post", "/orders/{}/cancel"),
                ("get", "/sagas/{}"),
                ("post", "/sagas/{}/retry"),
                ("get", "/metrics"),
                ("get", "/openapi.json"),
            ] {
                assert!(
                    served.contains(&(r.0.to_owned(), r.1.to_owned())),
                    "route {r:?} not found in dispatch: {served:?}"
                );
            }
            let missing: Vec<_> = served.difference(&documented).collect();
            assert!(
                missing.is_empty(),
                "routes served but not in openapi.json: {missing:?}"
            );
            let extra: Vec<_> = documented.difference(&served).collect();
            assert!(
                extra.is_empty(),
                "openapi.json documents routes not served: {extra:?}"
            );

            // What the parse found really is served: no unknown route, no wrong method.
            for (m, p) in &served {
                let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap();
                let path = p.replace("{}", "0000nothing");
                let (s, _, v) = send(app, method, &path, Some(json!({})), &[]).await;
                assert!(
                    s != StatusCode::METHOD_NOT_ALLOWED && v["error"]["code"] != "ROUTE_NOT_FOUND",
                    "{m} {p} is not served: {s} {v}"
                );
            }

            // Metrics after a saga ended.
            let cid = create_customer(app, "Metered", "10.00").await;
            let o = post_order(app, json!(cid), json!("1.00")).await;
            ended_saga(&app.client, o["sagaId"].as_str().unwrap()).await;
            let resp = app
                .client
                .http
                .get(url(app, "/metrics"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert!(resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.starts_with("text/plain")));
            let text = resp.text().await.unwrap();
            assert!(
                text.contains("durasaga_saga_outcomes_total"),
                "no saga outcomes in /metrics:\n{text}"
            );
            // No restart with sagas in flight: recovery holds nothing.
            for gauge in [
                "durasaga_saga_timer_hold_seconds 0",
                "durasaga_saga_timer_held_sagas 0",
            ] {
                assert!(
                    text.lines().any(|l| l == gauge),
                    "no `{gauge}` in /metrics:\n{text}"
                );
            }
        })
    })
    .await;
}

/// The admin API of DESIGN.md §4: `GET /sagas` (to find stuck or failed
/// sagas), `GET /deadletters`, `POST /deadletters/{id}/redeliver`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_sagas_and_dead_letters() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let cid = create_customer(app, "Admin", "10.00").await;
            let ok = post_order(app, json!(cid), json!("1.00")).await;
            let no = post_order(app, json!(cid), json!("100.00")).await;
            let ok_saga = ok["sagaId"].as_str().unwrap().to_owned();
            let no_saga = no["sagaId"].as_str().unwrap().to_owned();
            ended_saga(&app.client, &ok_saga).await;
            ended_saga(&app.client, &no_saga).await;

            let (s, v) = get(app, "/sagas").await;
            assert_eq!(s, StatusCode::OK, "GET /sagas: {v}");
            let ids: BTreeSet<&str> = v["sagas"]
                .as_array()
                .expect("sagas")
                .iter()
                .filter_map(|s| s["sagaId"].as_str())
                .collect();
            assert_eq!(
                ids,
                BTreeSet::from([ok_saga.as_str(), no_saga.as_str()]),
                "{v}"
            );

            let (s, v) = get(app, "/sagas?state=APPROVED").await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let items = v["sagas"].as_array().expect("sagas");
            assert_eq!(items.len(), 1, "{v}");
            assert_eq!(items[0]["sagaId"], ok_saga.as_str(), "{v}");
            assert_eq!(items[0]["state"], "APPROVED", "{v}");

            // Paged one by one, every saga exactly once.
            let (_, p1) = get(app, "/sagas?limit=1").await;
            assert_eq!(p1["sagas"].as_array().map(Vec::len), Some(1), "{p1}");
            let next = p1["next"].as_str().expect("next on a full page");
            let (_, p2) = get(app, &format!("/sagas?limit=1&after={next}")).await;
            assert_eq!(p2["sagas"].as_array().map(Vec::len), Some(1), "{p2}");
            assert_ne!(p1["sagas"][0]["sagaId"], p2["sagas"][0]["sagaId"]);
            if let Some(n) = p2["next"].as_str() {
                let (_, p3) = get(app, &format!("/sagas?limit=1&after={n}")).await;
                assert_eq!(p3["sagas"].as_array().map(Vec::len), Some(0), "{p3}");
                assert!(p3.get("next").is_none(), "{p3}");
            }

            // Nothing is stuck: no sagas older than an hour, no paused ones.
            let (s, v) = get(app, "/sagas?olderThan=3600").await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(v["sagas"].as_array().map(Vec::len), Some(0), "{v}");
            let (_, v) = get(app, "/sagas?state=PAUSED").await;
            assert_eq!(v["sagas"].as_array().map(Vec::len), Some(0), "{v}");

            let (s, v) = get(app, "/deadletters").await;
            assert_eq!(s, StatusCode::OK, "GET /deadletters: {v}");
            assert_eq!(v["deadletters"].as_array().map(Vec::len), Some(0), "{v}");
            assert!(v.get("next").is_none(), "{v}");

            let unknown = format!("/deadletters/{:032x}/redeliver", 123);
            let (s, _, v) = send(app, Method::POST, &unknown, None, &[]).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "redeliver unknown: {v}");
            assert_error_shape("redeliver unknown", &v, Some("DEAD_LETTER_NOT_FOUND"));
        })
    })
    .await;
}

// ----------------------------------------------------------- CQRS view

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_history_view_follows_orders_and_customers() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let cid = create_customer(app, "Viewed", "20.00").await;
            let a = post_order(app, json!(cid), json!("5.00")).await;
            let b = post_order(app, json!(cid), json!("50.00")).await;
            let c = post_order(app, json!(cid), json!("6.00")).await;
            for o in [&a, &b, &c] {
                assert_ne!(o["orderState"], "PENDING", "{o}");
            }
            let (s, _, x) = send(
                app,
                Method::POST,
                &format!("/orders/{}/cancel", c["orderId"].as_str().unwrap()),
                None,
                &[("Prefer", "wait=10")],
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{x}");
            assert_eq!(x["orderState"], "CANCELLED", "{x}");

            // The view is updated from events, so it may lag: poll it.
            type Row = (String, String, String, String);
            let want: BTreeSet<Row> = [
                (&a, "APPROVED", "null"),
                (&b, "REJECTED", "\"INSUFFICIENT_CREDIT\""),
                (&c, "CANCELLED", "null"),
            ]
            .into_iter()
            .map(|(o, st, r)| {
                (
                    o["orderId"].as_str().unwrap().to_owned(),
                    st.to_owned(),
                    o["orderTotal"]["amount"].as_str().unwrap().to_owned(),
                    r.to_owned(),
                )
            })
            .collect();
            let path = format!("/customers/{cid}/orderhistory");
            let deadline = Instant::now() + DEADLINE;
            let view = loop {
                let (s, v) = get(app, &path).await;
                if s == StatusCode::OK {
                    let got: BTreeSet<Row> = v["orders"]
                        .as_array()
                        .expect("orders")
                        .iter()
                        .map(|o| {
                            (
                                o["orderId"].as_str().unwrap_or("?").to_owned(),
                                o["orderState"].as_str().unwrap_or("?").to_owned(),
                                o["orderTotal"]["amount"].as_str().unwrap_or("?").to_owned(),
                                o["rejectionReason"].to_string(),
                            )
                        })
                        .collect();
                    if got == want {
                        break v;
                    }
                }
                assert!(Instant::now() < deadline, "view never caught up: {s} {v}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert_eq!(view["customerId"], cid.as_str(), "{view}");
            assert_eq!(view["name"], "Viewed", "{view}");
            assert_eq!(view["creditLimit"]["amount"], "20.00", "{view}");

            let (s, v) = get(app, "/customers/0000unknown/orderhistory").await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
            assert_error_shape(
                "view of an unknown customer",
                &v,
                Some("CUSTOMER_NOT_FOUND"),
            );
        })
    })
    .await;
}

/// Polls `cond` every 2 ms until it holds; fails after `DEADLINE`.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until nothing is in flight and no flush is queued.
async fn until_idle(app: &TestApp) {
    let turns = app
        .rt
        .store
        .turns
        .clone()
        .expect("flushes take turns by default");
    // Orders and sagas leave the recovery index once everything they sent
    // is durably handled (by the customers and the view too).
    wait_until("the app to be idle", || {
        app.rt.store.order.active_count() == 0
            && app.rt.store.saga.active_count() == 0
            && turns.queued() == 0
    })
    .await;
}

/// An APPROVED order of a new customer, once the app is idle: its id and
/// how many events it has.
async fn approved_order_then_idle(app: &TestApp, customer: &str) -> (String, usize) {
    let cid = create_customer(app, customer, "20.00").await;
    let o = post_order(app, json!(cid), json!("5.00")).await;
    assert_eq!(o["orderState"], "APPROVED", "{o}");
    let oid = o["orderId"].as_str().unwrap().to_owned();
    let (_, h) = get(app, &format!("/orders/{oid}/history")).await;
    let events = h["events"].as_array().expect("events").len();
    until_idle(app).await;
    (oid, events)
}

/// A long-poll that knows how many events the order had at a durable commit
/// answers a record with that many events without the read barrier (under
/// load the barrier waits for another flush of the order database); a read
/// without that knowledge still waits for the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_knows_the_durable_state_answers_without_waiting_for_a_flush() {
    use durasaga::domain::OrderState;
    use durasaga::persistence::Lane;
    use std::sync::atomic::Ordering::SeqCst;
    with_app(json!({}), |app| {
        Box::pin(async move {
            let (oid, events) = approved_order_then_idle(app, "Known").await;

            // No flush can start while the turn is held (a blocking call, but
            // taken at once: the app is idle), and with a write in progress
            // every read barrier of the order database needs one.
            let turns = app.rt.store.turns.clone().unwrap();
            let held = turns.take(Lane::Saga);
            let write = app.rt.store.order.flusher.begin_write();

            let known = tokio::time::timeout(
                DEADLINE,
                app.rt
                    .wait_order(&oid, Duration::from_secs(5), Some(events), |v| {
                        v.order.state.is_settled()
                    }),
            )
            .await
            .expect("answered without waiting for a flush")
            .expect("wait_order")
            .expect("order exists");
            assert_eq!(known.order.state, OrderState::Approved);

            let stats = app.rt.store.order.flusher.stats();
            let requests = stats.requests.load(SeqCst);
            let unknown = tokio::spawn({
                let (rt, oid) = (app.rt.clone(), oid.clone());
                async move { rt.get_order(&oid).await }
            });
            wait_until("the read to ask for a flush", || {
                stats.requests.load(SeqCst) > requests
            })
            .await;
            assert!(
                !unknown.is_finished(),
                "answered before the flush it waits for"
            );
            write.finish();
            drop(held);
            let v = unknown
                .await
                .unwrap()
                .expect("get_order")
                .expect("order exists");
            assert_eq!(v.order.state, OrderState::Approved);
        })
    })
    .await;
}

/// The notifications carry the durable event count: a long-poll that read
/// the order once (without a barrier: it knew that state durable) reads the
/// state its notification announces without a barrier too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_reads_the_states_it_is_notified_of_without_a_barrier() {
    use durasaga::domain::OrderState;
    with_app(json!({}), |app| {
        Box::pin(async move {
            let (oid, events) = approved_order_then_idle(app, "Notified").await;

            let before = app.rt.known_durable_reads();
            let poll = tokio::spawn({
                let (rt, oid) = (app.rt.clone(), oid.clone());
                async move {
                    rt.wait_order(&oid, Duration::from_secs(20), Some(events), |v| {
                        v.order.state == OrderState::Cancelled
                    })
                    .await
                }
            });
            // Its first read, before the order changes, skipped the barrier.
            wait_until("the first read", || app.rt.known_durable_reads() > before).await;
            let (s, _, c) = send(
                app,
                Method::POST,
                &format!("/orders/{oid}/cancel"),
                None,
                &[],
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{c}");
            let v = poll
                .await
                .unwrap()
                .expect("wait_order")
                .expect("order exists");
            assert_eq!(v.order.state, OrderState::Cancelled);
            let reads = app.rt.known_durable_reads() - before;
            assert!(
                reads >= 2,
                "{reads} reads without a barrier: the notified one was not"
            );
        })
    })
    .await;
}

/// The reservation of an `Idempotency-Key` needs no flush of its own: the
/// command that creates the entity commits after it in the same database and
/// is answered only once durable (sled recovers a prefix of its log), so a
/// keyed create waits for one flush, like one without a key. A 422 for a key
/// bound to another request is answered only once the binding is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_waits_for_one_flush_and_its_replay_answers_the_same_entity() {
    use durasaga::persistence::Lane;
    use std::sync::atomic::Ordering::SeqCst;
    with_app(json!({}), |app| {
        Box::pin(async move {
            until_idle(app).await;
            let stats = app.rt.store.customer.flusher.stats();
            let before = stats.requests.load(SeqCst);
            let body = json!({"name": "Keyed", "creditLimit": {"amount": "10.00"}});
            let key = [("Idempotency-Key", "keyed-create-1")];
            let (s, _, c) = send(app, Method::POST, "/customers", Some(body.clone()), &key).await;
            assert_eq!(s, StatusCode::CREATED, "{c}");
            let flushes_waited = stats.requests.load(SeqCst) - before;
            assert_eq!(
                flushes_waited, 1,
                "a keyed create waits for the create's flush only"
            );
            let (s, _, again) = send(app, Method::POST, "/customers", Some(body), &key).await;
            assert_eq!(s, StatusCode::CREATED, "{again}");
            assert_eq!(
                again["customerId"], c["customerId"],
                "the replay answers the same customer"
            );

            // A mismatch waits for a flush: hold every flush back and keep a
            // write in progress, so that its read barrier needs one.
            until_idle(app).await;
            let turns = app.rt.store.turns.clone().unwrap();
            let held = turns.take(Lane::Saga);
            let write = app.rt.store.customer.flusher.begin_write();
            let requests = stats.requests.load(SeqCst);
            let other = json!({"name": "Other", "creditLimit": {"amount": "10.00"}});
            let mismatch = tokio::spawn({
                let (http, url) = (app.client.http.clone(), url(app, "/customers"));
                async move {
                    let r = http.post(url).json(&other).header(key[0].0, key[0].1);
                    r.send().await.expect("request").status()
                }
            });
            wait_until("the 422 to wait for a flush", || {
                stats.requests.load(SeqCst) > requests
            })
            .await;
            assert!(
                !mismatch.is_finished(),
                "422 answered before the binding was durable"
            );
            write.finish();
            drop(held);
            assert_eq!(mismatch.await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY);
        })
    })
    .await;
}

// --------------------------------------------------------------- cancel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_approved_order_releases_its_credit() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let cid = create_customer(app, "Canceller", "20.00").await;
            let o = post_order(app, json!(cid), json!("7.50")).await;
            assert_eq!(o["orderState"], "APPROVED", "{o}");
            let oid = o["orderId"].as_str().unwrap().to_owned();
            assert_eq!(available(&app.client, &cid).await, "12.50");

            let (s, _, c) = send(
                app,
                Method::POST,
                &format!("/orders/{oid}/cancel"),
                None,
                &[("Prefer", "wait=10")],
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{c}");
            assert_eq!(c["orderId"], oid.as_str());
            assert_eq!(c["orderState"], "CANCELLED", "{c}");
            assert_eq!(available(&app.client, &cid).await, "20.00");

            let (_, h) = get(app, &format!("/orders/{oid}/history")).await;
            let types: Vec<&str> = h["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["type"].as_str())
                .collect();
            assert_eq!(
                types,
                ["OrderCreated", "OrderApproved", "OrderCancelled"],
                "{h}"
            );

            // Cancelling again changes nothing.
            let (s, _, again) = send(
                app,
                Method::POST,
                &format!("/orders/{oid}/cancel"),
                None,
                &[],
            )
            .await;
            assert!(
                s == StatusCode::OK || s == StatusCode::CONFLICT,
                "second cancel: {s} {again}"
            );
            assert_eq!(available(&app.client, &cid).await, "20.00");

            // A REJECTED order cannot be cancelled.
            let r = post_order(app, json!(cid), json!("999.00")).await;
            assert_eq!(r["orderState"], "REJECTED", "{r}");
            let rid = r["orderId"].as_str().unwrap();
            let (s, _, v) = send(
                app,
                Method::POST,
                &format!("/orders/{rid}/cancel"),
                None,
                &[],
            )
            .await;
            assert_eq!(s, StatusCode::CONFLICT, "{v}");
            assert_error_shape("cancel REJECTED", &v, None);
            let after = app.client.get_order(rid, 0).await.unwrap().unwrap();
            assert_eq!(after["orderState"], "REJECTED");
            assert_eq!(available(&app.client, &cid).await, "20.00");
        })
    })
    .await;
}

// ------------------------------------------------------------- API keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_everything_but_health() {
    with_app(json!({"http": {"api_keys": ["s3cret"]}}), |app| {
        Box::pin(async move {
            let body = json!({"name": "Keyed", "creditLimit": {"amount": "1.00"}});

            let (s, h, v) = send(app, Method::POST, "/customers", Some(body.clone()), &[]).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
            assert_error_shape("no key", &v, Some("UNAUTHORIZED"));
            assert!(h.get("www-authenticate").is_some(), "{h:?}");

            for wrong in [
                "Bearer nope",
                "Bearer s3cre",
                "Bearer s3cret2",
                "Basic czNjcmV0",
                "s3cret",
            ] {
                let (s, _, v) = send(
                    app,
                    Method::POST,
                    "/customers",
                    Some(body.clone()),
                    &[(AUTHORIZATION.as_str(), wrong)],
                )
                .await;
                assert_eq!(s, StatusCode::UNAUTHORIZED, "Authorization: {wrong}: {v}");
            }
            let (s, v) = get(app, "/customers").await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
            let (s, v) = get(app, "/openapi.json").await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

            let (s, _, v) = send(
                app,
                Method::POST,
                "/customers",
                Some(body),
                &[("Authorization", "Bearer s3cret")],
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");

            // Nothing was created by the refused requests.
            let (s, _, list) = send(
                app,
                Method::GET,
                "/customers",
                None,
                &[("Authorization", "Bearer s3cret")],
            )
            .await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(
                list["customers"].as_array().map(Vec::len),
                Some(1),
                "{list}"
            );

            let (s, v) = get(app, "/health/live").await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let (s, v) = get(app, "/health/ready").await;
            assert_eq!(s, StatusCode::OK, "{v}");
        })
    })
    .await;
}

// ---------------------------------------------------------- idempotency

/// DESIGN.md §4: the same `Idempotency-Key` with the same body returns the
/// same order; with another body, 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_same_order() {
    with_app(json!({}), |app| {
        Box::pin(async move {
            let cid = create_customer(app, "Idem", "100.00").await;
            let body = json!({"customerId": cid, "orderTotal": {"amount": "10.00"}});
            let key = [("Idempotency-Key", "k-1"), ("Prefer", "wait=10")];
            let (s1, _, a) = send(app, Method::POST, "/orders", Some(body.clone()), &key).await;
            assert_eq!(s1, StatusCode::CREATED, "{a}");
            let (s2, _, b) = send(app, Method::POST, "/orders", Some(body), &key).await;
            assert!(s2.is_success(), "{s2} {b}");
            assert_eq!(
                a["orderId"], b["orderId"],
                "same key, same body: another order"
            );
            let other = json!({"customerId": cid, "orderTotal": {"amount": "11.00"}});
            let (s3, _, c) = send(app, Method::POST, "/orders", Some(other), &key).await;
            assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY, "{c}");
            assert_error_shape("key reused", &c, None);
            let (_, orders) = get(app, "/orders").await;
            assert_eq!(
                orders["orders"].as_array().map(Vec::len),
                Some(1),
                "{orders}"
            );
            assert_eq!(available(&app.client, &cid).await, "90.00");
        })
    })
    .await;
}

// ------------------------------------------------------- two runtimes

/// Two apps live in one process, as `tests/common::spawn_app` promises to
/// tests that run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_can_run_in_one_process() {
    with_app(json!({}), |a| {
        Box::pin(async move {
            let b = spawn_app_with(json!({})).await;
            let ca = create_customer(a, "A", "1.00").await;
            let cb = create_customer(&b, "B", "2.00").await;
            assert_eq!(available(&a.client, &ca).await, "1.00");
            assert_eq!(available(&b.client, &cb).await, "2.00");
            let (s, _) = get(a, &format!("/customers/{cb}")).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "the apps share data");
            b.stop().await;
        })
    })
    .await;
}
