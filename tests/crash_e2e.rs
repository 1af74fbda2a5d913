//! Crash-recovery end to end: a real `durasaga serve` child process is
//! SIGKILLed several times while hundreds of CreateOrder sagas are in flight,
//! restarted on the same data directory each time, and after the last kill
//! the whole system is checked over HTTP:
//!
//! - every order a client was told about (201 answered) still exists, with
//!   the customer and total the client asked for (nothing acknowledged lost);
//! - no order appears twice, and every stored order was either acknowledged
//!   or comes from a request whose answer was lost in a crash;
//! - every order reaches a terminal state (waited for with long-polls), and
//!   its CreateOrder saga (`GET /sagas/{orderId}`) ended in the same state;
//! - for every customer `creditLimit - availableCredit == Σ APPROVED totals`
//!   and `availableCredit >= 0` (credit neither leaked nor double-reserved);
//! - the child really died of SIGKILL each time (never a clean exit).
//!
//! How many sagas were in flight at each kill is measured afterwards from
//! the stored timestamps: an order created before the child died whose last
//! update is later than the death was settled by a later incarnation.

use durasaga::harness::{cents, credit_violations, ChildServer, Client};
use futures::stream::{self, StreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CUSTOMERS: usize = 20;
/// Credit limit of every customer, in cents (50.00).
const LIMIT_CENTS: i64 = 5_000;
const CYCLES: usize = 4;
/// Most orders one cycle may fire; the kill comes well before, once enough
/// sagas are in flight.
const ORDERS_PER_CYCLE: usize = 2_000;
const CONCURRENCY: usize = 128;
/// SIGKILL no earlier than this many POST /orders of the cycle answered ...
const KILL_AFTER: usize = 100;
/// ... and once PENDING orders (probed with `GET /orders?state=PENDING`) plus
/// POSTs still outstanding reach this many: 200 and a margin, as sagas keep
/// settling while the probe and the kill are under way.
const IN_FLIGHT_TARGET: usize = 260;
/// Answers between two probes.
const PROBE_EVERY: usize = 10;
/// Sanity floor, checked afterwards from stored timestamps: each kill must
/// have interrupted at least this many sagas or the test proves little.
const MIN_INTERRUPTED: usize = 100;
/// Long-poll used to wait for an order to settle after the restart.
const SETTLE_WAIT_SECS: u64 = 30;
/// Parallel requests used by the checks.
const CHECK_PARALLELISM: usize = 32;

/// What one POST /orders came to, as far as its client knows.
enum Outcome {
    /// 201: the client was told about this order.
    Acked {
        id: String,
        customer: String,
        total: i64,
    },
    /// Never reached the server (connection refused): nothing was created.
    NotSent,
    /// Sent, but the answer was lost or was not a 201: the order may or may
    /// not exist.
    Unknown(String),
    /// A 201 that does not describe the order asked for.
    BadAnswer(String),
}

/// The order total of request `n` (counted over all cycles): 1.00–10.00.
fn amount_cents(n: usize) -> i64 {
    100 + ((n * 7919) % 901) as i64
}

fn amount_str(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn parse_ms(v: &Value) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn start_child(exe: &Path, dir: &Path) -> ChildServer {
    tokio::task::block_in_place(|| ChildServer::start(exe, dir, &[]))
        .expect("durasaga serve starts on the data dir")
}

/// SIGKILLs the child, reaps it and checks it died of the signal.
fn kill9(server: &mut ChildServer) {
    tokio::task::block_in_place(|| {
        server.signal("KILL").expect("kill -9 the child");
        let status = server
            .wait(Duration::from_secs(10))
            .expect("child reaped after SIGKILL");
        assert_eq!(
            status.signal(),
            Some(9),
            "the child must have died of SIGKILL, not exited on its own: {status:?}"
        );
    });
}

/// Sorts out what a POST /orders came to. Runs in the client tasks, so it
/// reports a wrong answer instead of panicking (a panic there would be lost).
fn classify(r: anyhow::Result<Value>, customer: &str, total: i64) -> Outcome {
    match r {
        Ok(v) => match v["orderId"].as_str() {
            Some(id)
                if v["customerId"] == customer && cents(&v["orderTotal"]).ok() == Some(total) =>
            {
                Outcome::Acked {
                    id: id.to_owned(),
                    customer: customer.to_owned(),
                    total,
                }
            }
            _ => Outcome::BadAnswer(format!(
                "asked {customer} {total}c, POST /orders answered 201 with {v}"
            )),
        },
        Err(e) => match e.downcast_ref::<reqwest::Error>() {
            Some(re) if re.is_connect() => Outcome::NotSent,
            _ => Outcome::Unknown(format!("{e:#}")),
        },
    }
}

#[derive(Default)]
struct CycleStats {
    acked: usize,
    unknown: usize,
    not_sent: usize,
    outstanding_at_kill: usize,
    pending_at_probe: usize,
    death_ms: i64,
}

/// One cycle: fire up to `ORDERS_PER_CYCLE` orders from `CONCURRENCY` tasks
/// and SIGKILL the child once at least `KILL_AFTER` of them have been answered
/// and about `IN_FLIGHT_TARGET` sagas are in flight.
async fn fire_and_kill(
    server: &mut ChildServer,
    client: &Client,
    customers: &Arc<Vec<String>>,
    cycle: usize,
    acked: &mut HashMap<String, (String, i64)>,
    unknown_errors: &mut Vec<String>,
    answer_errors: &mut Vec<String>,
) -> CycleStats {
    let next = Arc::new(AtomicUsize::new(0));
    // POST /orders sent and not yet answered.
    let in_http = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    for _ in 0..CONCURRENCY {
        let (client, customers, next, in_http, stop, tx) = (
            client.clone(),
            customers.clone(),
            next.clone(),
            in_http.clone(),
            stop.clone(),
            tx.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(SeqCst) {
                let i = next.fetch_add(1, SeqCst);
                if i >= ORDERS_PER_CYCLE {
                    break;
                }
                let n = cycle * ORDERS_PER_CYCLE + i;
                let customer = &customers[n % customers.len()];
                let total = amount_cents(n);
                in_http.fetch_add(1, SeqCst);
                let r = client.create_order(customer, &amount_str(total), 0).await;
                in_http.fetch_sub(1, SeqCst);
                if tx.send(classify(r, customer, total)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut stats = CycleStats::default();
    let mut answered = 0;
    let mut killed = false;
    let mut last_probe = 0;
    while let Some(outcome) = rx.recv().await {
        answered += 1;
        match outcome {
            Outcome::Acked {
                id,
                customer,
                total,
            } => {
                stats.acked += 1;
                let dup = acked.insert(id.clone(), (customer, total));
                assert!(dup.is_none(), "two POST /orders were answered with id {id}");
            }
            Outcome::BadAnswer(e) => answer_errors.push(e),
            Outcome::NotSent if !killed => {
                answer_errors.push("POST /orders refused while the child was up".into())
            }
            Outcome::Unknown(e) if !killed => {
                answer_errors.push(format!("POST /orders failed while the child was up: {e}"))
            }
            Outcome::NotSent => stats.not_sent += 1,
            Outcome::Unknown(e) => {
                stats.unknown += 1;
                unknown_errors.push(e);
            }
        }
        if !killed && answered >= KILL_AFTER && answered >= last_probe + PROBE_EVERY {
            last_probe = answered;
            let issued = next.load(SeqCst).min(ORDERS_PER_CYCLE);
            let pending = client
                .list_all("/orders?state=PENDING", "orders")
                .await
                .map(|v| v.len())
                .unwrap_or(0);
            if pending + in_http.load(SeqCst) >= IN_FLIGHT_TARGET || issued == ORDERS_PER_CYCLE {
                stop.store(true, SeqCst);
                stats.outstanding_at_kill = in_http.load(SeqCst);
                stats.pending_at_probe = pending;
                kill9(server);
                stats.death_ms = unix_ms(SystemTime::now());
                killed = true;
            }
        }
    }
    assert!(killed, "cycle {cycle}: the child was never killed");
    stats
}

/// Runs `f` over `items` with bounded parallelism, keeping the results.
async fn par_map<T, R, F, Fut>(items: Vec<T>, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    stream::iter(items)
        .map(f)
        .buffer_unordered(CHECK_PARALLELISM)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_survive_repeated_kill9_mid_saga() {
    let started = Instant::now();
    let exe = Path::new(env!("CARGO_BIN_EXE_durasaga"));
    let dir = tempfile::tempdir().expect("temp dir");

    let mut acked: HashMap<String, (String, i64)> = HashMap::new();
    let mut unknown_errors = Vec::new();
    let mut answer_errors = Vec::new();
    let mut cycles = Vec::new();
    let mut customers = Arc::new(Vec::new());

    for cycle in 0..CYCLES {
        let mut server = start_child(exe, dir.path());
        let client = Client::new(&server.url);
        client
            .wait_ready(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: child not ready after restart: {e:#}"));
        if cycle == 0 {
            let mut v = Vec::new();
            for i in 0..CUSTOMERS {
                let limit = amount_str(LIMIT_CENTS);
                v.push(
                    client
                        .create_customer(&format!("crash customer {i}"), &limit)
                        .await
                        .expect("create customer"),
                );
            }
            customers = Arc::new(v);
        }
        let stats = fire_and_kill(
            &mut server,
            &client,
            &customers,
            cycle,
            &mut acked,
            &mut unknown_errors,
            &mut answer_errors,
        )
        .await;
        println!(
            "cycle {cycle}: {} acknowledged, {} unknown, {} not sent; \
             SIGKILL with {} PENDING and {} POSTs outstanding ({:?} in)",
            stats.acked,
            stats.unknown,
            stats.not_sent,
            stats.pending_at_probe,
            stats.outstanding_at_kill,
            started.elapsed()
        );
        cycles.push(stats);
    }
    let unknown: usize = cycles.iter().map(|c| c.unknown).sum();

    // ---------------------------------------------------------- recovery
    let server = start_child(exe, dir.path());
    let client = Client::new(&server.url);
    client
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("child ready after the last restart");
    let recovered_at = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    failures.extend(answer_errors);

    // Nothing acknowledged was lost, and each ends in a terminal state.
    let acked_ids: Vec<String> = acked.keys().cloned().collect();
    let settled = par_map(acked_ids, |id| {
        let client = client.clone();
        async move {
            let r = client.get_order(&id, SETTLE_WAIT_SECS).await;
            (id, r)
        }
    })
    .await;
    for (id, r) in settled {
        let (customer, total) = &acked[&id];
        match r {
            Ok(Some(o)) => {
                if o["customerId"] != customer.as_str()
                    || cents(&o["orderTotal"]).ok() != Some(*total)
                {
                    failures.push(format!(
                        "acknowledged order {id} changed: asked {customer} {total}c, stored {o}"
                    ));
                }
            }
            Ok(None) => failures.push(format!("acknowledged order {id} was lost (404)")),
            Err(e) => failures.push(format!("GET /orders/{id}: {e:#}")),
        }
    }

    // Orders created by requests whose answer was lost settle too.
    let listed = client
        .list_all("/orders", "orders")
        .await
        .expect("list orders");
    let others: Vec<String> = listed
        .iter()
        .filter_map(|o| o["orderId"].as_str())
        .filter(|id| !acked.contains_key(*id))
        .map(str::to_owned)
        .collect();
    for r in par_map(others.clone(), |id| {
        let client = client.clone();
        async move { client.get_order(&id, SETTLE_WAIT_SECS).await }
    })
    .await
    {
        if let Err(e) = r {
            failures.push(format!("GET /orders/(unacknowledged): {e:#}"));
        }
    }
    if others.len() > unknown {
        failures.push(format!(
            "{} stored orders were never acknowledged, but only {unknown} requests had an unknown outcome",
            others.len()
        ));
    }
    let settle_time = recovered_at.elapsed();

    // The final list: no duplicates, everything terminal, sagas agree.
    let all = client
        .list_all("/orders", "orders")
        .await
        .expect("list orders");
    let mut seen = HashSet::new();
    for o in &all {
        let id = o["orderId"].as_str().unwrap_or_default().to_owned();
        if !seen.insert(id.clone()) {
            failures.push(format!("order {id} appears twice in GET /orders"));
        }
    }
    for id in acked.keys() {
        if !seen.contains(id) {
            failures.push(format!(
                "acknowledged order {id} is missing from GET /orders"
            ));
        }
    }
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for o in &all {
        let state = o["orderState"].as_str().unwrap_or("?").to_owned();
        *by_state.entry(state.clone()).or_default() += 1;
        match state.as_str() {
            "APPROVED" if o["rejectionReason"].is_null() => {}
            "REJECTED" if !o["rejectionReason"].is_null() => {
                let r = o["rejectionReason"].as_str().unwrap_or("?").to_owned();
                *by_reason.entry(r).or_default() += 1;
            }
            _ => failures.push(format!("order not settled after recovery: {o}")),
        }
        if o["rejectionReason"] == "UNKNOWN_CUSTOMER" {
            failures.push(format!("order rejected for an existing customer: {o}"));
        }
    }
    let saga_checks = par_map(all.clone(), |o| {
        let client = client.clone();
        async move {
            let id = o["orderId"].as_str().unwrap_or_default().to_owned();
            let r = client
                .http
                .get(format!("{}/sagas/{id}", client.url))
                .send()
                .await;
            let saga = match r {
                Ok(r) if r.status().as_u16() == 200 => r.json::<Value>().await.ok(),
                Ok(r) => return Some(format!("GET /sagas/{id} answered {}", r.status())),
                Err(e) => return Some(format!("GET /sagas/{id}: {e}")),
            };
            let Some(s) = saga else {
                return Some(format!("GET /sagas/{id}: undecodable body"));
            };
            let state = s["state"].as_str().unwrap_or("?");
            if !matches!(state, "APPROVED" | "REJECTED")
                || s["state"] != o["orderState"]
                || s["rejectionReason"] != o["rejectionReason"]
            {
                return Some(format!(
                    "saga {id} is {state} ({}) but its order is {} ({})",
                    s["rejectionReason"], o["orderState"], o["rejectionReason"]
                ));
            }
            None
        }
    })
    .await;
    failures.extend(saga_checks.into_iter().flatten());

    // Credit adds up for every customer.
    match credit_violations(&client, &customers).await {
        Ok(v) => failures.extend(v),
        Err(e) => failures.push(format!("credit check failed: {e:#}")),
    }
    let mut approved_by_customer: HashMap<&str, i64> = HashMap::new();
    for o in all.iter().filter(|o| o["orderState"] == "APPROVED") {
        *approved_by_customer
            .entry(o["customerId"].as_str().unwrap_or_default())
            .or_default() += cents(&o["orderTotal"]).unwrap_or(0);
    }
    for c in customers.iter() {
        let cust = client.get_customer(c).await.expect("GET /customers/{id}");
        let limit = cents(&cust["creditLimit"]).expect("creditLimit");
        let available = cents(&cust["availableCredit"]).expect("availableCredit");
        let approved = approved_by_customer.get(c.as_str()).copied().unwrap_or(0);
        if limit != LIMIT_CENTS || available < 0 || limit - available != approved {
            failures.push(format!(
                "customer {c}: limit {limit}c, available {available}c, approved orders {approved}c"
            ));
        }
    }

    // How many sagas each SIGKILL interrupted: orders created before the
    // child died and settled after it (so by a later child).
    let mut in_flight = Vec::new();
    for c in &cycles {
        let n = all
            .iter()
            .filter(|o| {
                matches!(
                    (parse_ms(&o["createdAt"]), parse_ms(&o["updatedAt"])),
                    (Some(cr), Some(up)) if cr <= c.death_ms && up > c.death_ms
                )
            })
            .count();
        in_flight.push(n);
        if n < MIN_INTERRUPTED {
            failures.push(format!(
                "a kill interrupted only {n} sagas (< {MIN_INTERRUPTED}): the test did not exercise recovery"
            ));
        }
    }

    let approved = by_state.get("APPROVED").copied().unwrap_or(0);
    let rejected = by_state.get("REJECTED").copied().unwrap_or(0);
    println!(
        "crash_e2e: {CYCLES} SIGKILL cycles; {} orders acknowledged, {unknown} unknown, \
         {} stored ({} unacknowledged); {approved} APPROVED, {rejected} REJECTED {by_reason:?}; \
         states {by_state:?}; sagas interrupted by each kill \
         {in_flight:?}; settled {settle_time:?} after the last restart; total {:?}",
        acked.len(),
        all.len(),
        others.len(),
        started.elapsed()
    );
    if !unknown_errors.is_empty() {
        println!(
            "  e.g. unknown outcome: {}",
            unknown_errors.first().map(String::as_str).unwrap_or("")
        );
    }

    if !failures.is_empty() {
        drop(server);
        let kept = dir.keep();
        for f in failures.iter().take(40) {
            eprintln!("VIOLATION: {f}");
        }
        panic!(
            "{} invariant violations after crash recovery (data dir kept at {})",
            failures.len(),
            kept.display()
        );
    }
    assert!(approved > 0, "no order was approved: limits too tight");
    assert!(rejected > 0, "no order was rejected: limits too loose");
    drop(server);
}
