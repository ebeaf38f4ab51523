//! The order feed: every order and sale event, published to a NATS JetStream stream at least
//! once, from a durable outbox (the journal in embedded mode, each SKU's Redis stream in cluster
//! mode), off the request path.
//!
//! - [`event`]: what a message is, and its stable id.
//! - [`publisher`]: the thread that talks to NATS; shards hand it batches and never wait.
//! - [`handoff`]: the pooled slots a batch's events cross to that thread in.
//! - [`outbox`]: the embedded store's unpublished events, rebuilt from the journal.
//! - [`tail`]: `seckill events tail`, for operators.

pub mod event;
pub mod handoff;
pub mod outbox;
pub mod publisher;
pub mod tail;

pub use event::{FeedEvent, FeedKind};
pub use publisher::{FeedHandle, FeedLane, FeedSettings, PublisherStats, Submitted};
