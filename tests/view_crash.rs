//! The order-history view and the CancelOrder saga across a SIGKILL, against
//! a real `durasaga serve` child process:
//!
//! 1. a burst of orders (`Prefer: wait=5`) and, concurrently, cancels of
//!    about half of the approved ones, while new orders keep coming;
//! 2. SIGKILL mid-burst, restart on the same data directory;
//! 3. every order ends, every cancel saga ends (an acknowledged cancel ends
//!    CANCELLED), credit adds up, every list endpoint pages (limit 7) over
//!    every item exactly once, and the view catches up with the orders;
//! 4. SIGTERM, `durasaga check` (0 violations), `durasaga rebuild-view`,
//!    `check` again (0 violations), restart: the rebuilt views are served
//!    exactly as the projected ones were.
//!
//! Every wait is for a condition (a long-poll or a polling loop with a
//! deadline).

use durasaga::harness::{cents, credit_violations, ChildServer, Client};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CUSTOMERS: usize = 16;
/// Credit limit of every customer.
const LIMIT: &str = "30.00";
/// Most orders the burst may fire; the kill comes well before.
const MAX_ORDERS: usize = 1_000;
const CONCURRENCY: usize = 32;
/// SIGKILL once this many POST /orders were answered ...
const KILL_AFTER_ORDERS: usize = 200;
/// ... and this many cancels were acknowledged.
const KILL_AFTER_CANCELS: usize = 25;
/// How long anything may take to settle after the restart.
const DEADLINE: Duration = Duration::from_secs(120);
const PARALLELISM: usize = 32;

/// The order total of request `n`: 1.00–10.00.
fn amount(n: usize) -> String {
    let c = 100 + (n * 7919) % 901;
    format!("{}.{:02}", c / 100, c % 100)
}

/// Whether the approved order of request `n` is cancelled: a fixed
/// pseudo-random half.
fn cancels(n: usize) -> bool {
    (n.wrapping_mul(0x9E37_79B9) >> 11) & 1 == 0
}

fn unix_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("time in range")
}

fn parse_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"));
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("time in range")
}

fn start_child(exe: &Path, dir: &Path) -> ChildServer {
    tokio::task::block_in_place(|| ChildServer::start(exe, dir, &[]))
        .expect("durasaga serve starts on the data dir")
}

async fn ready(server: &ChildServer) -> Client {
    let client = Client::new(&server.url);
    client
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("the child becomes ready");
    client
}

/// SIGTERMs the child and waits for a clean exit.
fn terminate(server: &mut ChildServer) {
    tokio::task::block_in_place(|| {
        server.signal("TERM").expect("SIGTERM the child");
        let st = server
            .wait(Duration::from_secs(60))
            .expect("the child exits after SIGTERM");
        assert!(
            st.success(),
            "durasaga serve exited badly on SIGTERM: {st:?}"
        );
    });
}

/// Runs `durasaga <args> --data-dir DIR`; returns (success, stdout).
fn run_tool(exe: &Path, cmd: &str, dir: &Path) -> (bool, String, String) {
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(exe)
            .arg(cmd)
            .arg("--data-dir")
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run durasaga {cmd}: {e}"))
    });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_check_clean(exe: &Path, dir: &Path, when: &str) {
    let (ok, stdout, stderr) = run_tool(exe, "check", dir);
    assert!(
        ok && stdout.contains("0 violations"),
        "durasaga check {when}: success={ok}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// What one request of the burst came to, as far as its client knows.
enum Outcome {
    /// POST /orders answered 201.
    Order { id: String, state: String },
    /// POST /orders/{id}/cancel answered 200: the cancel must finish.
    CancelAcked { id: String },
    /// A cancel answered something else than 200 while the child was up.
    CancelRefused { id: String, answer: String },
    /// Sent, but the answer was lost (the kill): it may or may not exist.
    Unknown,
    /// Never reached the server.
    NotSent,
    /// An answer that is wrong in itself.
    Bad(String),
}

fn lost(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        Outcome::NotSent
    } else {
        Outcome::Unknown
    }
}

async fn post_order(client: &Client, n: usize, customer: &str) -> Outcome {
    let total = amount(n);
    let r = client
        .http
        .post(format!("{}/orders", client.url))
        .header("Prefer", "wait=5")
        .json(&json!({"customerId": customer, "orderTotal": {"amount": total}}))
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return lost(&e),
    };
    let status = r.status().as_u16();
    match r.json::<Value>().await {
        Ok(v) if status == 201 => match (v["orderId"].as_str(), v["orderState"].as_str()) {
            (Some(id), Some(state))
                if v["customerId"] == customer && v["orderTotal"]["amount"] == total.as_str() =>
            {
                Outcome::Order {
                    id: id.to_owned(),
                    state: state.to_owned(),
                }
            }
            _ => Outcome::Bad(format!("asked {customer} {total}, got {v}")),
        },
        Ok(v) => Outcome::Bad(format!("POST /orders answered {status}: {v}")),
        Err(_) => Outcome::Unknown,
    }
}

async fn post_cancel(client: &Client, id: &str) -> Outcome {
    let r = client
        .http
        .post(format!("{}/orders/{id}/cancel", client.url))
        .header("Prefer", "wait=5")
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return lost(&e),
    };
    let status = r.status().as_u16();
    match r.text().await {
        Ok(_) if status == 200 => Outcome::CancelAcked { id: id.to_owned() },
        Ok(body) => Outcome::CancelRefused {
            id: id.to_owned(),
            answer: format!("{status} {body}"),
        },
        Err(_) => Outcome::Unknown,
    }
}

/// What the burst left behind.
#[derive(Default)]
struct Burst {
    /// Orders answered 201, with the state in the answer.
    orders: HashMap<String, String>,
    /// Cancels answered 200.
    cancels_acked: HashSet<String>,
    /// Cancels sent whose answer was lost: they may or may not have started.
    cancels_sent: HashSet<String>,
    unknown: usize,
    not_sent: usize,
    /// When the child was killed (Unix milliseconds).
    killed_at_ms: i64,
    problems: Vec<String>,
}

/// Fires orders and cancels from `CONCURRENCY` tasks and SIGKILLs the child
/// once enough of both have been answered.
async fn burst_and_kill(server: &mut ChildServer, client: &Client, customers: &[String]) -> Burst {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let customers = Arc::new(customers.to_vec());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Option<String>, Outcome)>();
    for _ in 0..CONCURRENCY {
        let (client, customers, next, stop, tx) = (
            client.clone(),
            customers.clone(),
            next.clone(),
            stop.clone(),
            tx.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(SeqCst) {
                let n = next.fetch_add(1, SeqCst);
                if n >= MAX_ORDERS {
                    break;
                }
                let customer = &customers[n % customers.len()];
                let outcome = post_order(&client, n, customer).await;
                let approved = match &outcome {
                    Outcome::Order { id, state } if state == "APPROVED" => Some(id.clone()),
                    _ => None,
                };
                if tx.send((None, outcome)).is_err() {
                    break;
                }
                if let Some(id) = approved.filter(|_| cancels(n) && !stop.load(SeqCst)) {
                    let outcome = post_cancel(&client, &id).await;
                    if tx.send((Some(id), outcome)).is_err() {
                        break;
                    }
                }
            }
        });
    }
    drop(tx);

    let mut b = Burst::default();
    let mut answered = 0;
    let mut killed = false;
    while let Some((cancel_of, outcome)) = rx.recv().await {
        // Kill right after a cancel is acknowledged: its saga has just
        // started, so the kill very likely interrupts it.
        let cancel_just_acked = matches!(outcome, Outcome::CancelAcked { .. });
        match outcome {
            Outcome::Order { id, state } => {
                answered += 1;
                if b.orders.insert(id.clone(), state).is_some() {
                    b.problems.push(format!("two POST /orders answered {id}"));
                }
            }
            Outcome::CancelAcked { id } => {
                b.cancels_acked.insert(id);
            }
            Outcome::CancelRefused { id, answer } if !killed => b
                .problems
                .push(format!("cancel of APPROVED order {id} answered {answer}")),
            Outcome::CancelRefused { id, .. } => {
                b.cancels_sent.insert(id);
            }
            Outcome::Bad(e) => b.problems.push(e),
            Outcome::Unknown | Outcome::NotSent if !killed => b
                .problems
                .push("a request failed while the child was up".into()),
            Outcome::Unknown => {
                b.unknown += 1;
                if let Some(id) = cancel_of {
                    b.cancels_sent.insert(id);
                }
            }
            Outcome::NotSent => b.not_sent += 1,
        }
        if !killed
            && cancel_just_acked
            && answered >= KILL_AFTER_ORDERS
            && b.cancels_acked.len() >= KILL_AFTER_CANCELS
        {
            stop.store(true, SeqCst);
            tokio::task::block_in_place(|| server.kill()).expect("SIGKILL the child");
            b.killed_at_ms = unix_ms();
            killed = true;
        }
    }
    assert!(
        killed,
        "the burst ended before the kill: {answered} orders answered, {} cancels acknowledged",
        b.cancels_acked.len()
    );
    b
}

/// Runs `f` over `items` with bounded parallelism.
async fn par_map<T, R, F, Fut>(items: Vec<T>, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    stream::iter(items)
        .map(f)
        .buffer_unordered(PARALLELISM)
        .collect()
        .await
}

async fn get_json(client: &Client, path: &str) -> (u16, Value) {
    let r = client
        .http
        .get(format!("{}{path}", client.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Long-polls an order until it is no longer PENDING.
async fn settled(client: &Client, id: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let o = client
            .get_order(id, 30)
            .await
            .unwrap_or_else(|e| panic!("GET /orders/{id}: {e:#}"))
            .unwrap_or_else(|| panic!("order {id} is gone"));
        if o["orderState"] != "PENDING" {
            return o;
        }
        assert!(Instant::now() < deadline, "order {id} stays PENDING: {o}");
    }
}

fn saga_is_active(state: &str) -> bool {
    !matches!(
        state,
        "APPROVED" | "REJECTED" | "CANCELLED" | "FAILED" | "PAUSED"
    )
}

/// Polls `GET /sagas/{id}` until the saga is no longer active; `None` if it
/// does not exist.
async fn ended_saga(client: &Client, id: &str) -> Option<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (s, v) = get_json(client, &format!("/sagas/{id}")).await;
        match s {
            404 => return None,
            200 if !saga_is_active(v["state"].as_str().unwrap_or("?")) => return Some(v),
            200 => {}
            _ => panic!("GET /sagas/{id} answered {s}: {v}"),
        }
        assert!(Instant::now() < deadline, "saga {id} never ends: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pages through `path` with `limit`, following `next`; checks each page and
/// that every item appears once. Returns the ids in page order.
async fn page_through(
    client: &Client,
    path: &str,
    items: &str,
    id_field: &str,
    limit: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let mut after: Option<String> = None;
    for pages in 0.. {
        assert!(pages < 100_000, "{path}: paging does not end");
        let mut url = format!("{path}?limit={limit}");
        if let Some(a) = &after {
            url.push('&');
            url.push_str(&serde_urlencoded::to_string([("after", a)]).expect("query"));
        }
        let (s, v) = get_json(client, &url).await;
        assert_eq!(s, 200, "GET {url}: {v}");
        let page = v[items]
            .as_array()
            .unwrap_or_else(|| panic!("GET {url}: no {items} in {v}"));
        assert!(page.len() <= limit, "GET {url}: page too long");
        for item in page {
            let id = item[id_field]
                .as_str()
                .unwrap_or_else(|| panic!("no {id_field} in {item}"))
                .to_owned();
            assert!(seen.insert(id.clone()), "{path}: {id} on two pages");
            ids.push(id);
        }
        match v.get("next") {
            None => break,
            Some(Value::String(n)) => {
                assert_eq!(page.len(), limit, "GET {url}: `next` after a short page");
                after = Some(n.clone());
            }
            Some(other) => panic!("GET {url}: `next` is {other}"),
        }
    }
    ids
}

/// The order-history view of every customer, once it shows exactly the
/// orders of `orders` (polled: the view is eventually consistent).
async fn caught_up_views(
    client: &Client,
    customers: &[String],
    orders: &[Value],
) -> BTreeMap<String, Value> {
    let mut want: BTreeMap<&str, BTreeMap<String, Value>> = customers
        .iter()
        .map(|c| (c.as_str(), BTreeMap::new()))
        .collect();
    for o in orders {
        let id = o["orderId"].as_str().expect("orderId").to_owned();
        if let Some(m) = want.get_mut(o["customerId"].as_str().unwrap_or("")) {
            m.insert(
                id.clone(),
                json!({
                    "orderId": id,
                    "orderState": o["orderState"],
                    "orderTotal": o["orderTotal"],
                    "rejectionReason": o["rejectionReason"],
                }),
            );
        }
    }
    let mut views = BTreeMap::new();
    for c in customers {
        let expected: Vec<Value> = want[c.as_str()].values().cloned().collect();
        let deadline = Instant::now() + DEADLINE;
        let view = loop {
            let (s, v) = get_json(client, &format!("/customers/{c}/orderhistory")).await;
            assert_eq!(s, 200, "view of {c}: {v}");
            let mut got: Vec<Value> = v["orders"].as_array().cloned().unwrap_or_default();
            got.sort_by(|a, b| a["orderId"].as_str().cmp(&b["orderId"].as_str()));
            if got == expected {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "the view of {c} never caught up:\n got {got:?}\nwant {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(view["customerId"], c.as_str(), "{view}");
        assert_eq!(view["creditLimit"]["amount"], LIMIT, "{view}");
        views.insert(c.clone(), view);
    }
    views
}

/// The views as served now, without waiting.
async fn served_views(client: &Client, customers: &[String]) -> BTreeMap<String, Value> {
    let mut views = BTreeMap::new();
    for c in customers {
        let (s, v) = get_json(client, &format!("/customers/{c}/orderhistory")).await;
        assert_eq!(s, 200, "view of {c} after the rebuild: {v}");
        views.insert(c.clone(), v);
    }
    views
}

/// The `durasaga_inbox_depth` gauges of `/metrics`, by service.
async fn inbox_depths(client: &Client) -> BTreeMap<String, f64> {
    let text = client
        .http
        .get(format!("{}/metrics", client.url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}"));
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "durasaga_inbox_depth")
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("durasaga_inbox_depth is not a gauge: {other:?}"),
            };
            (s.labels.get("service").unwrap_or("?").to_owned(), v)
        })
        .collect()
}

/// Every order and saga of the (restarted) child, once all have ended.
async fn settle_everything(client: &Client) -> Vec<(String, Value, Option<Value>, Option<Value>)> {
    let listed = client.list_all("/orders", "orders").await.expect("orders");
    let ids: Vec<String> = listed
        .iter()
        .filter_map(|o| o["orderId"].as_str().map(str::to_owned))
        .collect();
    par_map(ids, |id| {
        let client = client.clone();
        async move {
            let order = settled(&client, &id).await;
            let create = ended_saga(&client, &id).await;
            let cancel = ended_saga(&client, &format!("{id}:cancel")).await;
            // Re-read: the cancel saga may have moved the order meanwhile.
            let order = if cancel.is_some() {
                settled(&client, &id).await
            } else {
                order
            };
            (id, order, create, cancel)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_cancels_survive_kill9_and_rebuild_equal() {
    let started = Instant::now();
    let exe = Path::new(env!("CARGO_BIN_EXE_durasaga"));
    let dir = tempfile::tempdir().expect("temp dir");

    // ------------------------------------------------------ burst + kill
    let mut server = start_child(exe, dir.path());
    let client = ready(&server).await;
    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        customers.push(
            client
                .create_customer(&format!("view crash {i}"), LIMIT)
                .await
                .expect("create customer"),
        );
    }
    let burst = burst_and_kill(&mut server, &client, &customers).await;
    assert!(
        burst.problems.is_empty(),
        "wrong answers while the child was up: {:#?}",
        burst.problems
    );
    println!(
        "view_crash: SIGKILL after {} orders and {} cancels acknowledged \
         ({} cancels in flight, {} answers lost, {} not sent) in {:?}",
        burst.orders.len(),
        burst.cancels_acked.len(),
        burst.cancels_sent.len(),
        burst.unknown,
        burst.not_sent,
        started.elapsed()
    );

    // ----------------------------------------------------------- recovery
    let mut server = start_child(exe, dir.path());
    let client = ready(&server).await;
    let listed = client.list_all("/orders", "orders").await.expect("orders");
    let listed_ids: HashSet<&str> = listed
        .iter()
        .filter_map(|o| o["orderId"].as_str())
        .collect();
    for id in burst.orders.keys() {
        assert!(
            listed_ids.contains(id.as_str()),
            "acknowledged order {id} was lost"
        );
    }
    assert!(
        listed.len() <= burst.orders.len() + burst.unknown,
        "{} orders stored, but only {} acknowledged and {} unknown",
        listed.len(),
        burst.orders.len(),
        burst.unknown
    );

    // Every order ends; every cancel saga ends, CANCELLED.
    let results = settle_everything(&client).await;
    let mut problems = Vec::new();
    let mut cancelled = 0;
    // Cancel sagas started before the kill and ended after it, and cancels
    // asked for before the kill whose saga the restart started (from the
    // order's outbox).
    let mut interrupted = 0;
    let mut resumed = 0;
    for (id, order, create, cancel) in &results {
        let state = order["orderState"].as_str().unwrap_or("?");
        match create {
            None => problems.push(format!("order {id} has no CreateOrder saga")),
            Some(s) => {
                let want = if state == "CANCELLED" {
                    "APPROVED"
                } else {
                    state
                };
                if s["state"] != want {
                    problems.push(format!("order {id} is {state}, its saga {}", s["state"]));
                }
            }
        }
        match cancel {
            Some(s) => {
                cancelled += 1;
                let (from, to) = (parse_ms(&s["startedAt"]), parse_ms(&s["updatedAt"]));
                if from <= burst.killed_at_ms && to > burst.killed_at_ms {
                    interrupted += 1;
                }
                if from > burst.killed_at_ms
                    && (burst.cancels_acked.contains(id) || burst.cancels_sent.contains(id))
                {
                    resumed += 1;
                }
                if s["state"] != "CANCELLED" || state != "CANCELLED" {
                    problems.push(format!(
                        "cancel saga of {id} ended {} with the order {state}",
                        s["state"]
                    ));
                }
            }
            None if burst.cancels_acked.contains(id) => {
                problems.push(format!("acknowledged cancel of {id} has no saga"))
            }
            None if state == "CANCELLED" => {
                problems.push(format!("order {id} CANCELLED without a cancel saga"))
            }
            None => {}
        }
        if burst.cancels_acked.contains(id) && state != "CANCELLED" {
            problems.push(format!("acknowledged cancel of {id} left it {state}"));
        }
        if !burst.cancels_acked.contains(id)
            && !burst.cancels_sent.contains(id)
            && state == "CANCELLED"
        {
            problems.push(format!("order {id} CANCELLED though nobody asked"));
        }
    }
    assert!(problems.is_empty(), "after recovery: {problems:#?}");
    assert!(
        cancelled >= burst.cancels_acked.len() && cancelled > 0,
        "{cancelled} cancel sagas"
    );
    assert!(
        interrupted + resumed > 0,
        "no cancel was in flight at the kill: the test did not exercise recovery"
    );
    let bad = credit_violations(&client, &customers)
        .await
        .expect("credit check");
    assert!(bad.is_empty(), "credit does not add up: {bad:#?}");

    let orders = client.list_all("/orders", "orders").await.expect("orders");
    let sagas = client.list_all("/sagas", "sagas").await.expect("sagas");
    assert!(
        sagas
            .iter()
            .all(|s| !saga_is_active(s["state"].as_str().unwrap_or("?"))),
        "active sagas left"
    );
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &orders {
        *by_state
            .entry(o["orderState"].as_str().unwrap_or("?"))
            .or_default() += 1;
        cents(&o["orderTotal"]).expect("orderTotal");
    }
    assert!(by_state.contains_key("APPROVED"), "{by_state:?}");
    assert!(by_state.contains_key("REJECTED"), "{by_state:?}");
    assert!(by_state.contains_key("CANCELLED"), "{by_state:?}");

    // Every list endpoint, paged by 7, visits every item exactly once.
    for (path, items, id_field) in [
        ("/customers", "customers", "customerId"),
        ("/orders", "orders", "orderId"),
        ("/sagas", "sagas", "sagaId"),
        ("/deadletters", "deadletters", "id"),
    ] {
        let paged = page_through(&client, path, items, id_field, 7).await;
        let all: Vec<String> = client
            .list_all(path, items)
            .await
            .expect("list")
            .iter()
            .map(|i| i[id_field].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(paged, all, "{path} paged by 7");
    }
    assert_eq!(
        page_through(&client, "/customers", "customers", "customerId", 7)
            .await
            .len(),
        CUSTOMERS
    );

    // The view catches up with the orders; remember what it serves.
    let before = caught_up_views(&client, &customers, &orders).await;
    terminate(&mut server);

    // ----------------------------------------------- check, rebuild, check
    assert_check_clean(exe, dir.path(), "after the crash and recovery");
    let (ok, stdout, stderr) = run_tool(exe, "rebuild-view", dir.path());
    assert!(
        ok,
        "durasaga rebuild-view failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_check_clean(exe, dir.path(), "after rebuild-view");

    let mut server = start_child(exe, dir.path());
    let client = ready(&server).await;
    let after = served_views(&client, &customers).await;
    assert_eq!(
        before, after,
        "the rebuilt views differ from the projected ones"
    );
    let orders_after = client.list_all("/orders", "orders").await.expect("orders");
    assert_eq!(
        orders, orders_after,
        "the orders changed across the rebuild"
    );
    terminate(&mut server);
    assert_check_clean(exe, dir.path(), "after the last restart");
    println!(
        "view_crash: {} orders {by_state:?}, {cancelled} cancel sagas \
         ({interrupted} interrupted by the kill, {resumed} started by the restart), {} sagas; total {:?}",
        orders.len(),
        sagas.len(),
        started.elapsed()
    );
}

/// DESIGN.md §4 promises a mailbox-depth metric: once every saga has ended
/// after a kill -9 and restart, no inbox holds anything, so every
/// `durasaga_inbox_depth` gauge must come back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_depth_gauges_drain_after_kill9_recovery() {
    let exe = Path::new(env!("CARGO_BIN_EXE_durasaga"));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start_child(exe, dir.path());
    let client = ready(&server).await;
    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        customers.push(
            client
                .create_customer(&format!("depth {i}"), LIMIT)
                .await
                .expect("create customer"),
        );
    }
    let burst = burst_and_kill(&mut server, &client, &customers).await;
    assert!(burst.problems.is_empty(), "{:#?}", burst.problems);

    let mut server = start_child(exe, dir.path());
    let client = ready(&server).await;
    let results = settle_everything(&client).await;
    assert!(!results.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let depths = inbox_depths(&client).await;
        if depths.values().all(|d| *d == 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every saga ended, but the inbox depth gauges stay at {depths:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    terminate(&mut server);
    assert_check_clean(exe, dir.path(), "after the restart");
}
