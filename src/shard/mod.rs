//! The shard runtime: one glommio executor per core, each owning a partition of the SKUs.
//!
//! A request is checked at the edge of the shard that accepted it ([`edge`]), then sent to the
//! SKU's owner ([`placement`]) over the channel mesh ([`message`]), which runs it against its
//! store and answers back the same way ([`owner`]). [`runtime`] runs the node: [`boot`] starts
//! the executors, [`signals`] and [`watchdog`] serve the main thread, [`accept`] takes
//! connections within the descriptor budget of [`fds`], and [`drain`] stops it all in order.
//! [`runners`] run the calls other shards route here, and [`listing`] pages through the node's
//! sales.

pub mod accept;
pub mod boot;
pub mod discovery;
pub mod drain;
pub mod edge;
pub mod fds;
pub mod leases;
pub mod listing;
pub mod message;
mod negative;
pub mod orders;
pub mod owner;
pub mod placement;
pub mod reply;
pub mod runners;
pub mod runtime;
pub mod signals;
pub mod watchdog;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

use futures::channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::metrics::{MessageKind, ShardMetrics, ShardSnapshot};
use crate::sale::command::{Command, Reply};
use crate::sale::expiry::ExpiryQueue;
use crate::sale::SaleError;
use edge::Edge;
use message::{Notice, ShardMsg};

/// Where routed calls wait for their owner's reply; shared by every shard of the process.
static CALL_REPLIES: LazyLock<reply::Slots<Reply>> = LazyLock::new(reply::Slots::new);

/// How long a scrape waits for each peer shard's metrics.
pub const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Node-wide status shared by all shards; read by `/readyz` and the systemd watchdog.
#[derive(Debug, Default)]
pub struct NodeStatus {
    /// When the node started; heartbeats count milliseconds from here.
    started: Option<Instant>,
    /// Each shard's last tick, in ms since `started`: a shard whose executor stalls stops
    /// beating, and the watchdog stops being fed.
    heartbeats: Vec<std::sync::atomic::AtomicU64>,
    /// Shards that have joined the mesh and are listening.
    pub ready_shards: AtomicUsize,
    /// Set once shutdown begins.
    pub draining: AtomicBool,
    /// Shards whose store cannot take changes now (Redis unreachable, journal failed), as each
    /// shard's tick last saw it. `/readyz` is 503 while any is.
    pub stores_down: AtomicUsize,
    /// Shards that have finished their own connections; a shard keeps serving its peers' calls
    /// until all have, so in-flight requests anywhere can still complete.
    pub drained_shards: AtomicUsize,
    /// Shards whose listener is closed. Idle connections are closed only once every shard has
    /// stopped listening, so a request written before the node stopped listening is answered.
    pub listeners_closed: AtomicUsize,
    /// The order feed's publisher, when `--events` is set: `/readyz` and `/metrics` read its
    /// node-wide figures without asking the shards.
    pub feed: Option<crate::feed::FeedHandle>,
}

impl NodeStatus {
    /// Status for a node of `shards` shards, none ready yet.
    pub fn new(shards: usize) -> Self {
        Self {
            started: Some(Instant::now()),
            heartbeats: (0..shards)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            ..Self::default()
        }
    }

    fn since_start_ms(&self) -> u64 {
        self.started
            .map_or(0, |started| started.elapsed().as_millis() as u64)
    }

    /// Records that `shard`'s executor is running its periodic duties.
    pub fn beat(&self, shard: usize) {
        if let Some(heartbeat) = self.heartbeats.get(shard) {
            heartbeat.store(self.since_start_ms(), Ordering::Release);
        }
    }

    /// Whether every shard has beaten within `window`.
    pub fn all_beating(&self, window: std::time::Duration) -> bool {
        let now = self.since_start_ms();
        let window = window.as_millis() as u64;
        self.heartbeats
            .iter()
            .all(|heartbeat| now.saturating_sub(heartbeat.load(Ordering::Acquire)) <= window)
    }

    /// Whether every one of `shards` shards serves and the node is not shutting down.
    pub fn is_ready(&self, shards: usize) -> bool {
        self.ready_shards.load(Ordering::Acquire) >= shards
            && !self.draining.load(Ordering::Acquire)
            && self.stores_down.load(Ordering::Acquire) == 0
    }
}

/// One shard: its edge replica, the partition it owns, and its links to the other shards.
pub struct Shard<S> {
    /// This shard's index, `0..count`; also its peer id in the mesh.
    pub id: usize,
    /// How many shards the node runs.
    pub count: usize,
    peers: Senders<ShardMsg>,
    /// What this shard needs to refuse requests without a hop.
    pub edge: RefCell<Edge>,
    store: S,
    /// Pending orders of the SKUs this shard owns, by deadline.
    expiry: RefCell<ExpiryQueue>,
    /// What was last announced about each owned SKU's stock.
    announced: RefCell<HashMap<Box<str>, owner::Announced>>,
    /// Orders announcements so that a late one never undoes a newer one.
    flag_version: Cell<u64>,
    /// Open connections on this shard, checked against the per-shard cap.
    pub connections: Rc<Cell<usize>>,
    /// What this shard has served, for `/metrics`.
    pub metrics: ShardMetrics,
    /// Node-wide readiness and shutdown state.
    pub node: std::sync::Arc<NodeStatus>,
    /// Lookups of SKUs this shard owns that some edge did not know (shared store only).
    discovery: discovery::Discovery,
    /// Commands other shards routed here, and the tasks that run them.
    calls: runners::CallQueue,
    /// Where cluster-wide rate limits lease their tokens ([`leases`]); `None` when rate limits
    /// are the node's own (embedded mode).
    tokens: Option<Rc<dyn crate::sale::admission::TokenSource>>,
}

impl<S: crate::store::Store + 'static> Shard<S> {
    /// A shard with an empty edge and expiry queue; `tokens` makes rate limits cluster-wide.
    pub fn new(
        id: usize,
        count: usize,
        peers: Senders<ShardMsg>,
        store: S,
        node: std::sync::Arc<NodeStatus>,
        discovery: discovery::DiscoverySettings,
        tokens: Option<Rc<dyn crate::sale::admission::TokenSource>>,
    ) -> Self {
        Self {
            id,
            count,
            peers,
            edge: RefCell::new(Edge::new(id, count).leasing(tokens.is_some())),
            store,
            expiry: RefCell::new(ExpiryQueue::new()),
            announced: RefCell::new(HashMap::new()),
            flag_version: Cell::new(0),
            connections: Rc::new(Cell::new(0)),
            metrics: ShardMetrics::new(),
            node,
            discovery: discovery::Discovery::new(discovery),
            calls: runners::CallQueue::default(),
            tokens,
        }
    }

    /// Whether this shard's store can take changes (for `/readyz`).
    pub fn store_healthy(&self) -> bool {
        self.store.healthy()
    }

    /// The shard that owns `key`.
    pub fn owner_of(&self, key: &str) -> usize {
        placement::owner_of(key, self.count)
    }

    /// `skus` grouped by their owner shard: each owner that has any, with its SKUs in the order
    /// given.
    pub fn skus_by_owner(
        &self,
        skus: impl IntoIterator<Item = Box<str>>,
    ) -> impl Iterator<Item = (usize, Vec<Box<str>>)> {
        let mut by_owner: Vec<Vec<Box<str>>> = vec![Vec::new(); self.count];
        for sku in skus {
            if let Some(owned) = by_owner.get_mut(self.owner_of(&sku)) {
                owned.push(sku);
            }
        }
        by_owner
            .into_iter()
            .enumerate()
            .filter(|(_, skus)| !skus.is_empty())
    }

    /// Runs `command` on the shard that owns it, here or over the mesh.
    pub async fn call(self: &Rc<Self>, command: Command) -> Reply {
        let target = match (&command, command.sku()) {
            (_, Some(sku)) => self.owner_of(sku),
            (Command::SetBlocked(user_id, _), None) => self.owner_of(user_id),
            _ => self.id,
        };
        self.call_on(target, command).await
    }

    /// Runs `command` on shard `target`.
    async fn call_on(self: &Rc<Self>, target: usize, command: Command) -> Reply {
        if target == self.id {
            return self.execute_owned(command).await;
        }
        let Some((reply, answer)) = reply::slot(&CALL_REPLIES) else {
            return Err(SaleError::Unavailable);
        };
        let message = ShardMsg::Call { command, reply };
        if self.send(target, message).await.is_err() {
            return Err(SaleError::Unavailable);
        }
        answer.await.unwrap_or(Err(SaleError::Unavailable))
    }

    /// Sends `message` to shard `target`, counting it.
    async fn send(&self, target: usize, message: ShardMsg) -> Result<(), ()> {
        let kind = match &message {
            ShardMsg::Call { .. }
            | ShardMsg::ReadSales { .. }
            | ShardMsg::Discover { .. }
            | ShardMsg::ReadOrders { .. } => MessageKind::Call,
            ShardMsg::Notice { .. } => MessageKind::Notice,
            ShardMsg::Scrape { .. } => MessageKind::Scrape,
        };
        self.peers.send_to(target, message).await.map_err(|_| ())?;
        self.metrics.record_message(kind);
        Ok(())
    }

    /// Every shard's metrics, this one's included, gathered concurrently. A shard that does not
    /// answer within [`SCRAPE_TIMEOUT`] (shutting down, or wedged) is left out.
    pub async fn scrape(self: &Rc<Self>) -> Vec<ShardSnapshot> {
        let asks = (0..self.count).map(|shard| async move {
            if shard == self.id {
                return Some(self.metrics_snapshot());
            }
            let ask = async {
                let (reply, answer) = oneshot::channel();
                let sent = self.send(shard, ShardMsg::Scrape { reply }).await;
                let snapshot = match sent {
                    Ok(()) => answer.await.ok(),
                    Err(()) => None,
                };
                Ok(snapshot)
            };
            glommio::timer::timeout(SCRAPE_TIMEOUT, ask)
                .await
                .ok()
                .flatten()
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// A copy of this shard's metrics.
    fn metrics_snapshot(&self) -> ShardSnapshot {
        ShardSnapshot {
            shard: self.id,
            requests: self.metrics.snapshot(),
            connections_open: self.connections.get() as u64,
            store: self.store.stats(),
        }
    }

    /// Handles a message from another shard.
    pub fn on_message(self: &Rc<Self>, message: ShardMsg) {
        match message {
            ShardMsg::Call { command, reply } => self.take_call(command, reply),
            ShardMsg::ReadSales { skus, reply } => {
                let shard = Rc::clone(self);
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.read_owned_sales(skus).await);
                })
                .detach();
            }
            ShardMsg::Discover { sku, reply } => {
                let shard = Rc::clone(self);
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.look_up(sku).await);
                })
                .detach();
            }
            ShardMsg::ReadOrders {
                user_id,
                skus,
                limit,
                reply,
            } => {
                let shard = Rc::clone(self);
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.read_owned_orders(user_id, skus, limit).await);
                })
                .detach();
            }
            ShardMsg::Scrape { reply } => {
                let _ = reply.send(self.metrics_snapshot());
            }
            ShardMsg::Notice { notice, ack } => {
                self.edge.borrow_mut().apply(&notice, Instant::now());
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
        }
    }

    /// Applies `notice` here and sends it to every other shard; with `wait`, returns only once
    /// every shard has applied it.
    async fn broadcast(&self, notice: Notice, wait: bool) {
        self.edge.borrow_mut().apply(&notice, Instant::now());
        let mut acks = Vec::new();
        for peer in (0..self.count).filter(|peer| *peer != self.id) {
            let ack = if wait {
                let (ack, acked) = oneshot::channel();
                acks.push(acked);
                Some(ack)
            } else {
                None
            };
            let message = ShardMsg::Notice {
                notice: notice.clone(),
                ack,
            };
            // A peer that is gone is shutting down; it has no requests left to refuse.
            let _ = self.send(peer, message).await;
        }
        for acked in acks {
            let _ = acked.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NodeStatus;
    use std::time::Duration;

    #[test]
    fn the_watchdog_is_fed_only_while_every_shard_beats() {
        let node = NodeStatus::new(2);
        std::thread::sleep(Duration::from_millis(20));
        node.beat(0);
        assert!(
            !node.all_beating(Duration::from_millis(10)),
            "shard 1 never beat"
        );
        node.beat(1);
        // Generous, so a descheduled test thread cannot make it fail.
        assert!(node.all_beating(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(30));
        node.beat(0);
        assert!(
            !node.all_beating(Duration::from_millis(10)),
            "shard 1 stalled"
        );
    }
}
