//! Supervised ractor actors: the entity actors of the three services, their
//! supervisors, the relays between them, and the [`Runtime`] handle
//! that everything outside this module calls.
//!
//! Invariant: actors are thin — they load state, call the pure domain, commit
//! once, and release effects only after the durability barrier.

pub mod entity;
pub mod handle;
pub mod logic;
pub mod relay;
pub mod supervisor;
pub mod timers;
pub mod watch;

pub use crate::persistence::deadletters::DeadLetter as DeadLetterView;
pub use handle::{AppError, OrderFilter, OrderView, RecoveryReport, Runtime};
