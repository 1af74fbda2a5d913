//! The pure CreateOrder saga step: start, credit reserved, order approved.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use durasaga::domain::saga::{self, SagaInput};
use durasaga::domain::{CustomerId, OrderId, Payload, SagaId, SagaKind, SagaPolicy};

fn bench(c: &mut Criterion) {
    let policy = SagaPolicy::default();
    let order = OrderId::parse("01a22302c8e771b48cd9f63770b58cbf").unwrap();
    let customer = CustomerId::parse("01a22302c81d720990c476a2c015ea18").unwrap();
    let total = "12.34".parse().unwrap();
    c.bench_function("saga_step/start", |b| {
        b.iter(|| {
            saga::start(
                SagaId::create_order(&order),
                SagaKind::CreateOrder,
                order.clone(),
                customer.clone(),
                total,
                black_box(1_000),
                &policy,
            )
        })
    });
    let started = saga::start(
        SagaId::create_order(&order),
        SagaKind::CreateOrder,
        order.clone(),
        customer.clone(),
        total,
        1_000,
        &policy,
    );
    let reserved = SagaInput::Reply(Payload::CreditReserved {
        order_id: order.clone(),
    });
    c.bench_function("saga_step/credit_reserved", |b| {
        b.iter(|| saga::step(black_box(&started.state), &reserved, 1_005, 0.5, &policy))
    });
    let approving = saga::step(&started.state, &reserved, 1_005, 0.5, &policy);
    let approved = SagaInput::Reply(Payload::OrderApproved {
        order_id: order.clone(),
    });
    c.bench_function("saga_step/order_approved", |b| {
        b.iter(|| saga::step(black_box(&approving.state), &approved, 1_010, 0.5, &policy))
    });
    c.bench_function("saga_step/whole_saga", |b| {
        b.iter(|| {
            let s = saga::start(
                SagaId::create_order(&order),
                SagaKind::CreateOrder,
                order.clone(),
                customer.clone(),
                total,
                1_000,
                &policy,
            );
            let s = saga::step(&s.state, &reserved, 1_005, 0.5, &policy);
            saga::step(&s.state, &approved, 1_010, 0.5, &policy)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
