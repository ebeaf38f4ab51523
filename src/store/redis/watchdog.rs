//! Each shard's Redis watchdog: replaces a connection that stopped answering, and keeps a
//! cluster's slot map current.
//!
//! A connection can go silent without FIN or RST (a frozen proxy, a host gone behind a VIP).
//! fred's own unresponsiveness check times from the last *write*, so any call made now and then
//! (a breaker probe every second) keeps it from ever firing, and the node answers 503 on the same
//! dead socket for good. The watchdog keeps its own clock per node instead: from the first call
//! left unanswered since the last reply. Once that is `--redis-unresponsive-ms` old (default
//! 2 s) and a PING on the same connection goes unanswered too, the node's client is dropped and
//! a new one connects. So is a client that has not
//! managed to connect for as long: fred's connect has no deadline under glommio.
//!
//! The slot map is learnt again after a redirection or cluster error (at the next tick), and
//! every few seconds anyway, so a failover is followed without a restart.

use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::cluster::ClusterRouting;
use fred::types::config::Options;
use fred::types::Value;

use super::topology::Node;
use super::{Inner, RedisStore};

/// How often the slot map is learnt again when nothing asked for it.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Longest the PING that confirms a silent connection may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Longest one `CLUSTER SLOTS` may take before the next node is asked.
const SLOTS_TIMEOUT: Duration = Duration::from_millis(500);

/// One node's reply clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watch {
    /// The start of the oldest call not answered since the last reply; `None` when every call
    /// made so far was answered (or failed on its own, which shows fred is not stuck).
    waiting_since: Option<Instant>,
}

impl Watch {
    /// A call is about to be sent.
    pub fn sent(&mut self, now: Instant) {
        self.waiting_since.get_or_insert(now);
    }

    /// A call got its reply, or an error from fred itself: the connection is not silent.
    pub fn answered(&mut self) {
        self.waiting_since = None;
    }

    /// Whether the node has been silent for `limit` with a call waiting. A call that timed out
    /// on our side still counts as waiting: a dead socket never answers it.
    pub fn silent(&self, now: Instant, limit: Duration) -> bool {
        self.waiting_since
            .is_some_and(|since| now.saturating_duration_since(since) >= limit)
    }
}

/// Runs until the store is dropped.
pub(super) async fn run(store: Weak<Inner>, unresponsive: Duration) {
    // Checked several times per limit, so a silent node is replaced soon after the limit.
    let tick = (unresponsive / 8).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut last_wake = Instant::now();
    loop {
        glommio::timer::sleep(tick).await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        let store = RedisStore(inner);
        let now = Instant::now();
        // A shard thread that was not scheduled for a while (an overloaded host) has replies
        // waiting that it has not read yet: silence measured across such a gap says nothing
        // about the connection.
        let starved = now.saturating_duration_since(last_wake) > tick * 4;
        last_wake = now;
        if starved {
            continue;
        }
        let nodes = store.0.topology.borrow().nodes();
        for node in &nodes {
            // fred's connect and its setup commands have no deadline (its timeouts are zero
            // under glommio): a connection accepted and then frozen would keep the node
            // "connecting" for good, refusing every call. One not connected for the limit is
            // started afresh, which also restarts fred's reconnect backoff.
            if node.connected() {
                node.down_since.set(None);
                continue;
            }
            let since = node.down_since.get().unwrap_or(now);
            node.down_since.set(Some(since));
            if now.saturating_duration_since(since) >= unresponsive {
                tracing::debug!(node = %node.server, "redis connection not made in time; starting afresh");
                if let Err(error) = node.replace() {
                    tracing::error!(node = %node.server, %error, "could not rebuild the redis client");
                }
            }
        }
        let suspects: Vec<_> = nodes
            .into_iter()
            .filter(|node| node.watch.borrow().silent(now, unresponsive))
            .collect();
        if !suspects.is_empty() {
            // Let the reactor deliver any reply already in the socket before judging.
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        for node in suspects {
            if !node.watch.borrow().silent(Instant::now(), unresponsive) {
                continue;
            }
            // The silence may be one call that timed out on our side long ago, on a node this
            // shard rarely calls (nothing since has reset the clock): one PING tells a live
            // connection from a dead one before anything is torn down.
            if answers_ping(&node).await {
                node.watch.borrow_mut().answered();
                continue;
            }
            tracing::warn!(
                shard = store.0.shard,
                node = %node.server,
                silent_ms = unresponsive.as_millis() as u64,
                "redis connection gave no reply; replacing it"
            );
            if let Err(error) = node.replace() {
                tracing::error!(node = %node.server, %error, "could not rebuild the redis client");
            }
        }
        let due = {
            let topology = store.0.topology.borrow();
            topology.clustered()
                && (topology.stale
                    || topology
                        .refreshed_at
                        .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH_EVERY))
        };
        if due {
            refresh(&store).await;
        }
    }
}

/// Whether `node` answers a `PING` within [`PROBE_TIMEOUT`] on its current connection.
async fn answers_ping(node: &Node) -> bool {
    let client = node.client().with_options(&Options {
        fail_fast: true,
        ..Options::default()
    });
    let ping = async { Ok(client.ping::<Value>(None).await) };
    matches!(
        glommio::timer::timeout(PROBE_TIMEOUT, ping).await,
        Ok(Ok(_))
    )
}

/// Learns the slot map from the first node that answers `CLUSTER SLOTS`.
async fn refresh(store: &RedisStore) {
    let nodes = store.0.topology.borrow().nodes();
    // Connected nodes first; a dead one would only fail.
    let (mut candidates, rest): (Vec<_>, Vec<_>) =
        nodes.into_iter().partition(|node| node.connected());
    candidates.extend(rest);
    for node in candidates {
        let client = node.client();
        let asked = async { Ok(client.cluster_slots::<Value>().await) };
        let slots = match glommio::timer::timeout(SLOTS_TIMEOUT, asked).await {
            Ok(Ok(slots)) => slots,
            Ok(Err(error)) => {
                tracing::debug!(node = %node.server, %error, "CLUSTER SLOTS failed");
                continue;
            }
            Err(_) => continue,
        };
        let host = client
            .client_config()
            .server
            .hosts()
            .first()
            .map(|server| server.host.clone());
        let Some(host) = host else { continue };
        match ClusterRouting::from_cluster_slots(slots, host) {
            Ok(routing) if !routing.slots().is_empty() => {
                let installed = store
                    .0
                    .topology
                    .borrow_mut()
                    .install(routing, Instant::now());
                if let Err(error) = installed {
                    tracing::error!(%error, "could not connect to a redis cluster master");
                }
                return;
            }
            Ok(_) => tracing::debug!(node = %node.server, "CLUSTER SLOTS listed no slot"),
            Err(error) => tracing::warn!(node = %node.server, %error, "bad CLUSTER SLOTS reply"),
        }
    }
}

/// Starts the watchdog of `store`.
pub(super) fn spawn(store: &Rc<Inner>, unresponsive: Duration) {
    glommio::spawn_local(run(Rc::downgrade(store), unresponsive)).detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_from_the_first_unanswered_call() {
        let limit = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut watch = Watch::default();
        assert!(!watch.silent(t0 + limit * 10, limit), "idle is not silent");
        watch.sent(t0);
        watch.sent(t0 + Duration::from_secs(1));
        assert!(!watch.silent(t0 + Duration::from_millis(1999), limit));
        assert!(
            watch.silent(t0 + limit, limit),
            "later calls (probes) do not restart the clock"
        );
        watch.answered();
        assert!(!watch.silent(t0 + limit * 2, limit));
        watch.sent(t0 + limit * 3);
        assert!(!watch.silent(t0 + limit * 3, limit));
    }
}
