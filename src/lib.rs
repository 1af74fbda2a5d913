//! durasaga: sagas across microservices that survive `kill -9`.
//!
//! # Layout
//!
//! - [`domain`]: **pure** — money, ids, the Customer aggregate, the
//!   event-sourced Order, the CreateOrder/CancelOrder saga state machines and
//!   the message types. `(state, input, now) -> (state, messages, timers)`.
//! - [`persistence`]: sled 0.34.7 — one database per service, entity records
//!   that carry their outbox, durable inboxes, dead letters, the codec, key
//!   layouts and the group-commit flusher.
//! - [`actors`]: supervised ractor actors (one per customer, order and saga),
//!   the relays that move messages between databases, start-up recovery, and
//!   the [`actors::Runtime`] handle.
//! - [`http`]: the warp REST API; validation at the edge, errors mapped to
//!   statuses in one place.
//! - [`config`]: settings (defaults ← file ← environment ← flags).
//! - [`serve`], [`demo`], [`loadgen`], [`harness`]: the binary's commands and
//!   the child-process driver the demos, crash tests and load generator share.
//! - [`check`]: offline invariant checker and view rebuild over a data dir.
//! - [`scale`]: `durasaga fill`, data directories of a given size for the scale checks.
//! - [`fault`]: injected faults and named crash points (demos and tests).
//! - [`metrics`]: the Prometheus recorder.
//!
//! # Data flow of a CreateOrder saga
//!
//! `POST /orders` → the OrderActor commits `OrderCreated` with a
//! `StartCreateOrder` envelope in its outbox (one write), waits for the flush,
//! answers 201 → the order relay queues the envelope for the SagaActor and
//! wakes it → the saga commits its state with `ReserveCredit` in its outbox,
//! waits for the flush, and only then tells the order that its envelope is
//! delivered (the order drops it from its outbox) → relay → the
//! CustomerActor decides, commits its reservation with the reply → relay →
//! the saga commits `ApproveOrder` → relay → the OrderActor commits
//! `OrderApproved` and replies → the saga ends. Every hop is at-least-once
//! (an envelope stays in its sender's durable outbox until its receiver's
//! handling is durable, and is resent after a crash) and every handler is idempotent
//! (envelope-id dedup window plus per-order idempotent decisions), so every
//! effect is applied exactly once.
//!
//! # Dependency rule
//!
//! `domain` imports no tokio, sled, ractor or warp; `http` never imports
//! `persistence`; `persistence` never imports `actors`.
#![recursion_limit = "512"]
// No unwrap or expect on data from the network or the disk (tests may).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod actors;
pub mod check;
pub mod config;
pub mod demo;
pub mod domain;
pub mod fault;
pub mod harness;
pub mod http;
pub mod loadgen;
pub mod metrics;
pub mod persistence;
pub mod scale;
pub mod serve;
