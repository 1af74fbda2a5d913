//! What one credit decision costs a customer record that holds N decisions
//! inline: the pure decision, the encoding of the whole record, its insert
//! and the group flush, one writer. The cost grows with N because the record
//! is rewritten whole on every commit (BENCHMARKS.md, "Throughput against
//! orders per customer"). Since session 5 the customer actor keeps at most
//! `INLINE_PIECES` (32) decisions inline and the rest as parts, so this
//! bench is what that avoids.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use durasaga::domain::{Customer, CustomerCommand, CustomerId, Money, OrderId};
use durasaga::persistence::{Durability, EntityRecord, ServiceDb};
use std::sync::atomic::{AtomicU64, Ordering};

fn customer_with(orders: usize) -> Customer {
    let id = CustomerId::parse("c1").unwrap();
    let mut c = Customer::new(
        id,
        "Bench".into(),
        Money::from_cents(1_000_000_000_000).unwrap(),
        0,
    );
    for n in 0..orders {
        c.handle(&CustomerCommand::ReserveCredit {
            order_id: OrderId::parse(format!("{n:032x}")).unwrap(),
            amount: Money::from_cents(1_000).unwrap(),
        });
    }
    c
}

fn bench(c: &mut Criterion) {
    let (rt, dir) = common::runtime_and_dir();
    let db = ServiceDb::open(dir.path(), "bench", Durability::Flush, 64 << 20).unwrap();
    let next = AtomicU64::new(1 << 40);
    let mut group = c.benchmark_group("customer_decision_commit");
    group.sample_size(20);
    for orders in [10usize, 1_000, 10_000] {
        let rec = EntityRecord {
            state: Some(customer_with(orders)),
            ..Default::default()
        };
        group.bench_with_input(BenchmarkId::from_parameter(orders), &orders, |b, _| {
            b.to_async(&rt).iter_batched(
                // Untimed: a customer with exactly `orders` decisions, and a new order.
                || {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    (rec.clone(), OrderId::parse(format!("{n:032x}")).unwrap())
                },
                |(mut rec, order_id)| {
                    let db = &db;
                    async move {
                        rec.state
                            .as_mut()
                            .unwrap()
                            .handle(&CustomerCommand::ReserveCredit {
                                order_id,
                                amount: Money::from_cents(1_000).unwrap(),
                            });
                        let ticket = db.save("c1", &rec).unwrap();
                        db.durable(ticket).await.unwrap();
                        rec
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
