//! A complete CreateOrder saga in process, without HTTP: create the order,
//! then wait until the saga has approved it. At 1 and 256 sagas in flight,
//! durability `flush`. Throughput is reported in sagas per second.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use durasaga::actors::Runtime;
use durasaga::config::Settings;
use durasaga::domain::Money;
use std::sync::Arc;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let (rt, dir) = common::runtime_and_dir();
    let settings = Settings::defaults()
        .with(serde_json::json!({"storage": {"data_dir": dir.path()}}))
        .unwrap();
    let system: Arc<Runtime> = rt.block_on(Runtime::start(settings)).unwrap();
    let limit: Money = "1000000000.00".parse().unwrap();
    let customers: Vec<_> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..256 {
            v.push(
                system
                    .create_customer(format!("bench {i}"), limit, None)
                    .await
                    .unwrap()
                    .id,
            );
        }
        v
    });
    let customers = Arc::new(customers);
    let total: Money = "1.00".parse().unwrap();
    let mut group = c.benchmark_group("saga_e2e");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for in_flight in [1usize, 256] {
        group.throughput(Throughput::Elements(in_flight as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(in_flight),
            &in_flight,
            |b, &n| {
                b.to_async(&rt).iter(|| {
                    let system = system.clone();
                    let customers = customers.clone();
                    async move {
                        let tasks: Vec<_> = (0..n)
                            .map(|i| {
                                let system = system.clone();
                                let customer = customers[i % customers.len()].clone();
                                tokio::spawn(async move {
                                    let o =
                                        system.create_order(customer, total, None).await.unwrap();
                                    let done = system
                                        .wait_order_after(&o, Duration::from_secs(30), |v| {
                                            v.order.state.is_settled()
                                        })
                                        .await
                                        .unwrap()
                                        .unwrap();
                                    assert!(done.order.state.is_settled());
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
    rt.block_on(system.shutdown(Duration::from_secs(5)))
        .unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
