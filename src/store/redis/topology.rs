//! Which Redis node serves a key, and one fred client, breaker and reply clock per node.
//!
//! fred's clustered client runs one router task for every master. When one master dies, that
//! task tries to resynchronise the whole cluster (`CLUSTER SLOTS`, then connect to every master
//! it lists), fails because the dead master is still listed, marks the client disconnected and
//! loops in its reconnect backoff, taking no new command meanwhile: every SKU on every master
//! stalls or fails at once. So on a Redis Cluster each shard keeps a plain (centralized) client
//! per master instead, routes each key to its slot's master itself, and learns the slot map
//! with `CLUSTER SLOTS` through any node that answers. A dead master then only fails the keys in
//! its slots, and its breaker and health are its own.
//!
//! With one Redis (or Sentinel) there is one node, reached by fred as before.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::cluster::ClusterRouting;
use fred::types::config::{Config, ReconnectPolicy, Server, ServerConfig, UnresponsiveConfig};
use fred::types::{Builder, ConnectHandle};

use super::breaker::Breaker;
use super::watchdog::Watch;
use super::RedisError;

/// Most nodes one shard keeps a client for: Redis Cluster's own recommended ceiling. The map is
/// filled from `CLUSTER SLOTS`, never from requests.
pub const MAX_NODES: usize = 1000;

/// One client to one node, with the tasks that drive and watch it.
struct Link {
    client: Client,
    /// The router task, then the two event listeners.
    tasks: Vec<ConnectHandle>,
    /// Set from the moment fred reports the connection lost (or before it first connects)
    /// until it reports it connected again. fred's own state says "connected" for a while after
    /// it has lost the connection (until its first reconnect attempt), and a command sent then
    /// waits in its queue, unread while it reconnects, to be sent once Redis is back: long
    /// after its caller was told 503. Calls are refused while this is set.
    lost: Arc<AtomicBool>,
    /// Times fred reported the connection made (first or again): a new one closes the breaker.
    connections: Arc<AtomicU64>,
}

impl Link {
    fn start(config: &Config) -> Result<Self, RedisError> {
        let client = build_client(config.clone())?;
        let lost = Arc::new(AtomicBool::new(true));
        // Listening before connecting, so the first connection's notice is not missed.
        let on_error = {
            let lost = Arc::clone(&lost);
            client.on_error(move |_| {
                lost.store(true, Ordering::Release);
                async { Ok(()) }
            })
        };
        let connections = Arc::new(AtomicU64::new(0));
        let on_reconnect = {
            let lost = Arc::clone(&lost);
            let connections = Arc::clone(&connections);
            client.on_reconnect(move |_| {
                connections.fetch_add(1, Ordering::AcqRel);
                lost.store(false, Ordering::Release);
                async { Ok(()) }
            })
        };
        let router = client.connect();
        Ok(Self {
            client,
            tasks: vec![router, on_error, on_reconnect],
            lost,
            connections,
        })
    }

    fn usable(&self) -> bool {
        self.client.is_connected() && !self.lost.load(Ordering::Acquire)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The router task holds the client's state alive; without this it would keep
        // reconnecting to a node nobody uses any more.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One Redis node (a master on a cluster) and this shard's client to it.
pub struct Node {
    /// `host:port`, the label of its metrics.
    pub server: Rc<str>,
    config: Config,
    link: RefCell<Link>,
    /// Its own breaker: one failing node never opens another's. Read it through
    /// [`Node::breaker`], which closes it first when a connection came up since.
    breaker: RefCell<Breaker>,
    /// The link's connection count when the breaker last saw it.
    connections_seen: Cell<u64>,
    /// When it last answered, for the watchdog.
    pub watch: RefCell<Watch>,
    /// Times its breaker opened.
    pub breaker_opened: Cell<u64>,
    /// Times the watchdog replaced its connection.
    pub replaced: Cell<u64>,
    /// Since when the watchdog has seen it not connected (connecting, or reconnecting).
    pub down_since: Cell<Option<Instant>>,
}

impl Node {
    /// A node reached with `config`, connecting in the background.
    pub fn connect(server: Rc<str>, config: Config) -> Result<Self, RedisError> {
        let link = Link::start(&config)?;
        Ok(Self {
            server,
            config,
            link: RefCell::new(link),
            breaker: RefCell::new(Breaker::default()),
            connections_seen: Cell::new(0),
            watch: RefCell::new(Watch::default()),
            breaker_opened: Cell::new(0),
            replaced: Cell::new(0),
            down_since: Cell::new(None),
        })
    }

    /// How this node is reached, for a second client of its own (the change-notice
    /// subscription).
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// This node's client.
    pub fn client(&self) -> Client {
        self.link.borrow().client.clone()
    }

    /// Whether a call may be sent now: connected, as far as both fred's state and its
    /// connection events tell.
    pub fn connected(&self) -> bool {
        self.link.borrow().usable()
    }

    /// Whether it serves now: connected, and its breaker not refusing calls.
    pub fn up(&self) -> bool {
        self.connected() && !self.breaker().borrow().refusing(Instant::now())
    }

    /// Its breaker, closed first if a connection came up since the breaker last looked: calls
    /// that failed while there was none (a node starting before its Redis, a master restarting)
    /// say nothing about the connection that now answers, which deserves calls at once rather
    /// than after the rest of a pause. (Without this, a node could be ready, one master serving,
    /// while another master's breaker, opened by startup's failures, refused its SKUs.)
    pub fn breaker(&self) -> &RefCell<Breaker> {
        let connections = self.link.borrow().connections.load(Ordering::Acquire);
        if connections != self.connections_seen.replace(connections) {
            self.breaker.borrow_mut().reset();
        }
        &self.breaker
    }

    /// Drops the connection and its router task and starts a new client. The breaker closes:
    /// the new connection deserves calls at once.
    pub fn replace(&self) -> Result<(), RedisError> {
        let link = Link::start(&self.config)?;
        // The old link is dropped here, aborting its tasks.
        *self.link.borrow_mut() = link;
        self.breaker.borrow_mut().reset();
        self.connections_seen.set(0);
        *self.watch.borrow_mut() = Watch::default();
        self.down_since.set(None);
        self.replaced.set(self.replaced.get() + 1);
        Ok(())
    }
}

/// A fred client for one node. Under glommio every fred timeout must be zero (its timers need
/// tokio); deadlines are enforced around each call instead.
pub(super) fn build_client(mut config: Config) -> Result<Client, RedisError> {
    // Keep trying when Redis is down at startup too: a node must come up by itself once Redis
    // does, not stay disconnected until restarted.
    config.fail_fast = false;
    Builder::from_config(config)
        .with_connection_config(|connection| {
            connection.connection_timeout = Duration::ZERO;
            connection.internal_command_timeout = Duration::ZERO;
            // Retries are ours, deliberate and idempotent.
            connection.max_command_attempts = 1;
            connection.max_command_buffer_len = 10_000;
            // fred's own check, kept as a second line: it times from the last write, so the
            // watchdog's last-reply clock is what actually replaces a silent connection.
            connection.unresponsive = UnresponsiveConfig {
                max_timeout: Some(Duration::from_secs(2)),
                interval: Duration::from_millis(500),
            };
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = Duration::ZERO;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 1_000, 2))
        .build()
        .map_err(|error| RedisError::Failed(error.to_string()))
}

/// `host:port` of a fred server.
pub fn server_name(server: &Server) -> Rc<str> {
    format!("{}:{}", server.host, server.port).into()
}

/// The nodes of one shard and how keys map onto them.
pub struct Topology {
    /// The configuration every node's client starts from.
    base: Config,
    /// The seed nodes of a cluster URL (kept for discovery even when they serve no slot); empty
    /// for one Redis.
    seeds: Vec<Rc<str>>,
    nodes: HashMap<Rc<str>, Rc<Node>>,
    /// The slot map, once learnt (cluster only).
    routing: Option<ClusterRouting>,
    /// Set by a redirection or a cluster error: the slot map must be learnt again.
    pub stale: bool,
    /// When the slot map was last learnt.
    pub refreshed_at: Option<Instant>,
}

impl Topology {
    /// The nodes of `config`: its one server, or every seed of a cluster URL (connecting in the
    /// background; the slot map is learnt by [`super::watchdog`]).
    pub fn new(config: Config) -> Result<Self, RedisError> {
        let mut topology = Self {
            base: config.clone(),
            seeds: Vec::new(),
            nodes: HashMap::new(),
            routing: None,
            stale: true,
            refreshed_at: None,
        };
        match &config.server {
            ServerConfig::Clustered { hosts, .. } => {
                for host in hosts.iter().take(MAX_NODES) {
                    let name = server_name(host);
                    topology.seeds.push(name.clone());
                    topology.add(name, host)?;
                }
            }
            _ => {
                let name: Rc<str> = match config.server.hosts().first() {
                    Some(server) => server_name(server),
                    None => "redis".into(),
                };
                let node = Node::connect(name.clone(), config)?;
                topology.nodes.insert(name, Rc::new(node));
            }
        }
        Ok(topology)
    }

    /// Whether this is a Redis Cluster.
    pub fn clustered(&self) -> bool {
        self.base.server.is_clustered()
    }

    fn add(&mut self, name: Rc<str>, server: &Server) -> Result<(), RedisError> {
        if self.nodes.contains_key(&name) || self.nodes.len() >= MAX_NODES {
            return Ok(());
        }
        let mut config = self.base.clone();
        config.server = ServerConfig::Centralized {
            server: server.clone(),
        };
        let node = Node::connect(name.clone(), config)?;
        self.nodes.insert(name, Rc::new(node));
        Ok(())
    }

    /// The node serving `key`.
    pub fn route(&self, key: &str) -> Result<Rc<Node>, RedisError> {
        let name = match &self.routing {
            None if self.clustered() => {
                return Err(RedisError::Failed("cluster slot map not known yet".into()))
            }
            None => self.nodes.keys().next().cloned(),
            Some(routing) => master_of(routing, key),
        };
        name.and_then(|name| self.nodes.get(&name))
            .cloned()
            .ok_or_else(|| RedisError::Failed(format!("no redis node serves key {key:?}")))
    }

    /// Every node, for the watchdog.
    pub fn nodes(&self) -> Vec<Rc<Node>> {
        self.nodes.values().cloned().collect()
    }

    /// The nodes that serve keys: the masters of the slot map, or the one node. Seeds that turned
    /// out to be replicas are left out.
    pub fn masters(&self) -> Vec<Rc<Node>> {
        match &self.routing {
            None if self.clustered() => Vec::new(),
            None => self.nodes(),
            Some(routing) => routing
                .unique_primary_nodes()
                .iter()
                .filter_map(|server| self.nodes.get(&server_name(server)).cloned())
                .collect(),
        }
    }

    /// Installs a slot map learnt from `CLUSTER SLOTS`: a client for each new master, none any
    /// more for nodes that are neither masters nor seeds.
    pub fn install(&mut self, routing: ClusterRouting, now: Instant) -> Result<(), RedisError> {
        let masters = routing.unique_primary_nodes();
        for server in &masters {
            self.add(server_name(server), server)?;
        }
        let keep: Vec<Rc<str>> = masters
            .iter()
            .map(server_name)
            .chain(self.seeds.iter().cloned())
            .collect();
        self.nodes.retain(|name, _| keep.contains(name));
        self.routing = Some(routing);
        self.stale = false;
        self.refreshed_at = Some(now);
        Ok(())
    }
}

/// The `host:port` of the master serving `key`'s slot (a SKU's keys all carry its `{sku}` hash
/// tag, so they share one).
pub fn master_of(routing: &ClusterRouting, key: &str) -> Option<Rc<str>> {
    let slot = ClusterRouting::hash_key(key.as_bytes());
    routing.get_server(slot).map(server_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::types::Value;

    fn range(start: i64, end: i64, port: i64) -> Value {
        Value::Array(vec![
            Value::Integer(start),
            Value::Integer(end),
            Value::Array(vec![
                Value::String("127.0.0.1".into()),
                Value::Integer(port),
                Value::String(format!("id{port}").into()),
            ]),
        ])
    }

    #[test]
    fn keys_route_to_their_slots_master() {
        let slots = Value::Array(vec![
            range(0, 5460, 7000),
            range(5461, 10922, 7001),
            range(10923, 16383, 7002),
        ]);
        let routing = ClusterRouting::from_cluster_slots(slots, "127.0.0.1").expect("a slot map");
        // Slots from `CLUSTER KEYSLOT`: foo 12182, bar 5061, and a hash tag picks its slot.
        assert_eq!(
            master_of(&routing, "foo").as_deref(),
            Some("127.0.0.1:7002")
        );
        assert_eq!(
            master_of(&routing, "bar").as_deref(),
            Some("127.0.0.1:7000")
        );
        assert_eq!(
            master_of(&routing, "seckill:{bar}:stock").as_deref(),
            Some("127.0.0.1:7000")
        );
        let mut masters: Vec<Rc<str>> = routing
            .unique_primary_nodes()
            .iter()
            .map(server_name)
            .collect();
        masters.sort();
        assert_eq!(masters.len(), 3);
    }
}
