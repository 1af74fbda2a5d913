#![cfg(feature = "failpoints")]
//! The crash-cycle reliability harness (issue 5, item 2): Jepsen-style, it
//! records what clients were told, breaks the real `durasaga serve` binary
//! over and over on one data directory, heals it, and checks invariants.
//!
//! Each cycle starts the child and, while up to `CLIENTS` concurrent clients
//! drive CreateOrder sagas (every POST carries an `Idempotency-Key`; a request
//! whose outcome is unknown is sent again with the same key in a later cycle)
//! and CancelOrder sagas of orders seen APPROVED, does one of:
//!
//! - `kill`: SIGKILL at a random moment under load;
//! - `crash_point(NAME)`: the child is started with `DURASAGA_CRASH_AT=NAME`
//!   and `DURASAGA_CRASH_AFTER=N` and aborts by itself there; the harness
//!   checks it died of SIGABRT after printing that crash point;
//! - `stop_cont_kill` / `stop_cont_term`: SIGSTOP for several reply timeouts,
//!   SIGCONT (timeouts fire, steps are retried, duplicates reach the
//!   customers), then SIGKILL, or SIGTERM and a clean exit 0. Half of them
//!   are a stutter instead: many pauses longer than the reply timeout with
//!   short runs between, in a child whose reply timeout is 15 ms;
//! - `recovery_kill`: SIGKILL a random time after spawn, scaled to the last
//!   start-up, so that it lands before or during start-up recovery.
//!
//! Any exit the harness did not cause fails the run. After the last cycle the
//! child is restarted, every unknown request is resolved with its key, the
//! harness waits (long-polls with deadlines) until every order and saga is
//! terminal, then checks: every acknowledged order exists with its customer
//! and total, no order exists that no client asked for, each order agrees
//! with its sagas, every acknowledged cancel ended CANCELLED, per-customer
//! credit adds up, the order-history view matches the orders; it waits until
//! every entity actor has passivated (delivered messages leave the outboxes),
//! then SIGTERM (exit 0 expected) and `durasaga check --data-dir` must report
//! 0 violations.
//!
//! The binary under test is copied into the run's directory first and checked
//! to have crash points, so a concurrent `cargo build` without the feature
//! cannot swap it mid-run. A failing run keeps that directory (data and one
//! log per child) and prints the seed.
//!
//! Run: `cargo test --features failpoints --test crash_cycle -- --nocapture`.
//! `DURASAGA_SEED` replays a run's choices, `DURASAGA_CYCLES` sets the
//! number of cycles (30 by default; 300 for the long profile),
//! `DURASAGA_CHILD_LOG` the child's `RUST_LOG`. The deliberately broken build
//! (`DURASAGA_TEST_SKIP_DEDUP=1`) is `broken_build_is_caught`, run with
//! `-- --ignored broken_build_is_caught`.

use durasaga::fault::CRASH_POINTS;
use durasaga::harness::{cents, credit_violations, Client};
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Customers created in the first cycle: every `TIGHT_EVERY`-th has a tight
/// credit limit (most of its orders are refused, and reservations race at the
/// limit), the others an ample one.
const CUSTOMERS: usize = 8;
const TIGHT_EVERY: usize = 4;
const TIGHT_LIMIT_CENTS: i64 = 10_000;
const AMPLE_LIMIT_CENTS: i64 = 100_000_000;
/// Orders for this customer id are rejected with `UNKNOWN_CUSTOMER`.
const GHOST: &str = "cc-ghost-customer";
/// Concurrent HTTP clients per cycle.
const CLIENTS: usize = 12;
/// Share of operations that cancel an order seen APPROVED.
const CANCEL_SHARE: f64 = 0.15;
/// Share of POST /orders sent with `Prefer: wait=2` (to learn APPROVED).
const WAIT_SHARE: f64 = 0.3;
const REPLY_TIMEOUT_MS: u64 = 300;
/// The reply timeout of a stutter cycle's child: shorter than a saga step's
/// round trip under load in a debug build, so steps time out and compensate.
const STUTTER_REPLY_TIMEOUT_MS: u64 = 15;
/// The child's saga settings: short timeouts so that SIGSTOP makes them fire.
const CHILD_ENV: &[(&str, &str)] = &[
    ("DURASAGA__SAGA__REPLY_TIMEOUT_MS", "300"),
    ("DURASAGA__SAGA__MAX_ATTEMPTS", "3"),
    ("DURASAGA__SAGA__BACKOFF_BASE_MS", "20"),
    ("DURASAGA__SAGA__BACKOFF_MAX_MS", "100"),
    // Recovery holds the timers of the sagas it found in flight while they
    // are worked through, up to 60 s by default; under the harness's load
    // that can be much of an incarnation, and timeouts and compensations
    // would happen less after a restart. Three reply windows keep the hold
    // (and its extension) in play and leave the timeouts their share.
    ("DURASAGA__SAGA__RECOVERY_HOLD_MAX_MS", "900"),
    // Idle entities passivate (and trim delivered messages from their
    // outboxes) after 1 s instead of 10 s: passivation and reactivation
    // happen under the crashes too, and the final drain is quick.
    ("DURASAGA__ACTORS__IDLE_TIMEOUT_MS", "1000"),
    ("NO_COLOR", "1"),
];
/// The child's log filter unless `DURASAGA_CHILD_LOG` is set: warnings, plus
/// the recovery report (read back for the summary).
const DEFAULT_CHILD_LOG: &str = "warn,durasaga::actors::handle=info,durasaga::serve=info";
/// Saga states that are not terminal.
const ACTIVE_SAGA_STATES: &[&str] = &[
    "RESERVING_CREDIT",
    "RELEASING_CREDIT",
    "APPROVING_ORDER",
    "REJECTING_ORDER",
    "CANCELLING_ORDER",
    "PAUSED",
];
/// Parallel requests used by the final checks.
const CHECK_PARALLELISM: usize = 32;

// ------------------------------------------------------------------ profile

/// What a cycle does to the child.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Kill,
    CrashPoint(&'static str),
    StopContKill,
    StopContTerm,
    RecoveryKill,
}

impl Kind {
    fn label(&self) -> String {
        match self {
            Kind::Kill => "kill".into(),
            Kind::CrashPoint(p) => format!("crash_point({p})"),
            Kind::StopContKill => "stop_cont_kill".into(),
            Kind::StopContTerm => "stop_cont_term".into(),
            Kind::RecoveryKill => "recovery_kill".into(),
        }
    }
    fn family(&self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::CrashPoint(_) => "crash_point",
            Kind::StopContKill => "stop_cont_kill",
            Kind::StopContTerm => "stop_cont_term",
            Kind::RecoveryKill => "recovery_kill",
        }
    }
}

struct Profile {
    name: &'static str,
    seed: u64,
    cycles: usize,
    /// Whether clients cancel approved orders.
    cancels: bool,
    /// Only SIGSTOP/SIGCONT cycles (the broken-build profile).
    stop_cont_only: bool,
    /// Added to the child's environment.
    extra_env: Vec<(&'static str, &'static str)>,
}

fn env_seed() -> u64 {
    match std::env::var("DURASAGA_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            };
            parsed.unwrap_or_else(|| panic!("DURASAGA_SEED={s} is not a number"))
        }
        Err(_) => {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ (u64::from(std::process::id()) << 32)
        }
    }
}

fn env_cycles(default: usize) -> usize {
    std::env::var("DURASAGA_CYCLES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The kinds of all cycles: the first cycle creates the customers under a
/// plain kill; every kind and crash point appears at least once when there
/// are enough cycles; the rest are drawn by weight; order shuffled.
fn schedule(rng: &mut StdRng, p: &Profile) -> Vec<Kind> {
    if p.stop_cont_only {
        return (0..p.cycles)
            .map(|i| {
                if i % 3 == 2 {
                    Kind::StopContTerm
                } else {
                    Kind::StopContKill
                }
            })
            .collect();
    }
    let mut must: Vec<Kind> = vec![
        Kind::StopContKill,
        Kind::StopContTerm,
        Kind::RecoveryKill,
        Kind::Kill,
    ];
    must.extend(CRASH_POINTS.iter().map(|p| Kind::CrashPoint(p)));
    let rest = p.cycles.saturating_sub(1);
    let mut kinds: Vec<Kind> = Vec::new();
    if rest >= must.len() {
        kinds.extend(must);
    } else {
        must.shuffle(rng);
        kinds.extend(must.into_iter().take(rest));
    }
    while kinds.len() < rest {
        let k = match rng.gen_range(0..12) {
            0..=2 => Kind::Kill,
            3..=6 => Kind::CrashPoint(CRASH_POINTS[rng.gen_range(0..CRASH_POINTS.len())]),
            7..=8 => Kind::StopContKill,
            9 => Kind::StopContTerm,
            _ => Kind::RecoveryKill,
        };
        kinds.push(k);
    }
    kinds.shuffle(rng);
    let mut all = vec![Kind::Kill];
    all.extend(kinds);
    all.truncate(p.cycles);
    all
}

/// `DURASAGA_CRASH_AFTER` for a crash point: how many passes before it
/// aborts, so that the crash lands a little into the cycle's load.
fn crash_after(rng: &mut StdRng, point: &str) -> u64 {
    match point {
        "during_recovery" | "after_recovery" => 1,
        "after_commit_before_flush" | "after_commit_flush" => rng.gen_range(1..=1500),
        _ => rng.gen_range(1..=400),
    }
}

// ------------------------------------------------------------ child process

/// A `durasaga serve` child whose stderr goes to a log file and whose exit the
/// harness observes (the library's `ChildServer` learns the port only after
/// start-up recovery, and hides an exit before it).
struct Proc {
    child: std::process::Child,
    urls: mpsc::Receiver<String>,
    url: Option<String>,
    log: PathBuf,
    spawned: Instant,
    exited: Option<ExitStatus>,
}

impl Proc {
    fn spawn(exe: &Path, dir: &Path, log: &Path, env: &[(String, String)]) -> Result<Self, String> {
        let err = std::fs::File::create(log).map_err(|e| format!("log {}: {e}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .env(
                "RUST_LOG",
                std::env::var("DURASAGA_CHILD_LOG").unwrap_or_else(|_| DEFAULT_CHILD_LOG.into()),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("durasaga listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        Ok(Self {
            child,
            urls: rx,
            url: None,
            log: log.to_owned(),
            spawned: Instant::now(),
            exited: None,
        })
    }

    /// The child's URL once it has printed it (after start-up recovery).
    fn ready_url(&mut self) -> Option<String> {
        if self.url.is_none() {
            if let Ok(u) = self.urls.try_recv() {
                self.url = Some(u);
            }
        }
        self.url.clone()
    }

    /// The exit status, if the child has exited.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
            }
        }
        self.exited
    }

    /// Sends a signal with `kill(1)`.
    fn signal(&self, sig: &str) -> Result<(), String> {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| format!("kill -{sig}: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("kill -{sig} {} failed", self.child.id()))
        }
    }

    /// SIGKILLs the child and reaps it; returns how it died (which is not
    /// SIGKILL if it had already exited on its own).
    fn sigkill(&mut self) -> Result<ExitStatus, String> {
        if let Some(st) = self.exit_status() {
            return Ok(st);
        }
        let _ = self.child.kill();
        let st = self
            .child
            .wait()
            .map_err(|e| format!("wait after SIGKILL: {e}"))?;
        self.exited = Some(st);
        Ok(st)
    }

    /// Waits up to `timeout` for the child to exit.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exit_status() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- last {} lines of {}:\n{}",
        lines.len() - from,
        path.display(),
        lines[from..].join("\n")
    )
}

enum Started {
    Ready(Client),
    Exited(ExitStatus),
}

/// Waits until the child serves `/health/ready`, or exits.
async fn start_and_wait(p: &mut Proc, timeout: Duration) -> Result<Started, String> {
    let end = Instant::now() + timeout;
    let mut client: Option<Client> = None;
    loop {
        if client.is_none() {
            if let Some(url) = p.ready_url() {
                client = Some(Client::new(&url));
            }
        }
        if let Some(c) = &client {
            let r = c
                .http
                .get(format!("{}/health/ready", c.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status().is_success()) {
                return Ok(Started::Ready(c.clone()));
            }
        }
        if let Some(st) = p.exit_status() {
            return Ok(Started::Exited(st));
        }
        if Instant::now() >= end {
            return Err(format!(
                "the child was not ready within {timeout:?}\n{}",
                p.log_tail(30)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the harness did to the child, hence how it must have died.
enum Cause {
    Kill,
    Abort(&'static str),
    Term,
}

fn verify_exit(st: ExitStatus, cause: &Cause, p: &Proc) -> Result<(), String> {
    let ok = match cause {
        Cause::Kill => st.signal() == Some(9),
        Cause::Abort(point) => {
            st.signal() == Some(6)
                && std::fs::read_to_string(&p.log)
                    .unwrap_or_default()
                    .contains(&format!("crash point {point} reached"))
        }
        Cause::Term => st.code() == Some(0),
    };
    if ok {
        return Ok(());
    }
    let want = match cause {
        Cause::Kill => "death by SIGKILL (signal 9)".to_owned(),
        Cause::Abort(point) => format!("an abort (signal 6) at crash point {point}"),
        Cause::Term => "a clean exit 0 after SIGTERM".to_owned(),
    };
    Err(format!(
        "the child exited in a way the harness did not cause: expected {want}, got {st:?} \
         (signal {:?}, code {:?})\n{}",
        st.signal(),
        st.code(),
        p.log_tail(40)
    ))
}

// ------------------------------------------------------------------- ledger

/// One POST /orders a client decided to make, with its idempotency key.
struct CreateReq {
    key: String,
    customer: String,
    total: i64,
    /// The order id the server answered (201), once it has.
    id: Option<String>,
    sends: u32,
}

/// Everything the clients were told.
#[derive(Default)]
struct Ledger {
    reqs: Vec<CreateReq>,
    /// Create requests to send again with the same key, with the cycle in
    /// which their outcome became unknown (resent only in a later cycle).
    retry: VecDeque<(usize, usize)>,
    /// Orders seen APPROVED and not yet picked for a cancel.
    approved: Vec<String>,
    seen_approved: HashSet<String>,
    /// Cancels asked for: order id → acknowledged (200).
    cancels: BTreeMap<String, bool>,
    cancel_retry: VecDeque<(String, usize)>,
    tally: Tally,
    violations: Vec<String>,
}

#[derive(Default, Clone)]
struct Tally {
    create_sent: usize,
    create_ok: usize,
    create_failed: usize,
    create_unknown: usize,
    create_not_sent: usize,
    create_resent: usize,
    cancel_sent: usize,
    cancel_ok: usize,
    cancel_failed: usize,
    cancel_unknown: usize,
    cancel_done_earlier: usize,
}

/// The answer to one HTTP request.
enum Answer {
    Status(u16, String),
    /// No answer: `connect` when the connection was refused (not sent).
    Transport {
        connect: bool,
        error: String,
    },
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    match req.send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            match r.text().await {
                Ok(body) => Answer::Status(s, body),
                Err(e) => Answer::Transport {
                    connect: false,
                    error: format!("answer {s} cut off: {e}"),
                },
            }
        }
        Err(e) => Answer::Transport {
            connect: e.is_connect(),
            error: format!("{e}"),
        },
    }
}

fn amount_str(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// Shared by the clients of one cycle (and of the final phase).
struct OpCtx {
    client: Client,
    ledger: Arc<Mutex<Ledger>>,
    cycle: usize,
    seed: u64,
    cancels: bool,
    customers: Arc<Vec<String>>,
    /// Set once the harness disrupts the child (or always, in crash-point
    /// cycles, where it dies by itself): request errors are expected then.
    disrupted: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

enum Op {
    Create {
        i: usize,
        wait: bool,
    },
    /// `retry`: an earlier send of this cancel had an unknown outcome.
    Cancel {
        id: String,
        retry: bool,
    },
}

impl OpCtx {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_op(&self, rng: &mut StdRng) -> Op {
        let mut l = self.lock();
        if let Some(&(i, c)) = l.retry.front() {
            if c < self.cycle {
                l.retry.pop_front();
                l.tally.create_resent += 1;
                return Op::Create { i, wait: false };
            }
        }
        if let Some((id, c)) = l.cancel_retry.front().cloned() {
            if c < self.cycle {
                l.cancel_retry.pop_front();
                return Op::Cancel { id, retry: true };
            }
        }
        if self.cancels && !l.approved.is_empty() && rng.gen_bool(CANCEL_SHARE) {
            let k = rng.gen_range(0..l.approved.len());
            let id = l.approved.swap_remove(k);
            l.cancels.insert(id.clone(), false);
            return Op::Cancel { id, retry: false };
        }
        let customer = if rng.gen_bool(0.03) {
            GHOST.to_owned()
        } else {
            self.customers[rng.gen_range(0..self.customers.len())].clone()
        };
        let n = l.reqs.len();
        l.reqs.push(CreateReq {
            key: format!("cc-{:x}-{n}", self.seed),
            customer,
            total: rng.gen_range(100..=2500),
            id: None,
            sends: 0,
        });
        Op::Create {
            i: n,
            wait: rng.gen_bool(WAIT_SHARE),
        }
    }

    async fn run(&self, op: Op) {
        match op {
            Op::Create { i, wait } => self.create(i, wait).await,
            Op::Cancel { id, retry } => self.cancel(id, retry).await,
        }
    }

    async fn create(&self, i: usize, wait: bool) {
        let (key, customer, total) = {
            let mut l = self.lock();
            l.tally.create_sent += 1;
            let r = &mut l.reqs[i];
            r.sends += 1;
            (r.key.clone(), r.customer.clone(), r.total)
        };
        let mut req = self
            .client
            .http
            .post(format!("{}/orders", self.client.url))
            .header("Idempotency-Key", &key)
            .json(&json!({"customerId": customer, "orderTotal": {"amount": amount_str(total)}}));
        if wait {
            req = req.header("Prefer", "wait=2");
        }
        let answer = send(req).await;
        let healthy = !self.disrupted.load(SeqCst);
        let mut l = self.lock();
        match answer {
            Answer::Status(201, body) => {
                l.tally.create_ok += 1;
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let Some(id) = v["orderId"].as_str().map(str::to_owned) else {
                    l.violations.push(format!(
                        "POST /orders (key {key}) answered 201 without orderId: {body}"
                    ));
                    return;
                };
                if v["customerId"] != customer.as_str()
                    || cents(&v["orderTotal"]).ok() != Some(total)
                {
                    l.violations.push(format!(
                        "POST /orders (key {key}) asked {customer} {total}c, answered {body}"
                    ));
                }
                if let Some(prev) = l.reqs[i].id.clone() {
                    if prev != id {
                        l.violations.push(format!(
                            "Idempotency-Key {key} answered order {prev}, then order {id}"
                        ));
                    }
                }
                l.reqs[i].id = Some(id.clone());
                if self.cancels
                    && v["orderState"] == "APPROVED"
                    && l.seen_approved.insert(id.clone())
                {
                    l.approved.push(id);
                }
            }
            Answer::Status(s, body) => {
                l.tally.create_failed += 1;
                if s >= 500 {
                    // Not created as far as the client knows: send again.
                    l.retry.push_back((i, self.cycle));
                    if healthy {
                        l.violations.push(format!(
                            "POST /orders answered {s} while the child was healthy: {body}"
                        ));
                    }
                } else {
                    l.violations
                        .push(format!("POST /orders (key {key}) answered {s}: {body}"));
                }
            }
            Answer::Transport { connect, error } => {
                if connect {
                    l.tally.create_not_sent += 1;
                } else {
                    l.tally.create_unknown += 1;
                }
                l.retry.push_back((i, self.cycle));
                if healthy {
                    l.violations.push(format!(
                        "POST /orders got no answer while the child was healthy: {error}"
                    ));
                }
            }
        }
    }

    async fn cancel(&self, id: String, retry: bool) {
        self.lock().tally.cancel_sent += 1;
        let req = self
            .client
            .http
            .post(format!("{}/orders/{id}/cancel", self.client.url));
        let answer = send(req).await;
        let healthy = !self.disrupted.load(SeqCst);
        // A resent cancel whose first send took effect finds the order
        // CANCELLED, which is refused with 409: that resolves it as done.
        // If the order cannot be read (the child just died), the outcome
        // stays unknown and the cancel is sent again later.
        let now: Option<Result<Option<Value>, String>> = match &answer {
            Answer::Status(409, _) => Some(
                self.client
                    .get_order(&id, 0)
                    .await
                    .map_err(|e| format!("{e:#}")),
            ),
            _ => None,
        };
        let now_state = match &now {
            Some(Ok(Some(o))) => o["orderState"].as_str().unwrap_or("?").to_owned(),
            Some(Ok(None)) => "404".to_owned(),
            Some(Err(e)) => format!("unreadable ({e})"),
            None => String::new(),
        };
        let mut l = self.lock();
        match answer {
            Answer::Status(409, _) if retry && now_state == "CANCELLED" => {
                l.tally.cancel_done_earlier += 1;
                l.cancels.insert(id, true);
            }
            Answer::Status(409, _) if retry && matches!(now, Some(Err(_))) => {
                l.tally.cancel_unknown += 1;
                l.cancel_retry.push_back((id, self.cycle));
            }
            Answer::Status(200, body) => {
                l.tally.cancel_ok += 1;
                l.cancels.insert(id.clone(), true);
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if !matches!(v["orderState"].as_str(), Some("APPROVED" | "CANCELLED")) {
                    l.violations
                        .push(format!("POST /orders/{id}/cancel answered 200 with {body}"));
                }
            }
            Answer::Status(s, body) if s >= 500 => {
                l.tally.cancel_failed += 1;
                l.cancel_retry.push_back((id, self.cycle));
                if healthy {
                    l.violations.push(format!(
                        "POST /orders/.../cancel answered {s} while the child was healthy: {body}"
                    ));
                }
            }
            Answer::Status(s, body) => {
                // 409 included: the order was seen APPROVED, and only its
                // cancel can change that.
                l.tally.cancel_failed += 1;
                l.violations.push(format!(
                    "cycle {}: cancel of order {id}, seen APPROVED ({}), answered {s}: {body}; the order is now {now_state}",
                    self.cycle + 1,
                    if retry { "a resend" } else { "first send" }
                ));
            }
            Answer::Transport { error, .. } => {
                l.tally.cancel_unknown += 1;
                l.cancel_retry.push_back((id, self.cycle));
                if healthy {
                    l.violations.push(format!(
                        "POST /orders/.../cancel got no answer while the child was healthy: {error}"
                    ));
                }
            }
        }
    }
}

async fn client_task(ctx: Arc<OpCtx>, mut rng: StdRng) {
    while !ctx.stop.load(SeqCst) {
        let op = ctx.next_op(&mut rng);
        ctx.run(op).await;
    }
}

/// Sum of a Prometheus metric over its labels (0 if absent).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_text(client: &Client) -> Option<String> {
    let r = client
        .http
        .get(format!("{}/metrics", client.url))
        .timeout(Duration::from_millis(1000))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

async fn read_metric(client: &Client, name: &str) -> Option<f64> {
    Some(metric_sum(&metrics_text(client).await?, name))
}

async fn read_duplicates(client: &Client) -> Option<f64> {
    read_metric(client, "durasaga_duplicates_dropped_total").await
}

/// The clients of one cycle, and a poller of the duplicate counter.
struct Load {
    ctx: Arc<OpCtx>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    last_dups: Arc<Mutex<Option<f64>>>,
}

impl Load {
    async fn finish(self) -> Result<Option<f64>, String> {
        self.ctx.stop.store(true, SeqCst);
        for t in self.tasks {
            match tokio::time::timeout(Duration::from_secs(90), t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("a client task failed: {e}")),
                Err(_) => return Err("a client request hung for 90 s".into()),
            }
        }
        let d = *self.last_dups.lock().unwrap_or_else(|e| e.into_inner());
        Ok(d)
    }
}

// ------------------------------------------------------------------ harness

#[derive(Default)]
struct RunStats {
    crashes: BTreeMap<&'static str, usize>,
    points_hit: BTreeMap<&'static str, usize>,
    points_hit_in_startup: usize,
    points_not_reached: BTreeMap<&'static str, usize>,
    recovery_kills_before_ready: usize,
    recovery_kills_after_ready: usize,
    sigstops: usize,
    stutters: usize,
    stopped_ms: u128,
    clean_exits: usize,
    dups_dropped: f64,
    dups_unread: usize,
    startups_ms: Vec<u128>,
}

struct Harness {
    exe: PathBuf,
    root: PathBuf,
    data: PathBuf,
    logs: PathBuf,
    profile: Profile,
    rng: StdRng,
    ledger: Arc<Mutex<Ledger>>,
    customers: Arc<Vec<String>>,
    stats: RunStats,
    last_startup: Duration,
    incarnation: usize,
    started: Instant,
}

/// What a run came to.
struct Report {
    violations: Vec<String>,
    summary: String,
    root: PathBuf,
}

impl Harness {
    fn new(profile: Profile, root: &Path, exe: PathBuf) -> Self {
        let data = root.join("data");
        let logs = root.join("logs");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&logs).expect("log dir");
        Self {
            exe,
            root: root.to_owned(),
            data,
            logs,
            rng: StdRng::seed_from_u64(profile.seed),
            profile,
            ledger: Arc::new(Mutex::new(Ledger::default())),
            customers: Arc::new(Vec::new()),
            stats: RunStats::default(),
            last_startup: Duration::from_millis(500),
            incarnation: 0,
            started: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&mut self, crash: Option<(&str, u64)>, starved: bool) -> Result<Proc, String> {
        self.incarnation += 1;
        let log = self.logs.join(format!("child-{:04}.log", self.incarnation));
        let mut env: Vec<(String, String)> = CHILD_ENV
            .iter()
            .chain(self.profile.extra_env.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some((point, after)) = crash {
            env.push(("DURASAGA_CRASH_AT".into(), point.into()));
            env.push(("DURASAGA_CRASH_AFTER".into(), after.to_string()));
        }
        if starved {
            env.push((
                "DURASAGA__SAGA__REPLY_TIMEOUT_MS".into(),
                STUTTER_REPLY_TIMEOUT_MS.to_string(),
            ));
            env.push((
                "DURASAGA__SAGA__RECOVERY_HOLD_MAX_MS".into(),
                (3 * STUTTER_REPLY_TIMEOUT_MS).to_string(),
            ));
        }
        Proc::spawn(&self.exe, &self.data, &log, &env)
    }

    fn start_load(&mut self, client: &Client, cycle: usize, crash_cycle: bool) -> Load {
        let ctx = Arc::new(OpCtx {
            client: client.clone(),
            ledger: self.ledger.clone(),
            cycle,
            seed: self.profile.seed,
            cancels: self.profile.cancels,
            customers: self.customers.clone(),
            disrupted: Arc::new(AtomicBool::new(crash_cycle)),
            stop: Arc::new(AtomicBool::new(false)),
        });
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let rng = StdRng::seed_from_u64(self.rng.gen());
            tasks.push(tokio::spawn(client_task(ctx.clone(), rng)));
        }
        let last_dups = Arc::new(Mutex::new(None));
        {
            let (ctx, last) = (ctx.clone(), last_dups.clone());
            tasks.push(tokio::spawn(async move {
                while !ctx.stop.load(SeqCst) {
                    if let Some(d) = read_duplicates(&ctx.client).await {
                        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }));
        }
        Load {
            ctx,
            tasks,
            last_dups,
        }
    }

    /// Lets the load run for `d` while watching for an exit nobody caused.
    async fn watch(&self, p: &mut Proc, d: Duration, what: &str) -> Result<(), String> {
        match p.wait_exit(d).await {
            None => Ok(()),
            Some(st) => Err(format!(
                "{what}: the child exited on its own: {st:?} (signal {:?}, code {:?})\n{}",
                st.signal(),
                st.code(),
                p.log_tail(40)
            )),
        }
    }

    /// Reads the duplicate counter once more (the child is running), then
    /// stops the clients and SIGKILLs the child.
    async fn kill_under_load(
        &mut self,
        p: &mut Proc,
        load: Load,
        client: &Client,
    ) -> Result<(), String> {
        let fresh = read_duplicates(client).await;
        load.ctx.disrupted.store(true, SeqCst);
        load.ctx.stop.store(true, SeqCst);
        let st = p.sigkill()?;
        verify_exit(st, &Cause::Kill, p)?;
        let polled = load.finish().await?;
        self.add_dups(fresh.or(polled));
        Ok(())
    }

    fn add_dups(&mut self, d: Option<f64>) {
        match d {
            Some(d) => self.stats.dups_dropped += d,
            None => self.stats.dups_unread += 1,
        }
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.gen_range(lo..=hi))
    }

    /// One cycle; `Err` is a broken expectation that ends the run.
    async fn cycle(&mut self, cycle: usize, kind: &Kind) -> Result<String, String> {
        let crash = match kind {
            Kind::CrashPoint(point) => Some((*point, crash_after(&mut self.rng, point))),
            _ => None,
        };
        // Half the SIGSTOP cycles are a stutter run with a reply timeout
        // shorter than a round trip: steps run out of attempts and compensate.
        let stutter =
            matches!(kind, Kind::StopContKill | Kind::StopContTerm) && self.rng.gen_bool(0.5);
        let mut p = self.spawn(crash, stutter)?;
        *self.stats.crashes.entry(kind.family()).or_default() += 1;

        if *kind == Kind::RecoveryKill {
            let max = (self.last_startup.as_millis() as u64 * 12 / 10).max(30);
            let delay = self.ms(0, max);
            let end = Instant::now() + delay;
            while Instant::now() < end {
                if let Some(st) = p.exit_status() {
                    return Err(format!(
                        "start-up: the child exited on its own: {st:?}\n{}",
                        p.log_tail(40)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let ready = p.ready_url().is_some();
            let st = p.sigkill()?;
            verify_exit(st, &Cause::Kill, &p)?;
            let when = if ready {
                self.stats.recovery_kills_after_ready += 1;
                "after it became ready"
            } else {
                self.stats.recovery_kills_before_ready += 1;
                "before it became ready (in start-up recovery)"
            };
            return Ok(format!("SIGKILL {delay:?} after spawn, {when}"));
        }

        let client = match start_and_wait(&mut p, Duration::from_secs(60)).await? {
            Started::Ready(c) => c,
            Started::Exited(st) => {
                if let Some((point, after)) = crash {
                    verify_exit(st, &Cause::Abort(point), &p)?;
                    *self.stats.points_hit.entry(point).or_default() += 1;
                    self.stats.points_hit_in_startup += 1;
                    return Ok(format!(
                        "aborted at {point} (pass {after}) during start-up, {:?} after spawn",
                        p.spawned.elapsed()
                    ));
                }
                return Err(format!(
                    "start-up: the child exited on its own: {st:?} (signal {:?}, code {:?})\n{}",
                    st.signal(),
                    st.code(),
                    p.log_tail(40)
                ));
            }
        };
        self.last_startup = p.spawned.elapsed();
        self.stats.startups_ms.push(self.last_startup.as_millis());
        if self.customers.is_empty() {
            let mut v = Vec::new();
            for i in 0..CUSTOMERS {
                let limit = if i % TIGHT_EVERY == 0 {
                    TIGHT_LIMIT_CENTS
                } else {
                    AMPLE_LIMIT_CENTS
                };
                let id = client
                    .create_customer(&format!("crash-cycle customer {i}"), &amount_str(limit))
                    .await
                    .map_err(|e| format!("create customer: {e:#}"))?;
                v.push(id);
            }
            self.customers = Arc::new(v);
        }

        let load = self.start_load(&client, cycle, crash.is_some());
        let what = format!("cycle {cycle} ({})", kind.label());
        let outcome = match kind {
            Kind::Kill => {
                let t = self.ms(300, 2500);
                self.watch(&mut p, t, &what).await?;
                self.kill_under_load(&mut p, load, &client).await?;
                format!("SIGKILL after {t:?} of load")
            }
            Kind::CrashPoint(point) => {
                let after = crash.map(|c| c.1).unwrap_or(1);
                let limit = Duration::from_secs(8);
                match p.wait_exit(limit).await {
                    Some(st) => {
                        load.ctx.stop.store(true, SeqCst);
                        verify_exit(st, &Cause::Abort(point), &p)?;
                        let polled = load.finish().await?;
                        self.add_dups(polled);
                        *self.stats.points_hit.entry(point).or_default() += 1;
                        format!(
                            "aborted at {point} (pass {after}) after {:?} of load",
                            p.spawned.elapsed().saturating_sub(self.last_startup)
                        )
                    }
                    None => {
                        self.kill_under_load(&mut p, load, &client).await?;
                        *self.stats.points_not_reached.entry(point).or_default() += 1;
                        format!("{point} not reached {after} times within {limit:?}; SIGKILL")
                    }
                }
            }
            Kind::StopContKill | Kind::StopContTerm => {
                let before = self.ms(200, 1000);
                self.watch(&mut p, before, &what).await?;
                load.ctx.disrupted.store(true, SeqCst);
                let pause = if !stutter {
                    // One long pause: every reply deadline passes at once.
                    let stopped = self.ms(REPLY_TIMEOUT_MS * 2, REPLY_TIMEOUT_MS * 5);
                    p.signal("STOP")?;
                    tokio::time::sleep(stopped).await;
                    p.signal("CONT")?;
                    self.stats.sigstops += 1;
                    self.stats.stopped_ms += stopped.as_millis();
                    format!("SIGSTOP for {stopped:?}")
                } else {
                    // A stutter (a starved process): short runs between
                    // pauses longer than the reply timeout; with the short
                    // reply timeout of this child, steps time out again and
                    // again, run out of attempts and compensate.
                    let span = self.ms(1500, 3000);
                    let end = Instant::now() + span;
                    let mut pulses = 0;
                    while Instant::now() < end {
                        let stopped = self.ms(REPLY_TIMEOUT_MS + 50, REPLY_TIMEOUT_MS * 2);
                        let run = self.ms(5, 60);
                        p.signal("STOP")?;
                        tokio::time::sleep(stopped).await;
                        p.signal("CONT")?;
                        self.stats.sigstops += 1;
                        self.stats.stopped_ms += stopped.as_millis();
                        pulses += 1;
                        self.watch(&mut p, run, &what).await?;
                    }
                    self.stats.stutters += 1;
                    format!(
                        "SIGSTOP/SIGCONT stutter ({pulses} pauses over {span:?}, reply timeout {STUTTER_REPLY_TIMEOUT_MS} ms)"
                    )
                };
                let after = self.ms(500, 1500);
                self.watch(&mut p, after, &what).await?;
                if *kind == Kind::StopContKill {
                    self.kill_under_load(&mut p, load, &client).await?;
                    format!("{pause} after {before:?}, SIGKILL {after:?} after SIGCONT")
                } else {
                    let fresh = read_duplicates(&client).await;
                    p.signal("TERM")?;
                    load.ctx.stop.store(true, SeqCst);
                    let Some(st) = p.wait_exit(Duration::from_secs(30)).await else {
                        return Err(format!(
                            "{what}: no exit within 30 s of SIGTERM\n{}",
                            p.log_tail(40)
                        ));
                    };
                    verify_exit(st, &Cause::Term, &p)?;
                    let polled = load.finish().await?;
                    self.add_dups(fresh.or(polled));
                    self.stats.clean_exits += 1;
                    format!("{pause} after {before:?}, SIGTERM {after:?} after SIGCONT: exit 0")
                }
            }
            Kind::RecoveryKill => unreachable!("handled above"),
        };
        Ok(outcome)
    }

    /// Resends every create and cancel whose outcome is still unknown, with
    /// the same key, until each is answered.
    async fn resolve_unknowns(&mut self, client: &Client, final_cycle: usize) -> Vec<String> {
        let mut v = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        let ctx = Arc::new(OpCtx {
            client: client.clone(),
            ledger: self.ledger.clone(),
            cycle: final_cycle,
            seed: self.profile.seed,
            cancels: false,
            customers: self.customers.clone(),
            disrupted: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        });
        loop {
            let ops: Vec<Op> = {
                let mut l = self.lock();
                let mut ops: Vec<Op> = l
                    .retry
                    .drain(..)
                    .map(|(i, _)| Op::Create { i, wait: false })
                    .collect();
                l.tally.create_resent += ops.len();
                ops.extend(
                    l.cancel_retry
                        .drain(..)
                        .map(|(id, _)| Op::Cancel { id, retry: true }),
                );
                ops
            };
            if ops.is_empty() {
                return v;
            }
            if Instant::now() > deadline {
                v.push(format!(
                    "{} requests never got an answer after the final restart",
                    ops.len()
                ));
                return v;
            }
            par_map(ops, |op| {
                let ctx = ctx.clone();
                async move { ctx.run(op).await }
            })
            .await;
        }
    }

    async fn run(mut self) -> Report {
        let kinds = schedule(&mut self.rng, &self.profile);
        println!(
            "crash_cycle[{}]: seed {} (replay with DURASAGA_SEED={}), {} cycles, data {}",
            self.profile.name,
            self.profile.seed,
            self.profile.seed,
            kinds.len(),
            self.root.display()
        );
        let mut violations = Vec::new();
        let mut cycles_done = 0;
        for (cycle, kind) in kinds.iter().enumerate() {
            let t = Instant::now();
            let before = self.lock().tally.clone();
            let r = self.cycle(cycle, kind).await;
            let after = self.lock().tally.clone();
            match r {
                Ok(outcome) => {
                    cycles_done += 1;
                    println!(
                        "cycle {:>3}/{} {:<45} {outcome}; POST /orders {} ({} ok, {} failed, {} unknown, {} not sent), cancels {}; {:?}",
                        cycle + 1,
                        kinds.len(),
                        kind.label(),
                        after.create_sent - before.create_sent,
                        after.create_ok - before.create_ok,
                        after.create_failed - before.create_failed,
                        after.create_unknown - before.create_unknown,
                        after.create_not_sent - before.create_not_sent,
                        after.cancel_sent - before.cancel_sent,
                        t.elapsed()
                    );
                }
                Err(e) => {
                    violations.push(format!("cycle {} ({}): {e}", cycle + 1, kind.label()));
                    break;
                }
            }
        }
        let (final_v, summary) = self.final_phase(kinds.len(), cycles_done).await;
        violations.extend(final_v);
        let lv = std::mem::take(&mut self.lock().violations);
        let mut all = lv;
        all.extend(violations);
        let summary = format!("{summary}\n  violations: {}", all.len());
        Report {
            violations: all,
            summary,
            root: self.root.clone(),
        }
    }

    /// Restart, heal, wait for quiescence, check; returns violations and the
    /// summary.
    async fn final_phase(&mut self, cycles: usize, cycles_done: usize) -> (Vec<String>, String) {
        let mut v: Vec<String> = Vec::new();
        let mut p = match self.spawn(None, false) {
            Ok(p) => p,
            Err(e) => return (vec![e], String::new()),
        };
        let client = match start_and_wait(&mut p, Duration::from_secs(120)).await {
            Ok(Started::Ready(c)) => c,
            Ok(Started::Exited(st)) => {
                v.push(format!(
                    "final restart: the child exited: {st:?}\n{}",
                    p.log_tail(40)
                ));
                return (v, String::new());
            }
            Err(e) => {
                v.push(format!("final restart: {e}"));
                return (v, String::new());
            }
        };
        let healed_at = Instant::now();
        v.extend(self.resolve_unknowns(&client, cycles + 1).await);

        // Every order a client was told about settles, as it was asked for.
        let acked: HashMap<String, (String, i64)> = self
            .lock()
            .reqs
            .iter()
            .filter_map(|r| Some((r.id.clone()?, (r.customer.clone(), r.total))))
            .collect();
        let ids: Vec<String> = acked.keys().cloned().collect();
        let got = par_map(ids, |id| {
            let client = client.clone();
            async move {
                let r = client.get_order(&id, 20).await;
                (id, r)
            }
        })
        .await;
        for (id, r) in got {
            let (customer, total) = &acked[&id];
            match r {
                Ok(Some(o)) => {
                    if o["customerId"] != customer.as_str()
                        || cents(&o["orderTotal"]).ok() != Some(*total)
                    {
                        v.push(format!(
                            "acknowledged order {id} changed: asked {customer} {total}c, stored {o}"
                        ));
                    }
                }
                Ok(None) => v.push(format!("acknowledged order {id} was lost (404)")),
                Err(e) => v.push(format!("GET /orders/{id}: {e:#}")),
            }
        }

        // Quiescence: no PENDING order, no active saga; FAILED sagas (a step
        // out of attempts) are retried as an operator would.
        let mut operator_retries: BTreeMap<String, u32> = BTreeMap::new();
        let mut stuck_failed: Vec<Value> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let failed = client
                .list_all("/sagas?state=FAILED", "sagas")
                .await
                .unwrap_or_default();
            let mut active = Vec::new();
            for st in ACTIVE_SAGA_STATES {
                match client
                    .list_all(&format!("/sagas?state={st}"), "sagas")
                    .await
                {
                    Ok(l) => active.extend(l),
                    Err(e) => v.push(format!("GET /sagas?state={st}: {e:#}")),
                }
            }
            let pending = client
                .list_all("/orders?state=PENDING", "orders")
                .await
                .unwrap_or_default();
            if failed.is_empty() && active.is_empty() && pending.is_empty() {
                break;
            }
            let hopeless = failed.iter().all(|s| {
                s["sagaId"]
                    .as_str()
                    .and_then(|id| operator_retries.get(id))
                    .is_some_and(|n| *n >= 3)
            });
            if Instant::now() > deadline || (active.is_empty() && hopeless) {
                for s in active.iter().take(20) {
                    v.push(format!(
                        "saga {} stuck in {} (attempt {}, deadline {}, error {}) after the final restart",
                        s["sagaId"], s["state"], s["attempt"], s["deadline"], s["error"]
                    ));
                }
                for o in pending.iter().take(20) {
                    v.push(format!(
                        "order {} still PENDING after the final restart",
                        o["orderId"]
                    ));
                }
                if !active.is_empty() || !pending.is_empty() {
                    v.push(format!(
                        "no quiescence: {} active sagas, {} FAILED, {} PENDING orders",
                        active.len(),
                        failed.len(),
                        pending.len()
                    ));
                }
                // FAILED is terminal by design (an operator's to retry); one
                // that the operator's retries cannot finish is a finding,
                // reported below, not a data violation.
                stuck_failed = failed;
                break;
            }
            for s in &failed {
                let id = s["sagaId"].as_str().unwrap_or_default().to_owned();
                let n = operator_retries.entry(id.clone()).or_default();
                if *n >= 3 {
                    continue;
                }
                *n += 1;
                let r = client
                    .http
                    .post(format!("{}/sagas/{id}/retry", client.url))
                    .send()
                    .await;
                if !matches!(&r, Ok(r) if r.status().is_success()) {
                    v.push(format!("POST /sagas/{id}/retry failed: {r:?}"));
                }
            }
            if let Some(o) = pending.first().and_then(|o| o["orderId"].as_str()) {
                let _ = client.get_order(o, 2).await;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let quiesced_in = healed_at.elapsed();

        // What is stored: each order exactly once, and only orders asked for.
        let orders = match client.list_all("/orders", "orders").await {
            Ok(o) => o,
            Err(e) => {
                v.push(format!("GET /orders: {e:#}"));
                Vec::new()
            }
        };
        let sagas = match client.list_all("/sagas", "sagas").await {
            Ok(s) => s,
            Err(e) => {
                v.push(format!("GET /sagas: {e:#}"));
                Vec::new()
            }
        };
        let unresolved = self.lock().reqs.iter().filter(|r| r.id.is_none()).count();
        let mut seen = HashSet::new();
        let mut unasked = 0;
        for o in &orders {
            let id = o["orderId"].as_str().unwrap_or_default().to_owned();
            if !seen.insert(id.clone()) {
                v.push(format!("order {id} appears twice in GET /orders"));
            }
            if !acked.contains_key(&id) {
                unasked += 1;
            }
        }
        if unasked > unresolved {
            v.push(format!(
                "{unasked} stored orders were never acknowledged, but only {unresolved} requests stayed unresolved"
            ));
        }
        for id in acked.keys() {
            if !seen.contains(id) {
                v.push(format!(
                    "acknowledged order {id} is missing from GET /orders"
                ));
            }
        }

        // Each order agrees with its sagas and with what clients asked.
        let cancels = self.lock().cancels.clone();
        let saga_by_id: HashMap<&str, &Value> = sagas
            .iter()
            .filter_map(|s| Some((s["sagaId"].as_str()?, s)))
            .collect();
        let stuck_ids: HashSet<&str> = stuck_failed
            .iter()
            .filter_map(|s| s["sagaId"].as_str())
            .collect();
        let order_state: HashMap<&str, &Value> = orders
            .iter()
            .filter_map(|o| Some((o["orderId"].as_str()?, &o["orderState"])))
            .collect();
        let findings: Vec<String> = stuck_failed
            .iter()
            .map(|s| {
                let oid = s["orderId"].as_str().unwrap_or_default();
                format!(
                    "FINDING: {} saga {} still FAILED after {} operator retries (error {}); its order is {}; history: {}",
                    s["kind"],
                    s["sagaId"],
                    s["sagaId"]
                        .as_str()
                        .and_then(|id| operator_retries.get(id))
                        .copied()
                        .unwrap_or(0),
                    s["error"],
                    order_state.get(oid).copied().unwrap_or(&Value::Null),
                    s["history"]
                        .as_array()
                        .map(|h| {
                            h.iter()
                                .map(|e| format!("{}/{}#{}", e["cause"].as_str().unwrap_or("?"), e["state"].as_str().unwrap_or("?"), e["attempt"]))
                                .collect::<Vec<_>>()
                                .join(" > ")
                        })
                        .unwrap_or_default()
                )
            })
            .collect();
        let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
        for o in &orders {
            let id = o["orderId"].as_str().unwrap_or_default();
            let state = o["orderState"].as_str().unwrap_or("?");
            *by_state.entry(state.to_owned()).or_default() += 1;
            if let Some(r) = o["rejectionReason"].as_str() {
                *by_reason.entry(r.to_owned()).or_default() += 1;
            }
            let ghost = o["customerId"] == GHOST;
            let reason_ok = match state {
                "APPROVED" | "CANCELLED" => o["rejectionReason"].is_null() && !ghost,
                "REJECTED" => match o["rejectionReason"].as_str() {
                    Some("UNKNOWN_CUSTOMER") => ghost,
                    Some("INSUFFICIENT_CREDIT" | "CREDIT_CHECK_TIMEOUT") => !ghost,
                    _ => false,
                },
                _ => false,
            };
            if !reason_ok {
                v.push(format!("order {id} ended wrongly: {o}"));
            }
            let create = saga_by_id.get(id).copied();
            let want = match state {
                "CANCELLED" => "APPROVED",
                s => s,
            };
            match create {
                Some(s) if s["state"] == want && s["rejectionReason"] == o["rejectionReason"] => {}
                Some(s) if s["state"] == "FAILED" && stuck_ids.contains(id) => {}
                Some(s) => v.push(format!(
                    "order {id} is {state} ({}) but its CreateOrder saga is {} ({})",
                    o["rejectionReason"], s["state"], s["rejectionReason"]
                )),
                None => v.push(format!("order {id} has no CreateOrder saga")),
            }
            let cancel_saga = saga_by_id.get(format!("{id}:cancel").as_str()).copied();
            match (state, cancels.get(id), cancel_saga) {
                ("CANCELLED", Some(_), Some(s)) if s["state"] == "CANCELLED" => {}
                (_, _, Some(s))
                    if s["state"] == "FAILED"
                        && stuck_ids.contains(format!("{id}:cancel").as_str()) => {}
                ("CANCELLED", None, _) => v.push(format!(
                    "order {id} is CANCELLED but no client cancelled it"
                )),
                ("CANCELLED", _, s) => v.push(format!(
                    "order {id} is CANCELLED but its CancelOrder saga is {:?}",
                    s.map(|s| s["state"].clone())
                )),
                (_, Some(true), _) => v.push(format!(
                    "cancel of order {id} was acknowledged but the order is {state}"
                )),
                (_, _, Some(s)) => v.push(format!(
                    "order {id} is {state} but has a CancelOrder saga in {}",
                    s["state"]
                )),
                _ => {}
            }
        }
        // An asked-for cancel that never reached the order leaves nothing.
        for (id, acked_cancel) in &cancels {
            if *acked_cancel && !seen.contains(id) {
                v.push(format!("cancelled order {id} is missing"));
            }
        }

        // Credit adds up, per customer (limit - available == Σ APPROVED).
        match credit_violations(&client, &self.customers).await {
            Ok(c) => v.extend(c),
            Err(e) => v.push(format!("credit check: {e:#}")),
        }
        // The order-history view catches up with the orders.
        v.extend(self.view_matches(&client, &orders).await);

        // Outboxes drain: an entity removes delivered messages from its
        // outbox when it commits again or passivates; wait until every entity
        // actor has passivated, so `check` sees no message still pending.
        let drain_started = Instant::now();
        let drain_deadline = drain_started + Duration::from_secs(20);
        let mut not_passivated = String::new();
        loop {
            let active = read_metric(&client, "durasaga_active_actors").await;
            if active == Some(0.0) {
                break;
            }
            if Instant::now() > drain_deadline {
                // Not a data invariant (`check` below judges the outboxes),
                // but idle entities should passivate: reported.
                not_passivated = metrics_text(&client)
                    .await
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with("durasaga_active_actors{"))
                    .collect::<Vec<_>>()
                    .join(", ");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let drained_in = drain_started.elapsed();

        // Saga statistics.
        let mut timeouts = 0;
        let mut timeout_sagas = 0;
        let mut step_retries = 0;
        let mut compensations = 0;
        let mut exhausted = 0;
        for s in &sagas {
            let h = s["history"].as_array().cloned().unwrap_or_default();
            let t = h.iter().filter(|e| e["cause"] == "Timeout").count();
            timeouts += t;
            timeout_sagas += usize::from(t > 0);
            step_retries += h.iter().filter(|e| e["cause"] == "Retry").count();
            exhausted += h
                .iter()
                .filter(|e| e["cause"] == "RetriesExhausted")
                .count();
            if s["kind"] == "CreateOrder" && h.iter().any(|e| e["state"] == "RELEASING_CREDIT") {
                compensations += 1;
            }
        }
        let cancel_sagas = sagas.iter().filter(|s| s["kind"] == "CancelOrder").count();

        // Clean stop, then the offline checker.
        let fresh_dups = read_duplicates(&client).await;
        self.add_dups(fresh_dups);
        let mut check_out = String::from("(not run)");
        match p.signal("TERM") {
            Err(e) => v.push(e),
            Ok(()) => match p.wait_exit(Duration::from_secs(30)).await {
                None => v.push(format!(
                    "no exit within 30 s of the final SIGTERM\n{}",
                    p.log_tail(40)
                )),
                Some(st) => {
                    if let Err(e) = verify_exit(st, &Cause::Term, &p) {
                        v.push(format!("final stop: {e}"));
                    }
                    match Command::new(&self.exe)
                        .args(["check", "--data-dir"])
                        .arg(&self.data)
                        .output()
                    {
                        Ok(out) => {
                            let text = format!(
                                "{}{}",
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr)
                            );
                            if !out.status.success() || !text.contains("0 violations") {
                                v.push(format!(
                                    "durasaga check --data-dir failed ({}):\n{}",
                                    out.status,
                                    text.lines().take(40).collect::<Vec<_>>().join("\n")
                                ));
                            }
                            let lines: Vec<&str> = text.trim().lines().collect();
                            check_out = match lines.as_slice() {
                                [] => "(no output)".to_owned(),
                                [one] => (*one).to_owned(),
                                [first, .., last] => format!("{first} | {last}"),
                            };
                        }
                        Err(e) => v.push(format!("cannot run durasaga check: {e}")),
                    }
                }
            },
        }

        // Recovery reports from the child logs: redeliveries, undecodable records.
        let (mut reports, mut resent, mut undecodable) = (0, 0u64, 0u64);
        if let Ok(rd) = std::fs::read_dir(&self.logs) {
            for e in rd.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                for line in text.lines().filter(|l| l.contains("recovery done")) {
                    reports += 1;
                    resent += field(line, "outbox_envelopes: ");
                    undecodable += field(line, "undecodable_records: ");
                }
            }
        }
        if undecodable > 0 {
            v.push(format!("{undecodable} records did not decode at recovery"));
        }

        let l = self.lock();
        let t = &l.tally;
        let s = &self.stats;
        let startup = if s.startups_ms.is_empty() {
            "n/a".to_owned()
        } else {
            let mut st = s.startups_ms.clone();
            st.sort_unstable();
            format!(
                "median {} ms, max {} ms",
                st[st.len() / 2],
                st[st.len() - 1]
            )
        };
        let dups = if s.dups_unread > 0 {
            format!(
                "{} (from {} incarnations; {} ended before a reading)",
                s.dups_dropped,
                self.incarnation - s.dups_unread,
                s.dups_unread
            )
        } else {
            format!("{}", s.dups_dropped)
        };
        let summary = format!(
            "crash_cycle[{name}] summary\n  seed: {seed} (replay with DURASAGA_SEED={seed})\n  \
             cycles: {cycles_done}/{cycles} in {elapsed:?}; child start-ups {startup}\n  \
             crashes by kind: {crashes:?}\n  \
             crash points hit: {hit:?} ({in_startup} of them during start-up); armed but not reached: {missed:?}\n  \
             kills during start-up: {rk_before} before ready, {rk_after} after ready; SIGSTOPs: {stops} ({stopped} ms stopped; {stutters} stutter sequences); clean SIGTERM exits: {clean}\n  \
             sagas attempted (distinct POST /orders keys): {keys}; acknowledged: {acked}; never resolved: {unresolved}\n  \
             POST /orders sent {sent}: ok {ok}, failed {failed}, unknown {unknown}, not sent {not_sent}; resent with the same key {resent_keys} (at most {max_sends} sends of one key)\n  \
             cancels sent {csent}: ok {cok}, failed {cfailed}, unknown {cunknown}, resent and found done (409 CANCELLED) {cdone}; CancelOrder sagas {cancel_sagas}\n  \
             orders {orders_n}: {by_state:?}; rejection reasons {by_reason:?}\n  \
             redeliveries (outbox envelopes re-sent at {reports} recoveries): {resent}; duplicates suppressed (durasaga_duplicates_dropped_total): {dups}\n  \
             timeouts: {timeouts} in {timeout_sagas} sagas; step retries: {step_retries}; retries exhausted: {exhausted}; compensations (CreateOrder sagas through RELEASING_CREDIT): {compensations}; FAILED sagas retried by the harness (operator): {op_retries}, still FAILED after that: {stuck_n}\n  \
             quiescence {quiesced_in:?} after the final restart; {drained}\n  \
             durasaga check: {check_out}",
            name = self.profile.name,
            seed = self.profile.seed,
            elapsed = self.started.elapsed(),
            crashes = s.crashes,
            hit = s.points_hit,
            in_startup = s.points_hit_in_startup,
            missed = s.points_not_reached,
            rk_before = s.recovery_kills_before_ready,
            rk_after = s.recovery_kills_after_ready,
            stops = s.sigstops,
            stutters = s.stutters,
            stopped = s.stopped_ms,
            clean = s.clean_exits,
            keys = l.reqs.len(),
            acked = acked.len(),
            sent = t.create_sent,
            ok = t.create_ok,
            failed = t.create_failed,
            unknown = t.create_unknown,
            not_sent = t.create_not_sent,
            resent_keys = t.create_resent,
            max_sends = l.reqs.iter().map(|r| r.sends).max().unwrap_or(0),
            csent = t.cancel_sent,
            cok = t.cancel_ok,
            cfailed = t.cancel_failed,
            cunknown = t.cancel_unknown,
            cdone = t.cancel_done_earlier,
            orders_n = orders.len(),
            op_retries = operator_retries.len(),
            stuck_n = findings.len(),
            drained = if not_passivated.is_empty() {
                format!("every entity passivated {drained_in:?} later")
            } else {
                format!("WARNING: entity actors still active {drained_in:?} later (idle timeout 1 s): {not_passivated}")
            },
        );
        drop(l);
        let mut summary = summary;
        for f in findings.iter().take(10) {
            summary.push_str("\n  ");
            summary.push_str(f);
        }
        (v, summary)
    }

    /// Polls each customer's order-history view until it lists exactly the
    /// customer's orders (state, total, reason), with a deadline.
    async fn view_matches(&self, client: &Client, orders: &[Value]) -> Vec<String> {
        let mut want: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for c in self.customers.iter() {
            want.entry(c.clone()).or_default();
        }
        for o in orders {
            let c = o["customerId"].as_str().unwrap_or_default().to_owned();
            if c == GHOST {
                continue;
            }
            want.entry(c).or_default().insert(
                o["orderId"].as_str().unwrap_or_default().to_owned(),
                json!([
                    o["orderState"],
                    cents(&o["orderTotal"]).ok(),
                    o["rejectionReason"]
                ]),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut diffs = Vec::new();
            for (c, w) in &want {
                let r = client
                    .http
                    .get(format!("{}/customers/{c}/orderhistory", client.url))
                    .send()
                    .await;
                let body: Value = match r {
                    Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
                    Ok(r) => {
                        diffs.push(format!(
                            "GET /customers/{c}/orderhistory answered {}",
                            r.status()
                        ));
                        continue;
                    }
                    Err(e) => {
                        diffs.push(format!("GET /customers/{c}/orderhistory: {e}"));
                        continue;
                    }
                };
                let got: BTreeMap<String, Value> = body["orders"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|o| {
                        (
                            o["orderId"].as_str().unwrap_or_default().to_owned(),
                            json!([
                                o["orderState"],
                                cents(&o["orderTotal"]).ok(),
                                o["rejectionReason"]
                            ]),
                        )
                    })
                    .collect();
                if got != *w {
                    let missing = w.keys().filter(|k| !got.contains_key(*k)).count();
                    let extra = got.keys().filter(|k| !w.contains_key(*k)).count();
                    let differ = w
                        .iter()
                        .filter(|(k, x)| got.get(*k).is_some_and(|g| g != *x))
                        .count();
                    diffs.push(format!(
                        "order-history view of customer {c}: {missing} orders missing, {extra} extra, {differ} differ"
                    ));
                }
            }
            if diffs.is_empty() {
                return diffs;
            }
            if Instant::now() > deadline {
                return diffs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The number after `key` in a log line (0 if absent).
fn field(line: &str, key: &str) -> u64 {
    line.split(key)
        .nth(1)
        .map(|s| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
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

/// Copies the binary under test into `root` (a concurrent `cargo build`
/// without the feature would replace `target/debug/durasaga` mid-run) and
/// checks that the copy has crash points: armed at `during_recovery`, it must
/// abort at start-up.
async fn prepare_binary(root: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_BIN_EXE_durasaga"));
    // Not named `durasaga`: a `pkill`/`killall` of that name elsewhere on
    // the machine must not hit the children of this test.
    let exe = root.join("durasaga-crash-cycle");
    std::fs::copy(src, &exe).map_err(|e| format!("copy {}: {e}", src.display()))?;
    let dir = root.join("preflight");
    let env = [
        ("DURASAGA_CRASH_AT".to_owned(), "during_recovery".to_owned()),
        ("DURASAGA_CRASH_AFTER".to_owned(), "1".to_owned()),
    ];
    let mut p = Proc::spawn(&exe, &dir, &root.join("preflight.log"), &env)?;
    let st = p.wait_exit(Duration::from_secs(60)).await;
    let _ = p.sigkill();
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
    match st {
        Some(st) if st.signal() == Some(6) => Ok(exe),
        other => Err(format!(
            "{} has no crash points (armed at during_recovery it did not abort: {other:?}): \
             it was not built with --features failpoints. Another cargo build may have replaced \
             it after this test was built; rerun (or use a separate CARGO_TARGET_DIR).",
            src.display()
        )),
    }
}

/// Prints the seed if the test panics anywhere, and keeps its directory.
struct SeedGuard {
    seed: u64,
    dir: Option<tempfile::TempDir>,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                eprintln!(
                    "crash_cycle: data and child logs kept at {}",
                    kept.display()
                );
            }
            eprintln!(
                "crash_cycle FAILED: replay with DURASAGA_SEED={}",
                self.seed
            );
        }
    }
}

async fn run_profile(profile: Profile) -> (Report, SeedGuard) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_owned();
    let guard = SeedGuard {
        seed: profile.seed,
        dir: Some(dir),
    };
    let exe = prepare_binary(&root)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = Harness::new(profile, &root, exe).run().await;
    (report, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_cycles_keep_every_invariant() {
    let profile = Profile {
        name: "crash_cycles",
        seed: env_seed(),
        cycles: env_cycles(30),
        cancels: true,
        stop_cont_only: false,
        extra_env: Vec::new(),
    };
    let seed = profile.seed;
    let (report, _guard) = run_profile(profile).await;
    println!("{}", report.summary);
    if !report.violations.is_empty() {
        for x in report.violations.iter().take(60) {
            eprintln!("VIOLATION: {x}");
        }
        panic!(
            "{} invariant violations (data and child logs kept at {}); replay with DURASAGA_SEED={seed}",
            report.violations.len(),
            report.root.display()
        );
    }
}

/// The deliberately broken build: `DURASAGA_TEST_SKIP_DEDUP=1` makes the
/// child skip its inbox dedup check and forget customer decisions, so a
/// redelivered or retried `ReserveCredit` reserves credit twice. SIGSTOP
/// cycles make the credit step time out and retry; the harness must see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a demonstration that the harness catches a broken build (~1 min); run with -- --ignored broken_build_is_caught"]
async fn broken_build_is_caught() {
    let profile = Profile {
        name: "broken_build",
        seed: env_seed(),
        cycles: 6,
        cancels: false,
        stop_cont_only: true,
        extra_env: vec![("DURASAGA_TEST_SKIP_DEDUP", "1")],
    };
    let (report, mut guard) = run_profile(profile).await;
    println!("{}", report.summary);
    for x in report.violations.iter().take(30) {
        println!("caught: {x}");
    }
    assert!(
        !report.violations.is_empty(),
        "the harness did not catch the broken (no dedup) build"
    );
    // Expected to fail the invariants: no need to keep the directory.
    guard.dir = None;
}
