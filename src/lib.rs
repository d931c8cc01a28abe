//! wsim: an instant-messaging server with one actor core behind several protocols.
//!
//! Dependency direction (a module never imports from its right):
//! `domain` → `store` → `core` → `transport` → `proto::*` → `server` → `main`.
#![deny(clippy::expect_used)]

pub mod cluster;
pub mod config;
pub mod console;
pub mod core;
pub mod domain;
pub mod metrics;
pub mod proto;
pub mod push;
pub mod server;
pub mod store;
pub mod transport;
