//! `--redis-wait N`: an order or a payment is acknowledged only once N replicas have it, so a
//! failover to one of them cannot lose it.
//!
//! After a purchase or transition script (and the sync, whose stock levels the regression check
//! trusts), the store sends `WAIT N timeout` and answers 503 (the call fails, and is retried
//! once within the budget like any unavailable call) when fewer than N replicas confirmed in
//! time. The orders stay on the master; the retry path and the abandon path find
//! them there.
//!
//! `WAIT` counts the replication offset of *the connection it is sent on*: the offset after that
//! connection's last write. Sent on another connection (say, a fresh one after a reconnect), it
//! would count nothing and return at once, a false success. So each acknowledged call sends,
//! back to back on one connection:
//!
//! 1. `EVALSHA` the script;
//! 2. `EVAL` a fence: a write (set and delete a key that never outlives the script) that is
//!    replicated whatever the script did. Its offset covers everything the master had applied,
//!    so the `WAIT` also covers orders the script only *found* (a retry of an order whose first
//!    attempt did write it, an idempotent replay, a payment already made) and whose own write
//!    may have come through another connection that is gone;
//! 3. `WAIT N timeout`.
//!
//! How "one connection" is guaranteed with fred 10.1. All three are handed to fred's router in
//! one synchronous step (the first poll of a join: no other task runs in between), so they sit
//! next to each other in its queue. The router reconnects only when it reaches a `Reconnect`
//! entry in that queue: a connection that breaks while it writes or reads them queues its
//! reconnection *behind* them, and the ones not yet written find no connection and fail. With
//! `fail_fast` and one write attempt, none is ever kept for a retry on a new connection; every
//! one without a reply fails, and so does the call. On Redis Cluster all three are routed by the
//! SKU's slot on the SKU's master's own client, and redirections are not followed: a `MOVED` fails the call, and the retry sends all three to the new owner together.
//! A call succeeds only if all three answered.
//!
//! fred's own `Pipeline` is not used: under glommio its reply counter skips one (its `Cell`
//! based `fetch_add` returns the new value, and the caller adds one again), so a pipeline
//! answers before its last reply and the connection is torn down when that reply comes.
//! Commands are also sent through `custom`, not `LuaInterface::evalsha`: `WithOptions` does not
//! implement `LuaInterface`, so `evalsha` on it derefs to the plain client and drops the options.

use std::time::Duration;

use fred::error::{Error, ErrorKind};
use fred::interfaces::{ClientLike, ServerInterface};
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};

use super::calls::{evalsha_argv, Route};
use super::RedisStore;

/// How many replicas must confirm each acknowledged write, and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    /// Replicas that must have the write before it is acknowledged; 0 sends no `WAIT`.
    pub replicas: u32,
    /// `WAIT`'s own timeout. At least 1 ms: `WAIT` with 0 waits for ever.
    pub timeout: Duration,
}

impl Default for ReplicaWait {
    fn default() -> Self {
        Self {
            replicas: 0,
            timeout: Duration::from_millis(100),
        }
    }
}

/// A write that is always replicated and leaves nothing behind: its offset is the master's
/// offset at that moment.
const FENCE: &str = "redis.call('SET', KEYS[1], '1') redis.call('DEL', KEYS[1]) return 1";

impl RedisStore {
    /// One attempt on `route`'s node: the script, the fence and `WAIT` back to back on its one
    /// connection; the script loaded and all three sent again on `NOSCRIPT`.
    pub(super) async fn script_then_wait(
        &self,
        route: &Route,
        script: &Script,
        keys: &[String],
        args: &[String],
        fence: &str,
        wait: ReplicaWait,
    ) -> Result<Value, Error> {
        match self
            .script_fence_wait(route, script, keys, args, fence, wait)
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                script.load(&route.node.client()).await?;
                self.script_fence_wait(route, script, keys, args, fence, wait)
                    .await
            }
            result => result,
        }
    }

    async fn script_fence_wait(
        &self,
        route: &Route,
        script: &Script,
        keys: &[String],
        args: &[String],
        fence: &str,
        wait: ReplicaWait,
    ) -> Result<Value, Error> {
        let slot = fred::util::redis_keyslot(fence.as_bytes());
        let options = Options {
            // Never queued for a reconnection, never re-sent on another connection.
            fail_fast: true,
            max_attempts: Some(1),
            // A redirect would send part of the sequence to another node.
            max_redirections: Some(0),
            cluster_hash: Some(ClusterHash::Custom(slot)),
            ..Options::default()
        };
        let client = route.node.client().with_options(&options);
        let evalsha = evalsha_argv(script, keys, args);
        let custom = |name| CustomCommand::new_static(name, ClusterHash::Custom(slot), false);
        let fence_args: Vec<Value> = vec![FENCE.into(), 1_i64.into(), fence.into()];
        let timeout_ms = wait.timeout.as_millis().clamp(1, i64::MAX as u128) as i64;
        // join3 polls the three in order on its first poll: each is queued to the router before
        // this task yields (see the module docs).
        let (reply, fenced, acked) = futures::future::join3(
            Box::pin(client.custom::<Value, Value>(custom("EVALSHA"), evalsha)),
            Box::pin(client.custom::<Value, Value>(custom("EVAL"), fence_args)),
            Box::pin(client.wait::<i64>(i64::from(wait.replicas), timeout_ms)),
        )
        .await;
        let reply = reply?;
        fenced?;
        let acked = acked?;
        if acked < i64::from(wait.replicas) {
            tracing::debug!(
                acked,
                wanted = wait.replicas,
                "too few replicas confirmed a write"
            );
            // An unavailable-kind error: retried once within the budget, then 503, and counted
            // by the node's breaker.
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "WAIT: {acked} of {} replica(s) confirmed within {timeout_ms} ms",
                    wait.replicas
                ),
            ));
        }
        Ok(reply)
    }

    /// The key the fence writes, in `sku`'s slot.
    pub(super) fn fence_key(&self, sku: &str) -> String {
        format!("{}:{{{sku}}}:fence", self.0.prefix)
    }
}
