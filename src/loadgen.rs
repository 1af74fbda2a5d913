//! `durasaga loadgen`: drives CreateOrder sagas through `POST /orders` with
//! `Prefer: wait` (each request covers a whole saga), shows progress, and
//! prints throughput, latency percentiles, outcomes and a credit check.

use crate::harness::{cents, Client};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub url: String,
    pub customers: usize,
    pub orders: Option<usize>,
    pub duration: Option<Duration>,
    pub concurrency: usize,
    pub credit_limit: String,
    /// Order totals are uniform in this range, in cents.
    pub amounts: (u64, u64),
    pub json: bool,
    pub wait_secs: u64,
}

/// Parses `MIN..MAX` (decimal amounts) into cents.
pub fn parse_amounts(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s
        .split_once("..")
        .context("amounts must look like 1.00..50.00")?;
    let c = |x: &str| -> anyhow::Result<u64> {
        let v = json!({"amount": x.trim()});
        u64::try_from(cents(&v)?).context("amount must not be negative")
    };
    let (lo, hi) = (c(a)?, c(b)?);
    if lo == 0 || lo > hi {
        bail!("amounts must be MIN..MAX with 0 < MIN <= MAX");
    }
    Ok((lo, hi))
}

struct Outcome {
    latency: Duration,
    customer: usize,
    total_cents: u64,
    order: Option<Value>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// Runs the load and prints the summary; errors if the end state is inconsistent.
pub async fn run(spec: LoadSpec) -> anyhow::Result<()> {
    let client = Client::new(&spec.url);
    client.wait_ready(Duration::from_secs(30)).await?;
    let mut customers = Vec::with_capacity(spec.customers);
    for i in 0..spec.customers {
        customers.push(
            client
                .create_customer(&format!("load customer {i}"), &spec.credit_limit)
                .await?,
        );
    }
    let customers = Arc::new(customers);
    let total = spec.orders.unwrap_or(usize::MAX);
    let deadline = spec.duration.map(|d| Instant::now() + d);
    let bar = if spec.json {
        indicatif::ProgressBar::hidden()
    } else {
        match spec.orders {
            Some(n) => indicatif::ProgressBar::new(n as u64),
            None => indicatif::ProgressBar::new_spinner(),
        }
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} sagas  {per_sec}  {elapsed_precise}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..spec.concurrency.max(1) {
        let client = client.clone();
        let customers = customers.clone();
        let next = next.clone();
        let bar = bar.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut errors = 0usize;
            let mut seed =
                0x9E37_79B9_7F4A_7C15u64 ^ (w as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let c = (seed as usize) % customers.len().max(1);
                let span = spec.amounts.1 - spec.amounts.0 + 1;
                let amount = spec.amounts.0 + (seed >> 20) % span;
                let t0 = Instant::now();
                let r = client
                    .create_order(
                        &customers[c],
                        &format!("{}.{:02}", amount / 100, amount % 100),
                        spec.wait_secs,
                    )
                    .await;
                let latency = t0.elapsed();
                match r {
                    Ok(v) => out.push(Outcome {
                        latency,
                        customer: c,
                        total_cents: amount,
                        order: Some(v),
                    }),
                    Err(_) => {
                        errors += 1;
                        out.push(Outcome {
                            latency,
                            customer: c,
                            total_cents: amount,
                            order: None,
                        })
                    }
                }
                bar.inc(1);
            }
            (out, errors)
        }));
    }
    let mut outcomes = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (o, e) = t.await?;
        outcomes.extend(o);
        errors += e;
    }
    let wall = started.elapsed();
    bar.finish_and_clear();

    // Resolve sagas that did not finish within the wait, then count.
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut approved_cents: HashMap<usize, i64> = HashMap::new();
    let mut completed = 0usize;
    let mut latencies = Vec::new();
    for o in &outcomes {
        let Some(order) = &o.order else { continue };
        let mut order = order.clone();
        if order["orderState"] == "PENDING" {
            let id = order["orderId"].as_str().unwrap_or_default().to_owned();
            if let Some(v) = client.get_order(&id, 30).await? {
                order = v;
            }
        } else {
            completed += 1;
            latencies.push(o.latency);
        }
        let state = order["orderState"].as_str().unwrap_or("?").to_owned();
        let key = match order["rejectionReason"].as_str() {
            Some(r) => format!("{state} {r}"),
            None => state.clone(),
        };
        *by_outcome.entry(key).or_insert(0) += 1;
        if state == "APPROVED" {
            *approved_cents.entry(o.customer).or_insert(0) += o.total_cents as i64;
        }
    }
    latencies.sort();
    let mut inconsistent = Vec::new();
    for (i, c) in customers.iter().enumerate() {
        let v = client.get_customer(c).await?;
        let held = cents(&v["creditLimit"])? - cents(&v["availableCredit"])?;
        let expected = approved_cents.get(&i).copied().unwrap_or(0);
        if held != expected {
            inconsistent.push(format!(
                "customer {c}: holds {held} cents, approved orders total {expected}"
            ));
        }
    }
    let rate = completed as f64 / wall.as_secs_f64().max(1e-9);
    let summary = json!({
        "target": spec.url,
        "customers": spec.customers,
        "concurrency": spec.concurrency,
        "sagas_attempted": outcomes.len(),
        "sagas_completed": completed,
        "errors": errors,
        "seconds": wall.as_secs_f64(),
        "sagas_per_second": rate,
        "latency_ms": {
            "p50": percentile(&latencies, 50.0),
            "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
        },
        "outcomes": by_outcome,
        "consistent": inconsistent.is_empty(),
    });
    if spec.json {
        println!("{summary}");
    } else {
        println!(
            "sagas completed   {completed} of {} attempted ({errors} errors) in {:.2} s",
            outcomes.len(),
            wall.as_secs_f64()
        );
        println!(
            "throughput        {rate:.0} sagas/s at concurrency {}",
            spec.concurrency
        );
        println!(
            "latency (ms)      p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            summary["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
            summary["latency_ms"]["p90"].as_f64().unwrap_or(0.0),
            summary["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            summary["latency_ms"]["max"].as_f64().unwrap_or(0.0)
        );
        for (k, n) in &by_outcome {
            println!("outcome           {k:<32} {n}");
        }
        println!(
            "credit check      {}",
            if inconsistent.is_empty() {
                "consistent"
            } else {
                "INCONSISTENT"
            }
        );
    }
    for i in &inconsistent {
        eprintln!("  {i}");
    }
    if !inconsistent.is_empty() {
        bail!("{} customers' credit does not add up", inconsistent.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse() {
        assert_eq!(parse_amounts("1.00..50.00").unwrap(), (100, 5000));
        assert_eq!(parse_amounts("2..2").unwrap(), (200, 200));
        assert!(parse_amounts("5..1").is_err());
        assert!(parse_amounts("0..1").is_err());
        assert!(parse_amounts("x").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
