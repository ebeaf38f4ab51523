//! seckill: a thread-per-core flash-sale server on io_uring.
//!
//! - [`http`]: HTTP/1.1 parsing, composition and connections.
//! - [`json`]: JSON from outside, shape-checked before simd-json parses it.
//! - [`api`]: the v1 HTTP API on top of the shard runtime.
//! - [`shard`]: executors, routing to the owner shard, edge replicas, the owner role.
//! - [`sale`]: the domain: sales, orders, the ledger, admission, expiry.
//! - [`store`]: the store boundary and its implementations.
//! - [`metrics`]: per-shard counters and histograms, merged into Prometheus text on scrape.
//! - [`config`] and [`cli`]: how operators configure and run it; [`doctor`] checks the host.
//! - [`load`]: `seckill load`, the open-loop load generator.
//! - [`feed`]: the order feed to NATS JetStream, from a durable outbox.

#![warn(missing_docs)]
// Deeply nested async state machines (a connection awaiting a handler awaiting a Redis batch)
// exceed the default limit when their layouts are computed.
#![recursion_limit = "256"]

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod export;
pub mod feed;
pub mod http;
pub mod json;
pub mod load;
pub mod logging;
pub mod lottery_verify;
pub mod metrics;
pub mod payment;
pub mod sale;
pub mod serve;
pub mod shard;
pub mod store;
