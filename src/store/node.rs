//! The store a node runs with, chosen at startup: the embedded journal or Redis. An enum rather
//! than a trait object, because the `Store` trait's async methods are not object safe, and the
//! choice is made once per node.

use super::{BootState, EmbeddedStore, RedisStore, Store, StoreStats};
use crate::feed::FeedLane;
use crate::sale::command::{Command, Reply};

/// Either store.
pub enum NodeStore {
    /// One machine: the book in memory and a journal on disk.
    Embedded(Box<EmbeddedStore>),
    /// A cluster: Redis holds the truth.
    Redis(RedisStore),
}

impl Store for NodeStore {
    async fn execute(&self, batch: Vec<Command>) -> Vec<Reply> {
        match self {
            NodeStore::Embedded(store) => store.execute(batch).await,
            // Boxed: the Redis futures (fred's and the batcher's) are large, and unboxed they
            // overflow a shard thread's stack in debug builds.
            NodeStore::Redis(store) => Box::pin(store.execute(batch)).await,
        }
    }

    async fn execute_one(&self, command: Command) -> Reply {
        match self {
            NodeStore::Embedded(store) => store.execute_one(command).await,
            NodeStore::Redis(store) => Box::pin(store.execute_one(command)).await,
        }
    }

    async fn boot_state(&self) -> BootState {
        match self {
            NodeStore::Embedded(store) => store.boot_state().await,
            NodeStore::Redis(store) => store.boot_state().await,
        }
    }

    fn stats(&self) -> StoreStats {
        match self {
            NodeStore::Embedded(store) => store.stats(),
            NodeStore::Redis(store) => store.stats(),
        }
    }

    fn healthy(&self) -> bool {
        match self {
            NodeStore::Embedded(store) => store.healthy(),
            NodeStore::Redis(store) => store.healthy(),
        }
    }

    fn shared(&self) -> bool {
        match self {
            NodeStore::Embedded(store) => store.shared(),
            NodeStore::Redis(store) => store.shared(),
        }
    }

    async fn sync_owned(&self) -> Vec<super::Synced> {
        match self {
            NodeStore::Embedded(store) => store.sync_owned().await,
            NodeStore::Redis(store) => Box::pin(store.sync_owned()).await,
        }
    }

    async fn shared_blocklist(&self) -> Option<Vec<Box<str>>> {
        match self {
            NodeStore::Embedded(store) => store.shared_blocklist().await,
            NodeStore::Redis(store) => Box::pin(store.shared_blocklist()).await,
        }
    }

    async fn run_feed(&self, feed: FeedLane) {
        match self {
            NodeStore::Embedded(store) => store.run_feed(feed).await,
            NodeStore::Redis(store) => Box::pin(store.run_feed(feed)).await,
        }
    }

    async fn release(&self) {
        match self {
            NodeStore::Embedded(store) => store.release().await,
            NodeStore::Redis(store) => Box::pin(store.release()).await,
        }
    }
}
