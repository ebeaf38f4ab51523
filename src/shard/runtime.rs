//! Booting and stopping the node: one pinned glommio executor per shard, the channel mesh between
//! them, a `SO_REUSEPORT` listener and accept loop on each, and graceful shutdown on signal.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either, FutureExt, Shared};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{CpuSet, LocalExecutorBuilder, Placement};
use nix::sys::signal::{SigSet, Signal};

use super::message::ShardMsg;
use super::{NodeStatus, Shard};
use crate::api::Api;
use crate::auth::Auth;
use crate::http::{self, serve_connection, ConnLimits, Response};
use crate::sale::book::Book;
use crate::store::journal::{Durability, Journal};
use crate::store::{EmbeddedStore, NodeStore, RedisSettings, RedisStore};

/// Messages a shard may have queued towards one peer before senders wait. Generous, because very
/// small capacities can deadlock under contention (glommio issue #555).
const MESH_CAPACITY: usize = 4096;

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
    /// Open connections a shard accepts before answering 503.
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
}

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A shard could not be started.
    #[error("shard {shard} failed to start: {source}")]
    Shard {
        /// Which shard (spawn order).
        shard: usize,
        /// The cause.
        source: io::Error,
    },
    /// The listen address is taken.
    #[error("cannot listen: {0}")]
    Listen(io::Error),
    /// Signals could not be set up.
    #[error("signal handling: {0}")]
    Signals(#[from] nix::Error),
}

/// Reports a shard's end to the main thread and to the drain barrier, however it ends: returned
/// error, or panic (the guard drops while unwinding).
struct ShardExit {
    index: usize,
    node: Arc<NodeStatus>,
    events: mpsc::Sender<NodeEvent>,
    drained: std::cell::Cell<bool>,
    result: Option<io::Result<()>>,
}

impl ShardExit {
    fn new(index: usize, node: Arc<NodeStatus>, events: mpsc::Sender<NodeEvent>) -> Self {
        Self {
            index,
            node,
            events,
            drained: std::cell::Cell::new(false),
            result: None,
        }
    }

    /// Counts this shard as drained for the barrier, once.
    fn mark_drained(&self) {
        if !self.drained.replace(true) {
            self.node.drained_shards.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for ShardExit {
    fn drop(&mut self) {
        self.mark_drained();
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(io::Error::other("the shard panicked")));
        let _ = self.events.send(NodeEvent::ShardExited(self.index, result));
    }
}

enum NodeEvent {
    Signal(Signal),
    ShardExited(usize, io::Result<()>),
    Ready,
}

/// What each shard starts from: its recovered book, and its journal directory with the size of
/// the snapshot recovery wrote there.
pub struct ShardStart {
    /// The rebuilt state.
    pub book: Book,
    /// Where the shard's journal lives.
    pub journal_dir: std::path::PathBuf,
    /// Size of the snapshot already in `journal_dir`.
    pub snapshot_bytes: u64,
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
enum StoreSource {
    Embedded(Arc<std::sync::Mutex<Vec<Option<ShardStart>>>>),
    Redis(RedisSettings),
}

/// Runs the node until SIGTERM or SIGINT, then drains and returns. Blocks the calling thread.
pub fn run_node(options: NodeOptions, stores: NodeStores) -> Result<(), NodeError> {
    let starts = match stores {
        NodeStores::Embedded(starts) => StoreSource::Embedded(Arc::new(std::sync::Mutex::new(
            starts.into_iter().map(Some).collect(),
        ))),
        NodeStores::Redis(settings) => StoreSource::Redis(settings),
    };
    // Block the shutdown signals before any thread starts, so every thread inherits the mask and
    // only the waiter below ever sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;

    let (events, inbox) = mpsc::channel::<NodeEvent>();
    let waiter = events.clone();
    std::thread::Builder::new()
        .name("seckill-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                let _ = waiter.send(NodeEvent::Signal(signal));
            }
        })
        .map_err(|source| NodeError::Shard { shard: 0, source })?;

    http::listener::ensure_port_free(options.listen).map_err(NodeError::Listen)?;
    let node = Arc::new(NodeStatus::new(options.shards));
    let cpus = allowed_cpus();
    let mesh = MeshBuilder::<ShardMsg, _>::full(options.shards, MESH_CAPACITY);
    let mut stops = Vec::with_capacity(options.shards);
    let mut handles = Vec::with_capacity(options.shards);
    for index in 0..options.shards {
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        let placement = match cpus.get(index % cpus.len().max(1)) {
            Some(cpu) => Placement::Fixed(*cpu),
            None => Placement::Unbound,
        };
        let (mesh, node, options, events, starts) = (
            mesh.clone(),
            Arc::clone(&node),
            options.clone(),
            events.clone(),
            starts.clone(),
        );
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("seckill-shard-{index}"))
            .io_memory(options.io_memory)
            .spawn(move || async move {
                let mut exit = ShardExit::new(index, Arc::clone(&node), events.clone());
                let stopped = stopped.map(|_| ()).shared();
                let run = run_shard(mesh, node, &options, stopped, &events, &exit, starts);
                exit.result = Some(run.await);
            })
            .map_err(|error| NodeError::Shard {
                shard: index,
                source: io::Error::other(error.to_string()),
            })?;
        handles.push(handle);
    }

    let mut ready = 0;
    let mut failure = None;
    let mut exited = 0;
    // Under systemd with WatchdogSec, fed from here only while every shard's tick runs: a
    // stalled shard stops the pings, and systemd restarts the service.
    let watchdog = sd_notify::watchdog_enabled();
    loop {
        let event = match watchdog {
            Some(period) => match inbox.recv_timeout(period / 3) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if ready == options.shards && node.all_beating(period / 2) {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match inbox.recv() {
                Ok(event) => event,
                Err(_) => break,
            },
        };
        match event {
            NodeEvent::Ready => {
                ready += 1;
                if ready == options.shards {
                    tracing::info!(listen = %options.listen, shards = options.shards, "seckill is ready");
                    // Every shard listens: tell systemd (Type=notify); a no-op elsewhere.
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
            }
            NodeEvent::Signal(signal) => {
                tracing::info!(?signal, "shutting down: draining in-flight requests");
                break;
            }
            NodeEvent::ShardExited(shard, result) => {
                exited += 1;
                if let Err(source) = result {
                    failure = Some(NodeError::Shard { shard, source });
                }
                break;
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    node.draining.store(true, Ordering::Release);
    for stop in stops {
        let _ = stop.send(());
    }
    while exited < options.shards {
        match inbox.recv() {
            Ok(NodeEvent::ShardExited(shard, Err(source))) => {
                exited += 1;
                failure.get_or_insert(NodeError::Shard { shard, source });
            }
            Ok(NodeEvent::ShardExited(_, Ok(()))) => exited += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    for handle in handles {
        let _ = handle.join();
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// CPUs this process may run on: online, and in its affinity mask (taskset, cgroup cpusets).
fn allowed_cpus() -> Vec<usize> {
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

async fn run_shard(
    mesh: MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>,
    node: Arc<NodeStatus>,
    options: &NodeOptions,
    stopped: Shared<impl std::future::Future<Output = ()> + 'static>,
    events: &mpsc::Sender<NodeEvent>,
    exit: &ShardExit,
    starts: StoreSource,
) -> io::Result<()> {
    // Joining waits for every peer; if one fails to start, the stop signal ends the wait.
    let joined = match select(pin!(mesh.join()), stopped.clone()).await {
        Either::Left((joined, _)) => joined,
        Either::Right(((), _)) => return Ok(()),
    };
    let (senders, mut receivers) = joined
        .map_err(|error| io::Error::other(format!("could not join the shard mesh: {error}")))?;
    let id = senders.peer_id();
    let fred_compat = match &starts {
        StoreSource::Redis(_) => Some(crate::store::redis::fred_compat_context()?),
        StoreSource::Embedded(_) => None,
    };
    let _fred_compat = fred_compat.as_ref().map(tokio::runtime::Runtime::enter);
    let (store, journal) = open_store(id, options, starts).await?;
    let shard = Rc::new(Shard::new(
        id,
        options.shards,
        senders,
        store,
        Arc::clone(&node),
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
    let listener = http::listener::bind_reuseport(options.listen, options.backlog)?;
    node.stores_down.fetch_add(1, Ordering::AcqRel);
    glommio::spawn_local(Rc::clone(&shard).run_ticks()).detach();
    node.ready_shards.fetch_add(1, Ordering::AcqRel);
    let _ = events.send(NodeEvent::Ready);

    let api = Rc::new(Api::new(Rc::clone(&shard), options.auth.clone()));
    let shard_header: Rc<[u8]> = format!("x-seckill-shard: {id}\r\n").into_bytes().into();
    let gate = glommio::sync::Gate::new();
    loop {
        let accepted = match select(pin!(listener.accept()), stopped.clone()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(((), _)) => break,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(%error, shard = id, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.connections.get() >= options.max_connections_per_shard {
            shard.metrics.record_refused_connection();
            let header = Rc::clone(&shard_header);
            glommio::spawn_local(refuse_overloaded(stream, header)).detach();
            continue;
        }
        shard.connections.set(shard.connections.get() + 1);
        let (api, shard, header, stopped) = (
            Rc::clone(&api),
            Rc::clone(&shard),
            Rc::clone(&shard_header),
            stopped.clone(),
        );
        let limits = options.conn_limits;
        let served = gate.spawn(async move {
            if let Err(error) = serve_connection(stream, &*api, limits, &header, stopped).await {
                tracing::debug!(%error, "connection ended with an error");
            }
            shard.connections.set(shard.connections.get() - 1);
        });
        if let Ok(task) = served {
            task.detach();
        }
    }
    drop(listener);
    if glommio::timer::timeout(options.drain_timeout, gate.close())
        .await
        .is_err()
    {
        tracing::warn!(shard = id, "drain timeout: closing remaining connections");
    }
    if let Some(journal) = journal {
        if let Err(error) = journal.close().await {
            tracing::error!(%error, shard = id, "could not close the journal cleanly");
        }
    }
    // Keep answering other shards' calls until every shard has drained its own connections
    // (bounded, in case a peer is wedged).
    exit.mark_drained();
    let deadline = std::time::Instant::now() + options.drain_timeout + Duration::from_secs(1);
    while node.drained_shards.load(Ordering::Acquire) < options.shards
        && std::time::Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
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
                1,
                start.snapshot_bytes,
                options.durability,
                options.segment_bytes,
            )
            .await
            .map_err(|error| io::Error::other(error.to_string()))?;
            let store = EmbeddedStore::new(start.book, Rc::clone(&journal));
            Ok((NodeStore::Embedded(Box::new(store)), Some(journal)))
        }
        StoreSource::Redis(settings) => {
            let store = RedisStore::connect(&settings, id, options.shards)
                .map_err(|error| io::Error::other(error.to_string()))?;
            Ok((NodeStore::Redis(store), None))
        }
    }
}

async fn refuse_overloaded(mut stream: glommio::net::TcpStream, shard_header: Rc<[u8]>) {
    use futures::AsyncWriteExt;
    let mut out = Vec::with_capacity(256);
    Response::error(503, "overloaded", "too many connections, try again later")
        .closing()
        .write_to(&mut out, &shard_header, &http::RequestId::generate());
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}
