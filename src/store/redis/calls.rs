//! How every Redis call is made: routed to the node serving its key, under that node's circuit
//! breaker and a glommio deadline, retried once with backoff and jitter within the operation's
//! budget when Redis was unavailable, failing at once while disconnected, and with scripts
//! loaded again on `NOSCRIPT`. Also the fred workaround every shard
//! needs.

use std::cell::Cell;
use std::ops::Deref;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fred::clients::{Client, WithOptions};
use fred::interfaces::ClientLike;
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};
use rand::Rng;

use super::breaker::BreakerState;
use super::budget::{Budget, ATTEMPTS};
use super::topology::Node;
use super::{RedisError, RedisStore, FIRST_BACKOFF};
use crate::clock::elapsed_nanos;

/// The node serving a key, and a client to it that fails at once while disconnected. Derefs to
/// the client, so fred's commands are called on it directly.
///
/// Failing at once matters: otherwise fred would queue the command and send it after
/// reconnecting, long after its caller was told 503, and a purchase would then create an order
/// nobody is waiting for.
pub(super) struct Route {
    pub(super) node: Rc<Node>,
    client: WithOptions<Client>,
}

impl Deref for Route {
    type Target = WithOptions<Client>;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

/// A tokio context for the shard thread, entered for the shard's lifetime in cluster mode.
///
/// fred 10 under glommio still wraps closing a dropped connection in a hard-coded 5 s
/// `tokio::time::timeout`, which panics without a tokio context and takes the shard down the
/// first time Redis goes away. With this (never driven) context entered, that timeout merely
/// never fires; the close itself finishes as soon as the socket does. Every timeout we rely on
/// is a glommio timer.
pub fn fred_compat_context() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
}

/// Whether a fred error means Redis could not be reached or is not serving now (worth a retry,
/// and a failure for the breaker), rather than Redis rejecting the command.
pub(super) fn is_unavailable(error: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    let busy = [
        // A demoted master (a failover Sentinel did not tell this connection about), or one
        // short of `min-replicas-to-write`: not a refusal of the command.
        "READONLY",
        "NOREPLICAS",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "LOADING",
        "MASTERDOWN",
        "MOVED",
        "ASK",
    ]
    .iter()
    .any(|prefix| error.details().starts_with(prefix));
    busy || matches!(
        error.kind(),
        ErrorKind::IO
            | ErrorKind::Canceled
            | ErrorKind::Timeout
            | ErrorKind::Cluster
            | ErrorKind::Routing
            | ErrorKind::Backpressure
    )
}

/// Whether a fred error says the key's slot moved or the cluster is reconfiguring: the slot map
/// must be learnt again.
fn is_redirection(error: &fred::error::Error) -> bool {
    ["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"]
        .iter()
        .any(|prefix| error.details().starts_with(prefix))
        || matches!(error.kind(), fred::error::ErrorKind::Routing)
}

impl RedisStore {
    /// The node serving `key`, or why there is none (a cluster's slot map not learnt yet).
    pub(super) fn route(&self, key: &str) -> Result<Route, RedisError> {
        let node = self.0.topology.borrow().route(key)?;
        let client = node.client().with_options(&Options {
            fail_fast: true,
            ..Options::default()
        });
        Ok(Route { node, client })
    }

    /// Runs one Redis operation on `route`'s node, under its breaker and within `limit`,
    /// recording its latency and its node's reply clock.
    pub(super) async fn call<T, F>(
        &self,
        route: &Route,
        limit: Duration,
        operation: F,
    ) -> Result<T, RedisError>
    where
        F: std::future::Future<Output = Result<T, fred::error::Error>>,
    {
        let node = &route.node;
        if !node.breaker().borrow_mut().admit(Instant::now()) {
            return Err(RedisError::Open);
        }
        let started = Instant::now();
        let result = if node.connected() {
            node.watch.borrow_mut().sent(started);
            let attempt = async { Ok(operation.await) };
            match glommio::timer::timeout(limit, attempt).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => {
                    if is_redirection(&error) {
                        self.0.topology.borrow_mut().stale = true;
                    }
                    if error.details().starts_with("READONLY") {
                        // Still connected to a master that was demoted: a new connection asks
                        // Sentinel (or the slot map) for the current one.
                        tracing::warn!(node = %node.server, "redis node is a replica now; reconnecting");
                        if let Err(error) = node.replace() {
                            tracing::error!(node = %node.server, %error, "could not rebuild the redis client");
                        }
                    }
                    if is_unavailable(&error) {
                        Err(RedisError::Failed(error.to_string()))
                    } else {
                        Err(RedisError::Rejected(error.to_string()))
                    }
                }
                Err(_) => Err(RedisError::Timeout),
            }
        } else {
            // Not sent at all: fred would queue it until reconnected, and send it long after
            // its caller was told 503 (see `topology::Link`).
            Err(RedisError::Failed("not connected".into()))
        };
        if !matches!(result, Err(RedisError::Timeout)) {
            node.watch.borrow_mut().answered();
        } else if !node.connected() {
            // The connection was lost just as the call was sent: it waits in fred's queue, which
            // is not read while fred reconnects, and would be sent once Redis is back, long after
            // its caller was told 503 (a purchase would make an order nobody waits for).
            // Replacing the client drops that queue with its router task.
            tracing::warn!(node = %node.server, "redis call queued while reconnecting; dropping it");
            if let Err(error) = node.replace() {
                tracing::error!(node = %node.server, %error, "could not rebuild the redis client");
            }
        }
        if let Err(error) = &result {
            tracing::debug!(node = %node.server, %error, "redis attempt failed");
        }
        let mut metrics = self.0.metrics.borrow_mut();
        metrics.call_latency.record(elapsed_nanos(started));
        match &result {
            Err(RedisError::Timeout) => metrics.timeouts += 1,
            Err(_) => metrics.errors += 1,
            Ok(_) => {}
        }
        let mut breaker = node.breaker().borrow_mut();
        let was_open = matches!(breaker.state(), BreakerState::Open(_));
        // Redis answered a rejection: it is up, so the breaker counts it as a success.
        let answered = !matches!(result, Err(RedisError::Failed(_) | RedisError::Timeout));
        breaker.record(answered, Instant::now());
        if !was_open && matches!(breaker.state(), BreakerState::Open(_)) {
            node.breaker_opened.set(node.breaker_opened.get() + 1);
            tracing::warn!(
                shard = self.0.shard,
                node = %node.server,
                "redis circuit breaker opened"
            );
        }
        result
    }

    /// [`RedisStore::call`] with one retry, both within the operation budget, for operations
    /// that are safe to repeat (all of ours). `operation` makes each attempt's future; the
    /// route is fixed for the operation.
    pub(super) async fn retrying<T, F, Fut>(
        &self,
        route: &Route,
        mut operation: F,
    ) -> Result<T, RedisError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, fred::error::Error>>,
    {
        let budget = Budget::new(Instant::now(), self.0.budget);
        let mut attempt = 1;
        loop {
            let limit = budget.remaining(Instant::now());
            match self.call(route, limit, operation()).await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    attempt += 1;
                    self.pause_before_retry(&budget, attempt, error).await?;
                }
            }
        }
    }

    /// Returns `error` when it is final (not worth a retry, or no attempt or time left);
    /// otherwise sleeps the backoff.
    async fn pause_before_retry(
        &self,
        budget: &Budget,
        attempt: u32,
        error: RedisError,
    ) -> Result<(), RedisError> {
        if attempt > ATTEMPTS
            || matches!(
                error,
                RedisError::Open | RedisError::Rejected(_) | RedisError::Reply(_)
            )
        {
            return Err(error);
        }
        let jitter = self
            .0
            .rng
            .borrow_mut()
            .gen_range(0..=FIRST_BACKOFF.as_micros() as u64);
        let backoff = FIRST_BACKOFF + Duration::from_micros(jitter);
        match budget.retry_after(Instant::now(), backoff) {
            Some(pause) => {
                glommio::timer::sleep(pause).await;
                Ok(())
            }
            None => Err(error),
        }
    }

    /// Runs `script` over `sku`'s keys, with one retry within the budget. Each attempt is
    /// routed again, so a retry after a redirection goes to the slot's new master once the
    /// slot map has been learnt again.
    pub(super) async fn script(
        &self,
        script: &Script,
        sku: &str,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        self.run_script(script, sku, Vec::new(), args, &Cell::new(false), false)
            .await
    }

    /// [`RedisStore::script`] for a script whose reply becomes a 201 or 200: with
    /// `--redis-wait N` it counts as done only once N replicas have it ([`super::replication`]).
    /// Sets `sent` once an attempt went out: from then on the script may have run even if no
    /// reply comes back (a purchase's order may exist, see [`super::abandon`]). An attempt the
    /// breaker refused, or that found its node disconnected, was never sent.
    pub(super) async fn acknowledged_script(
        &self,
        script: &Script,
        sku: &str,
        args: Vec<String>,
        sent: &Cell<bool>,
    ) -> Result<Value, RedisError> {
        self.run_script(script, sku, Vec::new(), args, sent, true)
            .await
    }

    /// [`RedisStore::acknowledged_script`] with `extra` keys (of the same slot) after the
    /// sixteen of `sku`.
    pub(super) async fn acknowledged_script_with(
        &self,
        script: &Script,
        sku: &str,
        extra: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        self.run_script(script, sku, extra, args, &Cell::new(false), true)
            .await
    }

    async fn run_script(
        &self,
        script: &Script,
        sku: &str,
        extra: Vec<String>,
        args: Vec<String>,
        sent: &Cell<bool>,
        acknowledged: bool,
    ) -> Result<Value, RedisError> {
        let wait = self.0.wait;
        let acknowledged = acknowledged && wait.replicas > 0;
        let fence = self.fence_key(sku);
        let mut keys = self.keys(sku).0;
        keys.extend(extra);
        let key = keys.first().cloned().unwrap_or_default();
        let budget = Budget::new(Instant::now(), self.0.budget);
        let mut attempt = 1;
        loop {
            let result = match self.route(&key) {
                Ok(route) => {
                    let limit = budget.remaining(Instant::now());
                    let (keys, args, route_ref, fence) = (&keys, &args, &route, &fence);
                    let call = async move {
                        // Polled only once the breaker let the attempt through to a connected
                        // node.
                        sent.set(true);
                        if acknowledged {
                            self.script_then_wait(route_ref, script, keys, args, fence, wait)
                                .await
                        } else {
                            self.evalsha(route_ref, script, keys.clone(), args.clone())
                                .await
                        }
                    };
                    self.call(&route, limit, call).await
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(error) => {
                    attempt += 1;
                    self.pause_before_retry(&budget, attempt, error).await?;
                }
            }
        }
    }

    /// `EVALSHA` on `route`'s node, loading the script and trying again on `NOSCRIPT` (a
    /// restarted or failed-over Redis has none).
    pub(super) async fn evalsha(
        &self,
        route: &Route,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, fred::error::Error> {
        // Through `custom`: `WithOptions` does not implement `LuaInterface`, so `evalsha` on it
        // would deref to the plain client and drop `fail_fast`, queueing the script while
        // disconnected and sending it after its caller was told 503.
        let command = || CustomCommand::new_static("EVALSHA", ClusterHash::FirstKey, false);
        let argv = evalsha_argv(script, &keys, &args);
        match route
            .client
            .custom::<Value, Value>(command(), argv.clone())
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                script.load(&route.node.client()).await?;
                route.client.custom::<Value, Value>(command(), argv).await
            }
            result => result,
        }
    }
}

/// `EVALSHA`'s arguments: the script's digest, the key count, the keys, the arguments.
pub(super) fn evalsha_argv(script: &Script, keys: &[String], args: &[String]) -> Vec<Value> {
    let mut argv = Vec::with_capacity(2 + keys.len() + args.len());
    argv.push(Value::from(script.sha1().clone()));
    argv.push((keys.len() as i64).into());
    argv.extend(keys.iter().map(|key| Value::from(key.as_str())));
    argv.extend(args.iter().map(|arg| Value::from(arg.as_str())));
    argv
}
