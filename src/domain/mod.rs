//! The pure domain: money, ids, customers, event-sourced orders, the saga state
//! machines and the message types that cross service boundaries.
//!
//! Invariant: nothing in here performs I/O, reads a clock or draws a random
//! number. Time and jitter are inputs. This module imports no tokio, sled,
//! ractor or warp, so every decision can be tested with plain `#[test]`s.

pub mod customer;
pub mod ids;
pub mod messages;
pub mod money;
pub mod order;
pub mod saga;
pub mod view;

pub use customer::{Customer, CustomerCommand, CustomerReply, Reservation};
pub use ids::{CustomerId, IdError, OrderId, SagaId};
pub use messages::{Address, Envelope, Payload, RejectionReason, Service, SCHEMA_VERSION};
pub use money::{Money, MoneyError};
pub use order::{Order, OrderCommand, OrderError, OrderEvent, OrderState, RecordedEvent};
pub use saga::{
    ExhaustedPolicy, Outgoing, SagaInput, SagaKind, SagaPhase, SagaPolicy, SagaState, Transition,
};
pub use view::{CustomerHistory, OrderSummary};

/// Milliseconds since the Unix epoch. The only notion of time the domain knows;
/// callers pass it in.
pub type Millis = i64;
