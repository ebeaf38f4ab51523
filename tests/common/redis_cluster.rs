//! A local Redis Cluster on ephemeral ports, joined with `redis-cli --cluster create` (Debian's
//! `redis-tools`, which `redis-server` depends on), and the questions tests ask of it.

use std::process::Command;

use super::ports::pick_port;
use super::redis::{FromRedisValue, RedisServer, Value};

/// How a test wants its cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Masters (the slots are split evenly between them).
    pub masters: usize,
    /// Replicas of each master.
    pub replicas: usize,
    /// `cluster-node-timeout`: long by default, so a loaded machine's late heartbeats never mark
    /// a master failing (without replicas a failing master takes the cluster down mid-test).
    pub node_timeout_ms: u64,
    /// `cluster-require-full-coverage`: `false` keeps the other masters serving while one is down.
    pub full_coverage: bool,
    /// Any other `redis-server` arguments, for every node.
    pub extra: Vec<&'static str>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas: 0,
            node_timeout_ms: 30_000,
            full_coverage: true,
            extra: Vec::new(),
        }
    }
}

/// Why a cluster could not be made.
#[derive(Debug)]
pub enum ClusterError {
    /// `redis-cli` is not there to join the nodes: the caller decides whether that is a skip.
    NoRedisCli(String),
    /// It ran and failed, or the cluster never became ready: a failure.
    Failed(String),
}

/// Starts the cluster `spec` describes and waits until every node reports `cluster_state:ok`
/// (and, with replicas, every replica's link is up). Nodes are ordered as started: masters come
/// first only by `redis-cli`'s choice, so ask [`slot_owner`] which one serves what.
pub fn try_start(spec: &ClusterSpec) -> Result<Vec<RedisServer>, ClusterError> {
    let timeout = spec.node_timeout_ms.to_string();
    let nodes: Vec<RedisServer> = (0..spec.masters * (1 + spec.replicas))
        .map(|_| {
            // The bus port defaults to port + 10000, which may not be free for an ephemeral port.
            let bus = pick_port().to_string();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &timeout,
                "--cluster-port",
                &bus,
                "--cluster-require-full-coverage",
                if spec.full_coverage { "yes" } else { "no" },
            ];
            args.extend(spec.extra.iter().copied());
            RedisServer::try_start(&args)
        })
        .collect::<Result<_, _>>()
        .map_err(ClusterError::Failed)?;
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args([
            "--cluster-replicas",
            &spec.replicas.to_string(),
            "--cluster-yes",
        ])
        .output()
        .map_err(|e| ClusterError::NoRedisCli(e.to_string()))?;
    if !created.status.success() {
        return Err(ClusterError::Failed(format!(
            "redis-cli --cluster create {addrs:?} failed with {}:\n{}{}",
            created.status,
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        )));
    }
    let mut last = String::new();
    let ready = super::poll(super::process::READY_BOUND, || {
        nodes
            .iter()
            .all(|node| {
                let info: String = node.query(&["CLUSTER", "INFO"]).unwrap_or_default();
                let linked = spec.replicas == 0 || {
                    let replication: String =
                        node.query(&["INFO", "replication"]).unwrap_or_default();
                    replication.contains("state=online")
                        || replication.contains("master_link_status:up")
                };
                let ok = info.contains("cluster_state:ok") && linked;
                if !ok {
                    last = format!("127.0.0.1:{}: {info}", node.port);
                }
                ok
            })
            .then_some(())
    });
    if ready.is_none() {
        return Err(ClusterError::Failed(format!(
            "the cluster never became ready; last CLUSTER INFO {last}"
        )));
    }
    Ok(nodes)
}

/// [`try_start`], panicking on any failure (a test that needs a cluster and has none fails).
pub fn start(spec: &ClusterSpec) -> Vec<RedisServer> {
    try_start(spec).unwrap_or_else(|e| panic!("redis cluster: {e:?}"))
}

/// Three masters, no replicas, the defaults of [`ClusterSpec`].
pub fn three_masters() -> Vec<RedisServer> {
    start(&ClusterSpec::default())
}

/// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,...`, the form the README documents.
pub fn url(nodes: &[RedisServer]) -> String {
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    format!("redis-cluster://{}", hosts.join(","))
}

/// The slot of `key` (of its hash tag, if it has one), from `CLUSTER KEYSLOT` on `port`.
pub fn key_slot(port: u16, key: &str) -> i64 {
    super::redis::query(port, &["CLUSTER", "KEYSLOT", key])
        .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key} on {port}: {e}"))
}

/// The port of the master serving `slot`, from `CLUSTER SLOTS` on `port`.
pub fn slot_owner(port: u16, slot: i64) -> u16 {
    // [[start, end, [host, port, id, ...], replicas...], ...]
    let ranges: Vec<Vec<Value>> = super::redis::query(port, &["CLUSTER", "SLOTS"])
        .unwrap_or_else(|e| panic!("CLUSTER SLOTS on {port}: {e}"));
    for range in &ranges {
        let start = i64::from_redis_value(&range[0]).expect("slot range start");
        let end = i64::from_redis_value(&range[1]).expect("slot range end");
        if (start..=end).contains(&slot) {
            let master = Vec::<Value>::from_redis_value(&range[2]).expect("slot range master");
            return u16::from_redis_value(&master[1]).expect("master port");
        }
    }
    panic!("slot {slot} is not served: {ranges:?}");
}
