//! `durasaga demo …`: narrated demonstrations of supervision and of crash
//! recovery, on temporary data directories.

use crate::actors::Runtime;
use crate::config::Settings;
use crate::domain::{Money, OrderState};
use crate::harness::{credit_violations, ChildServer, Client};
use anyhow::{bail, Context};
use std::time::{Duration, Instant};

fn temp_dir(tag: &str) -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "durasaga-demo-{tag}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn money(s: &str) -> anyhow::Result<Money> {
    s.parse::<Money>().map_err(|e| anyhow::anyhow!("{e}"))
}

/// A CustomerActor panics while handling `ReserveCredit`; its supervisor
/// restarts it, it reloads its state from sled, and the saga finishes.
pub async fn supervision(settings: Settings) -> anyhow::Result<()> {
    let dir = temp_dir("supervision")?;
    let settings = settings.with(serde_json::json!({"storage": {"data_dir": dir}}))?;
    println!("1. Starting durasaga on {}", dir.display());
    let rt = Runtime::start(settings).await?;
    let customer = rt
        .create_customer("Fred".into(), money("15.00")?, None)
        .await?;
    println!(
        "2. Created customer {} with a credit limit of 15.00",
        customer.id
    );
    crate::fault::arm_customer_panics(1);
    println!(
        "3. Armed an injected fault: the next ReserveCredit handled by a CustomerActor panics"
    );
    let order = rt
        .create_order(customer.id.clone(), money("12.34")?, None)
        .await?;
    println!(
        "4. Created order {} for 12.34 (PENDING); its saga sends ReserveCredit …",
        order.order.id
    );
    let id = order.order.id.to_string();
    let done = rt
        .wait_order(&id, Duration::from_secs(15), None, |v| {
            v.order.state.is_settled()
        })
        .await?;
    let restarts = rt
        .customers
        .restarts
        .load(std::sync::atomic::Ordering::SeqCst);
    println!("5. The CustomerActor panicked and its supervisor restarted it {restarts} time(s) (see the WARN log above)");
    let Some(done) = done else {
        bail!("order vanished")
    };
    // The order is settled; the saga ends when the order's reply reaches it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let saga = loop {
        let s = rt.get_saga(&id).await?.context("saga missing")?;
        if s.phase.is_terminal() || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("6. The restarted actor reloaded its state from sled and handled the message again.");
    println!("   Saga {} history:", saga.id);
    for h in &saga.history {
        println!(
            "     {:>14}  attempt {}  after {}",
            h.phase.as_str(),
            h.attempt,
            h.cause
        );
    }
    let c = rt
        .get_customer(customer.id.as_str())
        .await?
        .context("customer missing")?;
    println!(
        "7. Order {} is {}; available credit is {}",
        id,
        done.order.state.as_str(),
        c.available_credit()
    );
    rt.shutdown(Duration::from_secs(5)).await?;
    let _ = std::fs::remove_dir_all(&dir);
    if done.order.state != OrderState::Approved || restarts == 0 {
        bail!(
            "the demo did not go as expected: order {}, restarts {restarts}",
            done.order.state.as_str()
        );
    }
    println!("Done: supervision turned a crash into a retry, and the saga ended APPROVED.");
    Ok(())
}

/// Fires `orders` orders at a child `durasaga serve`, SIGKILLs it mid-flight,
/// restarts it on the same data and checks every order ends and credit adds up.
pub async fn crash(orders: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = temp_dir("crash")?;
    println!(
        "1. Starting `durasaga serve` as a child process on {}",
        dir.display()
    );
    let mut server = ChildServer::start(&exe, &dir, &[])?;
    let client = Client::new(&server.url);
    client.wait_ready(Duration::from_secs(30)).await?;
    let mut customers = Vec::new();
    for i in 0..20 {
        customers.push(
            client
                .create_customer(&format!("customer {i}"), "100.00")
                .await?,
        );
    }
    println!("2. Created 20 customers with a credit limit of 100.00 each");
    println!("3. Firing {orders} concurrent orders of 1.00–10.00 …");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    for i in 0..orders {
        let client = client.clone();
        let tx = tx.clone();
        let customer = customers[i % customers.len()].clone();
        tokio::spawn(async move {
            let amount = format!("{}.00", 1 + i % 10);
            let r = client.create_order(&customer, &amount, 0).await;
            let _ = tx.send(
                r.ok()
                    .and_then(|v| v["orderId"].as_str().map(str::to_owned)),
            );
        });
    }
    drop(tx);
    let mut acked = Vec::new();
    let mut answered = 0;
    while let Some(r) = rx.recv().await {
        answered += 1;
        acked.extend(r);
        if answered == orders / 3 {
            server.kill()?;
            println!(
                "4. SIGKILLed the server after {answered} answers ({:?} in)",
                started.elapsed()
            );
        }
    }
    println!(
        "   clients were told about {} orders; the rest failed with the connection",
        acked.len()
    );
    let mut server = ChildServer::start(&exe, &dir, &[])?;
    let client = Client::new(&server.url);
    client.wait_ready(Duration::from_secs(60)).await?;
    println!("5. Restarted on the same data dir; waiting for every order to end …");
    let mut lost = 0;
    for id in &acked {
        match client.get_order(id, 30).await? {
            Some(o) if o["orderState"] != "PENDING" => {}
            Some(o) => bail!("order {id} still PENDING after recovery: {o}"),
            None => lost += 1,
        }
    }
    let all = client.list_all("/orders", "orders").await?;
    let pending = all.iter().filter(|o| o["orderState"] == "PENDING").count();
    let approved = all.iter().filter(|o| o["orderState"] == "APPROVED").count();
    let rejected = all.iter().filter(|o| o["orderState"] == "REJECTED").count();
    let bad = credit_violations(&client, &customers).await?;
    println!(
        "6. {} orders stored: {approved} APPROVED, {rejected} REJECTED, {pending} PENDING; acknowledged but lost: {lost}",
        all.len()
    );
    for b in &bad {
        println!("   VIOLATION: {b}");
    }
    server.signal("TERM")?;
    server.wait(Duration::from_secs(20))?;
    let _ = std::fs::remove_dir_all(&dir);
    if lost > 0 || pending > 0 || !bad.is_empty() {
        bail!("crash recovery violated an invariant");
    }
    println!("7. Every acknowledged order survived, every order ended, and every customer's credit adds up.");
    Ok(())
}
