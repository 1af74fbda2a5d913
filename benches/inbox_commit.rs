//! Inbox append + commit + group flush with 1, 16 and 256 concurrent writers
//! (durability `flush`, the default). Each iteration is one durable append
//! per writer; throughput is reported in appends per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use durasaga::domain::{Address, CustomerId, Envelope, OrderId, Payload, SCHEMA_VERSION};
use durasaga::persistence::{Durability, ServiceDb};
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(ServiceDb::open(dir.path(), "bench", Durability::Flush, 64 << 20).unwrap());
    let next = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("inbox_commit");
    group.sample_size(20);
    for writers in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(writers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                b.to_async(&rt).iter(|| {
                    let db = db.clone();
                    let next = next.clone();
                    async move {
                        let tasks: Vec<_> = (0..writers)
                            .map(|w| {
                                let db = db.clone();
                                let id = next.fetch_add(1, Ordering::Relaxed) as u128;
                                tokio::spawn(async move {
                                    let env = envelope(id, &format!("c{w}"));
                                    let (_, ticket) = db.inbox_append(&env).unwrap();
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

criterion_group!(benches, bench);
criterion_main!(benches);
