//! durasaga: sagas across microservices that survive `kill -9`.
#![recursion_limit = "512"]
pub mod actors;
pub mod config;
pub mod demo;
pub mod domain;
pub mod fault;
pub mod harness;
pub mod http;
pub mod metrics;
pub mod persistence;
pub mod serve;
