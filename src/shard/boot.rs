//! Starting a shard: its executor placement, joining the channel mesh, opening its store
//! (recovered journal or Redis), republishing what it owns to every edge, and binding its
//! `SO_REUSEPORT` listener.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::CpuSet;

use super::message::ShardMsg;
use super::{NodeStatus, Shard};
use crate::auth::Auth;
use crate::http::{self, ConnLimits};
use crate::sale::book::Book;
use crate::store::embedded::FeedOptions;
use crate::store::journal::{Durability, Journal};
use crate::store::Store;
use crate::store::{EmbeddedStore, NodeStore, RedisSettings, RedisStore};

/// Messages a shard may have queued towards one peer before senders wait. Generous, because very
/// small capacities can deadlock under contention (glommio issue #555).
pub const MESH_CAPACITY: usize = 4096;

/// How often an executor wakes even with nothing to do. 1-2 starts in 1,000 hung for good
/// inside glommio 0.9's `MeshBuilder::join`: neither shard finished joining, both executors
/// slept in `io_cqring_wait` with no timer armed, and a ptrace attach (which interrupts that
/// wait) let the start complete, so the event the join waited for had already happened and its
/// wake-up was lost. Once any timer fires, the reactor re-checks its channels and foreign wakes
/// and carries on; after ready the 100 ms tick always provided one, which is why only startup
/// hung. This floor bounds any such stall to one period, from the executor's first moment.
pub const WAKE_FLOOR: Duration = Duration::from_millis(20);

/// Everything a node needs to serve.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Address every shard listens on.
    pub listen: SocketAddr,
    /// Number of shards (executors).
    pub shards: usize,
    /// Accept backlog of each shard's listener.
    pub backlog: u32,
    /// Per-connection timeouts.
    pub conn_limits: ConnLimits,
    /// Open connections a shard accepts before answering 503: the configured cap, lowered to
    /// what the descriptor budget allows (see [`super::fds`]).
    pub max_connections_per_shard: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Bytes of io_uring registered buffers per executor.
    pub io_memory: usize,
    /// When acknowledgements may be sent.
    pub durability: Durability,
    /// Journal segment size before rolling over.
    pub segment_bytes: u64,
    /// Admin and shopper credentials.
    pub auth: Auth,
    /// The origins a browser may call the API from.
    pub cors: crate::http::cors::Cors,
    /// How lookups of SKUs an edge does not know are bounded (shared store only).
    pub discovery: crate::shard::discovery::DiscoverySettings,
    /// The order feed's publisher, when `--events` is set.
    pub feed: Option<crate::feed::FeedHandle>,
    /// Unpublished events a shard keeps before it refuses purchases (embedded store).
    pub outbox_max: usize,
}

/// What each shard starts from: its recovered book, and its journal directory with the size of
/// the snapshot recovery wrote there.
pub struct ShardStart {
    /// The rebuilt state.
    pub book: Book,
    /// Its unpublished order feed events.
    pub outbox: crate::feed::outbox::Outbox,
    /// Where the shard's journal lives.
    pub journal_dir: std::path::PathBuf,
    /// Where the journal in `journal_dir` continues.
    pub journal_start: crate::store::journal::JournalStart,
    /// How the journal's snapshots rebuild this state: as recovery did.
    pub rebuild: crate::store::journal::compaction::Rebuild,
}

/// Where the node's state lives.
pub enum NodeStores {
    /// On this machine: each shard's recovered book and journal.
    Embedded(Vec<ShardStart>),
    /// In Redis, shared with other nodes; each shard connects on its own executor.
    Redis(RedisSettings),
}

/// What each shard builds its store from, taken by each shard once it knows its mesh id.
#[derive(Clone)]
pub enum StoreSource {
    /// Recovered books and journals, one slot per shard.
    Embedded(Arc<std::sync::Mutex<Vec<Option<ShardStart>>>>),
    /// Redis settings every shard connects with.
    Redis(RedisSettings),
}

impl From<NodeStores> for StoreSource {
    fn from(stores: NodeStores) -> Self {
        match stores {
            NodeStores::Embedded(starts) => StoreSource::Embedded(Arc::new(std::sync::Mutex::new(
                starts.into_iter().map(Some).collect(),
            ))),
            NodeStores::Redis(settings) => StoreSource::Redis(settings),
        }
    }
}

/// A shard that has joined the mesh, opened its store, published its state and bound its
/// listener: ready to serve.
pub struct Started {
    /// The shard.
    pub shard: Rc<Shard<NodeStore>>,
    /// The embedded store's journal, to flush and close last.
    pub journal: Option<Rc<Journal>>,
    /// The shard's listener.
    pub listener: http::listener::ShardListener,
}

/// CPUs this process may run on: online, and in its affinity mask (taskset, cgroup cpusets).
pub fn allowed_cpus() -> Vec<usize> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
    let mut cpus: Vec<usize> = CpuSet::online()
        .map(|set| set.iter().map(|location| location.cpu).collect())
        .unwrap_or_default();
    if let Some(allowed) = allowed {
        cpus.retain(|cpu| allowed.is_set(*cpu).unwrap_or(false));
    }
    cpus.sort_unstable();
    cpus
}

/// Wakes this executor every [`WAKE_FLOOR`] until `until` resolves (see there for why).
pub async fn keep_awake(until: impl std::future::Future<Output = ()>) {
    let ticking = async {
        loop {
            glommio::timer::sleep(WAKE_FLOOR).await;
        }
    };
    let _ = select(pin!(ticking), pin!(until)).await;
}

/// Starts shard `index` (spawn order; its mesh id may differ). `None` if `stopped` resolved
/// first, because a peer failed to start. For Redis, the caller has entered fred's tokio
/// compatibility context on this thread.
pub async fn start_shard(
    index: usize,
    mesh: MeshBuilder<ShardMsg, Full>,
    node: &Arc<NodeStatus>,
    options: &NodeOptions,
    source: StoreSource,
    stopped: impl std::future::Future<Output = ()>,
) -> io::Result<Option<Started>> {
    // Joining waits for every peer; if one fails to start, the stop signal ends the wait.
    let joined = match select(pin!(mesh.join()), pin!(stopped)).await {
        Either::Left((joined, _)) => joined,
        Either::Right(((), _)) => return Ok(None),
    };
    let (senders, mut receivers) = joined
        .map_err(|error| io::Error::other(format!("could not join the shard mesh: {error}")))?;
    let id = senders.peer_id();
    tracing::debug!(index, id, "shard joined the mesh");
    let (store, journal) = open_store(id, options, source).await?;
    tracing::debug!(id, "shard store open");
    // Cluster mode: every sale's rate limit is the whole cluster's, leased from Redis.
    let tokens: Option<Rc<dyn crate::sale::admission::TokenSource>> = match &store {
        NodeStore::Redis(redis) => Some(Rc::new(crate::store::redis::rate::RateLeases::new(
            redis.clone(),
        ))),
        NodeStore::Embedded(_) => None,
    };
    let shard = Rc::new(Shard::new(
        id,
        options.shards,
        senders,
        store,
        Arc::clone(node),
        options.discovery,
        tokens,
    ));
    for (_, receiver) in receivers.streams() {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                shard.on_message(message);
            }
        })
        .detach();
    }
    // Every shard's edge must know the recovered sales, flags and blocklist before any shard
    // reports ready.
    shard.publish_boot_state().await;
    tracing::debug!(id, "shard published its boot state");
    if let Some(feed) = &options.feed {
        let feed = feed.lane(id);
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move { shard.store.run_feed(feed).await }).detach();
    }
    let listener = http::listener::bind_reuseport(options.listen, options.backlog)?;
    tracing::debug!(id, "shard listening");
    Ok(Some(Started {
        shard,
        journal,
        listener,
    }))
}

/// Builds shard `id`'s store; for the embedded store, also returns its journal, to close at
/// shutdown.
async fn open_store(
    id: usize,
    options: &NodeOptions,
    source: StoreSource,
) -> io::Result<(NodeStore, Option<Rc<Journal>>)> {
    match source {
        StoreSource::Embedded(starts) => {
            let start = starts
                .lock()
                .ok()
                .and_then(|mut starts| starts.get_mut(id).and_then(Option::take))
                .ok_or_else(|| io::Error::other(format!("no recovered state for shard {id}")))?;
            let journal = Journal::create(
                &start.journal_dir,
                start.journal_start,
                options.durability,
                options.segment_bytes,
                start.rebuild,
            )
            .await
            .map_err(|error| io::Error::other(error.to_string()))?;
            let feed = FeedOptions {
                record: options.feed.is_some(),
                outbox_max: options.outbox_max,
            };
            let store = EmbeddedStore::new(start.book, start.outbox, Rc::clone(&journal), feed);
            Ok((NodeStore::Embedded(Box::new(store)), Some(journal)))
        }
        StoreSource::Redis(settings) => {
            let store = RedisStore::connect(&settings, id, options.shards)
                .map_err(|error| io::Error::other(error.to_string()))?;
            Ok((NodeStore::Redis(store), None))
        }
    }
}
