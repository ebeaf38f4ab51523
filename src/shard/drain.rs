//! Shutting a shard down without losing a request. The order matters because shards serve each
//! other: a purchase read by one shard may be owned, and journaled, by another.
//!
//! 1. Stop accepting and close the listener; wait until every shard has ([`Barrier`]), so no
//!    connection is told to close while the node still takes new ones.
//! 2. Tell connections to finish: each answers what it has read (any response now closes it),
//!    and idle keep-alive connections close. Wait for them, up to the drain timeout.
//! 3. Wait until every shard has done so: until then peers may still route purchases here.
//! 4. Let this shard's own work end (ticks, commands run for peers), then flush and close the
//!    journal, the last thing the shard does.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Shard;
use crate::store::journal::Journal;
use crate::store::NodeStore;

/// How often a waiting shard looks at a node-wide counter again. Waiting keeps the executor
/// running, so it goes on answering its peers' calls meanwhile.
const POLL: Duration = Duration::from_millis(2);

/// A node-wide count every shard adds itself to once, and waits on until it reaches the shard
/// count (or a deadline, in case a peer is wedged).
pub struct Barrier<'a> {
    count: &'a AtomicUsize,
    shards: usize,
}

impl<'a> Barrier<'a> {
    /// A barrier over `count` for `shards` shards.
    pub fn new(count: &'a AtomicUsize, shards: usize) -> Self {
        Self { count, shards }
    }

    /// Whether every shard has arrived.
    pub fn complete(&self) -> bool {
        self.count.load(Ordering::Acquire) >= self.shards
    }

    /// Waits until every shard has arrived or `deadline` passes; returns whether all arrived.
    pub async fn wait(&self, deadline: Instant) -> bool {
        while !self.complete() {
            if Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(POLL).await;
        }
        true
    }
}

/// Waits for the shard's own remaining work: commands it runs as owner (for peers whose callers
/// may have been cut off by the drain timeout) and its periodic tick, which stops once the node
/// drains. Bounded by `deadline`.
pub async fn settle(
    shard: &Rc<Shard<NodeStore>>,
    ticks: glommio::task::JoinHandle<()>,
    deadline: Instant,
) {
    let left = deadline.saturating_duration_since(Instant::now());
    if glommio::timer::timeout(left, async {
        let _ = ticks.await;
        Ok(())
    })
    .await
    .is_err()
    {
        tracing::warn!(shard = shard.id, "drain: the tick did not stop in time");
    }
    while shard.metrics.owner_in_flight() > 0 {
        if Instant::now() >= deadline {
            tracing::warn!(
                shard = shard.id,
                "drain: commands still running at the deadline; closing the journal anyway"
            );
            return;
        }
        glommio::timer::sleep(POLL).await;
    }
}

/// Flushes what the journal holds and closes its segment.
pub async fn close_journal(shard: usize, journal: Option<Rc<Journal>>) {
    if let Some(journal) = journal {
        match journal.close().await {
            Ok(()) => tracing::debug!(shard, "journal flushed and closed"),
            Err(error) => {
                tracing::error!(%error, shard, "could not close the journal cleanly")
            }
        }
    }
}
