//! Driving a real `durasaga serve` child process over HTTP: start it on a data
//! directory, learn its port, SIGKILL it, restart it, and the few API calls
//! the demos, crash tests and load generator share.
//!
//! Invariant: every wait here is for a condition (a line printed, a status
//! answered), bounded by a deadline; nothing sleeps and hopes.

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `durasaga serve` child process.
pub struct ChildServer {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
}

impl ChildServer {
    /// Starts `exe serve` on `data_dir` with a free port and waits until it
    /// prints its address. `env` is added to the child's environment.
    pub fn start(exe: &Path, data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env(
                "RUST_LOG",
                std::env::var("DURASAGA_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.strip_prefix("durasaga listening on ") {
                        let _ = tx.send(url.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Ok(Self {
                child,
                url,
                data_dir: data_dir.to_owned(),
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!("durasaga serve did not start within 60 s (exit: {status:?})")
            }
        }
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("kill -9")?;
        self.child.wait().context("wait after kill")?;
        Ok(())
    }

    /// Sends a signal (e.g. `SIGTERM`, `SIGSTOP`, `SIGCONT`) with `kill(1)`.
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?;
        if !st.success() {
            bail!("kill -{sig} failed");
        }
        Ok(())
    }

    /// Waits for the child to exit and returns its status.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("child did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small API client.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
}

impl Client {
    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
        }
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/health/ready", self.url))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates a customer and returns its id.
    pub async fn create_customer(&self, name: &str, limit: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/customers", self.url))
            .json(&json!({"name": name, "creditLimit": {"amount": limit}}))
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            return Err(refused("POST /customers", r).await);
        }
        let v: Value = r.json().await?;
        v["customerId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no customerId in {v}"))
    }

    /// Creates an order, waiting up to `wait_secs` for its saga; returns the order JSON.
    pub async fn create_order(
        &self,
        customer: &str,
        amount: &str,
        wait_secs: u64,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(format!("{}/orders", self.url))
            .json(&json!({"customerId": customer, "orderTotal": {"amount": amount}}));
        if wait_secs > 0 {
            req = req.header("Prefer", format!("wait={wait_secs}"));
        }
        let r = req.send().await?;
        if r.status().as_u16() != 201 {
            return Err(refused("POST /orders", r).await);
        }
        Ok(r.json().await?)
    }

    /// Reads an order, long-polling up to `wait_secs` until it is settled.
    pub async fn get_order(&self, id: &str, wait_secs: u64) -> anyhow::Result<Option<Value>> {
        let mut req = self.http.get(format!("{}/orders/{id}", self.url));
        if wait_secs > 0 {
            req = req.header("Prefer", format!("wait={wait_secs}"));
        }
        let r = req.send().await?;
        match r.status().as_u16() {
            200 => Ok(Some(r.json().await?)),
            404 => Ok(None),
            _ => Err(refused(&format!("GET /orders/{id}"), r).await),
        }
    }

    /// Reads a customer.
    pub async fn get_customer(&self, id: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}/customers/{id}", self.url))
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(refused(&format!("GET /customers/{id}"), r).await);
        }
        Ok(r.json().await?)
    }

    /// Every item of a paginated list endpoint (`items` is the array's key).
    pub async fn list_all(&self, path_and_query: &str, items: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let sep = if path_and_query.contains('?') {
                '&'
            } else {
                '?'
            };
            let mut url = format!("{}{path_and_query}{sep}limit=1000", self.url);
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let v: Value = self
                .http
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            out.extend(v[items].as_array().cloned().unwrap_or_default());
            match v["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => return Ok(out),
            }
        }
    }
}

/// Parses `{"amount": "12.34"}` into cents.
pub fn cents(v: &Value) -> anyhow::Result<i64> {
    let s = v["amount"]
        .as_str()
        .ok_or_else(|| anyhow!("no amount in {v}"))?;
    let d: rust_decimal::Decimal = s.parse().with_context(|| format!("bad amount {s}"))?;
    let c = (d * rust_decimal::Decimal::from(100)).trunc();
    i64::try_from(c).map_err(|_| anyhow!("amount out of range"))
}

/// Checks, for every customer, that `limit - available == Σ approved totals`;
/// returns a description of each customer that does not add up.
pub async fn credit_violations(
    client: &Client,
    customers: &[String],
) -> anyhow::Result<Vec<String>> {
    let orders = client.list_all("/orders", "orders").await?;
    let mut bad = Vec::new();
    for c in customers {
        let cust = client.get_customer(c).await?;
        let held = cents(&cust["creditLimit"])? - cents(&cust["availableCredit"])?;
        let approved: i64 = orders
            .iter()
            .filter(|o| o["customerId"] == c.as_str() && o["orderState"] == "APPROVED")
            .map(|o| cents(&o["orderTotal"]).unwrap_or(0))
            .sum();
        if held != approved || cents(&cust["availableCredit"])? < 0 {
            bad.push(format!(
                "customer {c}: holds {held} cents, approved orders total {approved} cents"
            ));
        }
    }
    Ok(bad)
}

/// Runs `exe check --data-dir dir` (the process must be stopped) and returns
/// whether it found nothing wrong, with its stdout and stderr.
pub fn check_data_dir(exe: &Path, dir: &Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new(exe)
        .arg("check")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .with_context(|| format!("cannot run {} check", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let clean = out.status.success() && stdout.contains("0 violations");
    Ok((clean, format!("{stdout}{stderr}")))
}

/// The error for a request the service did not answer as expected: its
/// status, and its error code and message if the body has them.
async fn refused(what: &str, r: reqwest::Response) -> anyhow::Error {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    match (
        body["error"]["code"].as_str(),
        body["error"]["message"].as_str(),
    ) {
        (Some(code), Some(message)) => anyhow!("{what} answered {status}: {code}: {message}"),
        _ => anyhow!("{what} answered {status}"),
    }
}
