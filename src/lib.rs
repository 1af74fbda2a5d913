//! durasaga: sagas across microservices that survive `kill -9`.
#![recursion_limit = "512"]
pub mod actors;
pub mod config;
pub mod domain;
pub mod http;
pub mod fault;
pub mod metrics;
pub mod persistence;
