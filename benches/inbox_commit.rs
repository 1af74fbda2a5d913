//! Durable commits + group flush with 1, 16 and 256 concurrent writers
//! (durability `flush`, the default). Each iteration is one durable write per
//! writer; throughput is reported in writes per second.
//!
//! - `inbox_commit`: an inbox append (what every hop cost until session 4;
//!   now only redelivered dead letters take this path);
//! - `record_commit`: an entity record with one envelope in its outbox, the
//!   single-key insert that a handled message costs on the saga path.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use durasaga::domain::{Address, CustomerId, Envelope, OrderId, Payload, SCHEMA_VERSION};
use durasaga::persistence::{Durability, EntityRecord, ServiceDb, Ticket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn envelope(id: u128, entity: &str) -> Envelope {
    let order_id = OrderId::parse(format!("o{id}")).unwrap();
    Envelope {
        id,
        kind: "ReserveCredit".into(),
        schema_version: SCHEMA_VERSION,
        from: Address::order(&order_id),
        to: Address::customer(&CustomerId::parse(entity).unwrap()),
        correlation: order_id.to_string(),
        reply_to: None,
        attempt: 1,
        sent_at: 0,
        payload: Payload::ReserveCredit {
            order_id,
            customer_id: CustomerId::parse(entity).unwrap(),
            amount: "12.34".parse().unwrap(),
        },
    }
}

/// One group: `writers` tasks each make one write with `op` and await its flush.
fn group<F>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, db: &Arc<ServiceDb>, op: F)
where
    F: Fn(&ServiceDb, u128, usize) -> Ticket + Send + Sync + Copy + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    for writers in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(writers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                b.to_async(rt).iter(|| {
                    let db = db.clone();
                    let next = next.clone();
                    async move {
                        let tasks: Vec<_> = (0..writers)
                            .map(|w| {
                                let db = db.clone();
                                let id = next.fetch_add(1, Ordering::Relaxed) as u128;
                                tokio::spawn(async move {
                                    let ticket = op(&db, id, w);
                                    db.durable(ticket).await.unwrap();
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                })
            },
        );
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let (rt, dir) = common::runtime_and_dir();
    let db = Arc::new(ServiceDb::open(dir.path(), "bench", Durability::Flush, 64 << 20).unwrap());
    group(c, &rt, "inbox_commit", &db, |db, id, w| {
        db.inbox_append(&envelope(id, &format!("c{w}"))).unwrap().1
    });
    group(c, &rt, "record_commit", &db, |db, id, w| {
        let rec = EntityRecord::<String> {
            state: Some(format!("customer {w}")),
            outbox: vec![envelope(id, &format!("c{w}"))],
            handled: id as u64,
            ..Default::default()
        };
        db.save(&format!("c{w}"), &rec).unwrap()
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
