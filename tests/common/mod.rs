//! Shared test helpers: an in-process durasaga on port 0 with a fresh data
//! directory per test (zero-to-production's `spawn_app`).
#![allow(dead_code)]

use durasaga::actors::Runtime;
use durasaga::config::Settings;
use durasaga::harness::Client;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running in-process app.
pub struct TestApp {
    pub rt: Arc<Runtime>,
    pub client: Client,
    pub url: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Starts durasaga with the defaults plus `patch` (a JSON object of settings).
pub async fn spawn_app_with(patch: serde_json::Value) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings::defaults()
        .with(serde_json::json!({"storage": {"data_dir": dir.path()}, "http": {"bind": "127.0.0.1:0"}}))
        .and_then(|s| s.with(patch))
        .expect("settings");
    let _ = durasaga::metrics::prometheus();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let rt = Runtime::start(settings).await.expect("runtime");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(durasaga::http::serve(rt.clone(), listener, async move {
        let _ = rx.await;
    }));
    TestApp {
        rt,
        client: Client::new(&url),
        url,
        dir,
        stop: Some(tx),
        server: Some(server),
    }
}

/// Starts durasaga with the default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(serde_json::json!({})).await
}

impl TestApp {
    /// Stops HTTP and the runtime, keeping the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self.rt
            .shutdown(std::time::Duration::from_secs(5))
            .await
            .expect("shutdown");
        self.dir
    }
}

/// The longest any helper here waits for a condition.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// One app (and one set of armed faults) at a time in a test process: the
/// fault flags in `durasaga::fault` are process-global.
static ONE_APP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Disarms every fault when dropped, even while a failed test unwinds.
struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        durasaga::fault::set_customer_silent(false);
        durasaga::fault::arm_customer_panics(0);
    }
}

/// Waits until a stopped app's actors have left ractor's global registry,
/// so that the next app can register the same names.
pub async fn wait_unregistered() {
    let deadline = std::time::Instant::now() + WAIT;
    while !ractor::registry::registered().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stopped app's actors are still registered: {:?}",
            ractor::registry::registered()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// This process's one app slot: held while an app runs; dropping it
/// disarms the faults.
pub struct Exclusive {
    _disarm: Disarm,
    _lock: tokio::sync::MutexGuard<'static, ()>,
}

/// Waits for the one app slot of the process (see [`Exclusive`]).
pub async fn exclusive() -> Exclusive {
    let lock = ONE_APP.lock().await;
    Exclusive {
        _disarm: Disarm,
        _lock: lock,
    }
}

/// Runs `test` against a fresh app started with the settings `patch` (one
/// app at a time in the process), then disarms the faults, stops the app
/// (even if `test` panicked) and waits until its names are released.
pub async fn with_app<F>(patch: serde_json::Value, test: F)
where
    F: for<'a> FnOnce(&'a TestApp) -> futures::future::BoxFuture<'a, ()>,
{
    use futures::FutureExt;
    let _one_at_a_time = ONE_APP.lock().await;
    let disarm = Disarm;
    let app = spawn_app_with(patch).await;
    let outcome = std::panic::AssertUnwindSafe(test(&app))
        .catch_unwind()
        .await;
    drop(disarm);
    app.stop().await;
    wait_unregistered().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Long-polls `GET /orders/{id}` until the order is no longer PENDING.
pub async fn settled_order(c: &Client, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = c
            .get_order(id, 10)
            .await
            .expect("GET order")
            .expect("order exists");
        if v["orderState"] != "PENDING" {
            return v;
        }
        assert!(Instant::now() < deadline, "order {id} still PENDING: {v}");
    }
}

/// Polls `GET /sagas/{id}` until the saga exists and `done` holds for it.
pub async fn saga_until(c: &Client, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll_saga(c, id, what, true, done).await
}

/// Polls `GET /sagas/{id}` of a saga that exists (every answer must be 200)
/// until it has ended.
pub async fn ended_saga(c: &Client, id: &str) -> Value {
    poll_saga(c, id, "ended", false, is_terminal_saga).await
}

async fn poll_saga(
    c: &Client,
    id: &str,
    what: &str,
    may_be_missing: bool,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = c
            .http
            .get(format!("{}/sagas/{id}", c.url))
            .send()
            .await
            .expect("GET /sagas/{id}");
        let s = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            s == 200 || (may_be_missing && s == 404),
            "GET /sagas/{id}: {s} {v}"
        );
        if s == 200 && done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "saga {id} never became {what}: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a saga (as `GET /sagas/{id}` shows it) has ended.
pub fn is_terminal_saga(v: &Value) -> bool {
    matches!(
        v["state"].as_str(),
        Some("APPROVED" | "REJECTED" | "CANCELLED" | "FAILED")
    )
}

/// A customer's `availableCredit` amount.
pub async fn available(c: &Client, customer: &str) -> String {
    let v = c.get_customer(customer).await.expect("customer");
    v["availableCredit"]["amount"]
        .as_str()
        .unwrap_or_else(|| panic!("no availableCredit in {v}"))
        .to_owned()
}
