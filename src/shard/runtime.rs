//! Running the node: the main thread starts one pinned executor per shard and then waits for
//! events (ready, signal, a shard's end); each shard boots ([`super::boot`]), accepts
//! ([`super::accept`]) until told to stop, and drains ([`super::drain`]).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{LocalExecutorBuilder, Placement};
use nix::sys::signal::Signal;

use super::accept::{accept_until, AcceptContext};
use super::boot::{self, NodeOptions, NodeStores, StoreSource, MESH_CAPACITY};
use super::drain::{self, Barrier};
use super::message::ShardMsg;
use super::signals::{self, SignalError};
use super::watchdog::{self, Watchdog};
use super::NodeStatus;
use crate::api::Api;
use crate::http;

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
    Signals(#[from] SignalError),
}

enum NodeEvent {
    Signal(Signal),
    ShardExited(usize, io::Result<()>),
    Ready,
}

/// Reports a shard's end to the main thread and to the drain barriers, however it ends:
/// returned error, or panic (the guard drops while unwinding), so no peer waits for it.
struct ShardExit {
    index: usize,
    node: Arc<NodeStatus>,
    events: mpsc::Sender<NodeEvent>,
    listener_closed: Cell<bool>,
    drained: Cell<bool>,
    result: Option<io::Result<()>>,
}

impl ShardExit {
    fn new(index: usize, node: Arc<NodeStatus>, events: mpsc::Sender<NodeEvent>) -> Self {
        Self {
            index,
            node,
            events,
            listener_closed: Cell::new(false),
            drained: Cell::new(false),
            result: None,
        }
    }

    /// Counts this shard's listener as closed, once.
    fn mark_listener_closed(&self) {
        if !self.listener_closed.replace(true) {
            self.node.listeners_closed.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Counts this shard as drained of its own connections, once.
    fn mark_drained(&self) {
        if !self.drained.replace(true) {
            self.node.drained_shards.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for ShardExit {
    fn drop(&mut self) {
        self.mark_listener_closed();
        self.mark_drained();
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(io::Error::other("the shard panicked")));
        let _ = self.events.send(NodeEvent::ShardExited(self.index, result));
    }
}

/// Runs the node until SIGTERM or SIGINT, then drains and returns. Blocks the calling thread.
pub fn run_node(options: NodeOptions, stores: NodeStores) -> Result<(), NodeError> {
    let source = StoreSource::from(stores);
    let (events, inbox) = mpsc::channel::<NodeEvent>();
    // Before any thread starts, so every thread inherits the blocked mask.
    let waiter = events.clone();
    signals::spawn_waiter(move |signal| {
        let _ = waiter.send(NodeEvent::Signal(signal));
    })?;

    http::listener::ensure_port_free(options.listen).map_err(NodeError::Listen)?;
    let node = Arc::new(NodeStatus {
        feed: options.feed.clone(),
        ..NodeStatus::new(options.shards)
    });
    let cpus = boot::allowed_cpus();
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
        let (mesh, node, options, events, source) = (
            mesh.clone(),
            Arc::clone(&node),
            options.clone(),
            events.clone(),
            source.clone(),
        );
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("seckill-shard-{index}"))
            .io_memory(options.io_memory)
            .spawn(move || async move {
                let mut exit = ShardExit::new(index, Arc::clone(&node), events.clone());
                let stopped = stopped.map(|_| ()).shared();
                let (done, finished) = oneshot::channel::<()>();
                glommio::spawn_local(boot::keep_awake(finished.map(|_| ()))).detach();
                let run = run_shard(index, mesh, node, &options, stopped, &events, &exit, source);
                exit.result = Some(run.await);
                drop(done);
            })
            .map_err(|error| NodeError::Shard {
                shard: index,
                source: io::Error::other(error.to_string()),
            })?;
        handles.push(handle);
    }

    let watchdog = Watchdog::from_env();
    let mut ready = 0;
    let mut failure = None;
    let mut exited = 0;
    while let Some(event) = watchdog.next_event(&inbox, &node, ready == options.shards) {
        match event {
            NodeEvent::Ready => {
                ready += 1;
                if ready == options.shards {
                    tracing::info!(listen = %options.listen, shards = options.shards, "seckill is ready");
                    watchdog::notify_ready();
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
    watchdog::notify_stopping();
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

/// One shard's life: boot, serve until `stopped`, drain.
#[allow(clippy::too_many_arguments)]
async fn run_shard(
    index: usize,
    mesh: MeshBuilder<ShardMsg, Full>,
    node: Arc<NodeStatus>,
    options: &NodeOptions,
    stopped: Shared<impl std::future::Future<Output = ()> + 'static>,
    events: &mpsc::Sender<NodeEvent>,
    exit: &ShardExit,
    source: StoreSource,
) -> io::Result<()> {
    // fred runs its timers through tokio: keep a compatibility context entered on this thread
    // for the shard's whole life.
    let fred_compat = match &source {
        StoreSource::Redis(_) => Some(crate::store::redis::fred_compat_context()?),
        StoreSource::Embedded(_) => None,
    };
    let _fred_compat = fred_compat.as_ref().map(tokio::runtime::Runtime::enter);
    let started =
        match boot::start_shard(index, mesh, &node, options, source, stopped.clone()).await? {
            Some(started) => started,
            None => return Ok(()),
        };
    let shard = started.shard;
    node.stores_down.fetch_add(1, Ordering::AcqRel);
    let ticks = glommio::spawn_local(Rc::clone(&shard).run_ticks()).detach();
    glommio::spawn_local(Rc::clone(&shard).run_leases()).detach();
    node.ready_shards.fetch_add(1, Ordering::AcqRel);
    let _ = events.send(NodeEvent::Ready);

    let context = AcceptContext {
        api: Rc::new(Api::new(
            Rc::clone(&shard),
            options.auth.clone(),
            options.cors.clone(),
        )),
        shard_header: format!("x-seckill-shard: {}\r\n", shard.id)
            .into_bytes()
            .into(),
        shard: Rc::clone(&shard),
        conn_limits: options.conn_limits,
        cap: options.max_connections_per_shard,
    };
    let (close_idle, idle_closing) = oneshot::channel::<()>();
    let idle_closing = idle_closing.map(|_| ()).shared();
    let gate = glommio::sync::Gate::new();
    accept_until(
        started.listener.listener(),
        &context,
        &gate,
        stopped,
        idle_closing,
    )
    .await;

    // Drain, in the order drain.rs explains.
    let deadline = Instant::now() + options.drain_timeout + Duration::from_secs(1);
    started.listener.close();
    exit.mark_listener_closed();
    if !Barrier::new(&node.listeners_closed, options.shards)
        .wait(deadline)
        .await
    {
        tracing::warn!(
            shard = shard.id,
            "drain: a peer did not stop listening in time"
        );
    }
    let _ = close_idle.send(());
    if glommio::timer::timeout(options.drain_timeout, gate.close())
        .await
        .is_err()
    {
        tracing::warn!(
            shard = shard.id,
            "drain timeout: closing remaining connections"
        );
    }
    exit.mark_drained();
    if !Barrier::new(&node.drained_shards, options.shards)
        .wait(deadline)
        .await
    {
        tracing::warn!(
            shard = shard.id,
            "drain: a peer did not finish its connections in time"
        );
    }
    drain::settle(&shard, ticks, deadline).await;
    // After the last tick, so no sync takes a lease again behind the release.
    crate::store::Store::release(&shard.store).await;
    drain::close_journal(shard.id, started.journal).await;
    Ok(())
}
