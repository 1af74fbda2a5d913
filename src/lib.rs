//! durasaga: sagas across microservices that survive `kill -9`.
pub mod domain;
pub mod fault;
pub mod metrics;
pub mod persistence;
