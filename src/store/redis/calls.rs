//! How every Redis call is made: under the circuit breaker and a glommio deadline, retried with
//! backoff and jitter when Redis was unavailable, failing at once while disconnected, and with
//! scripts loaded again on `NOSCRIPT`. Also the fred workaround every shard needs.

use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::Value;
use rand::Rng;

use super::breaker::BreakerState;
use super::{RedisError, RedisStore, ATTEMPTS, CALL_TIMEOUT, FIRST_BACKOFF};
use crate::clock::elapsed_nanos;

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

impl RedisStore {
    /// Runs one Redis operation under the breaker and the deadline, recording its latency.
    pub(super) async fn call<T, F>(&self, operation: F) -> Result<T, RedisError>
    where
        F: std::future::Future<Output = Result<T, fred::error::Error>>,
    {
        if !self.0.breaker.borrow_mut().admit(Instant::now()) {
            return Err(RedisError::Open);
        }
        let started = Instant::now();
        let attempt = async { Ok(operation.await) };
        let result = match glommio::timer::timeout(CALL_TIMEOUT, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_unavailable(&error) => Err(RedisError::Failed(error.to_string())),
            Ok(Err(error)) => Err(RedisError::Rejected(error.to_string())),
            Err(_) => Err(RedisError::Timeout),
        };
        let mut metrics = self.0.metrics.borrow_mut();
        metrics.call_latency.record(elapsed_nanos(started));
        match &result {
            Err(RedisError::Timeout) => metrics.timeouts += 1,
            Err(_) => metrics.errors += 1,
            Ok(_) => {}
        }
        let mut breaker = self.0.breaker.borrow_mut();
        let was_open = matches!(breaker.state(), BreakerState::Open(_));
        // Redis answered a rejection: it is up, so the breaker counts it as a success.
        let answered = !matches!(result, Err(RedisError::Failed(_) | RedisError::Timeout));
        breaker.record(answered, Instant::now());
        if !was_open && matches!(breaker.state(), BreakerState::Open(_)) {
            metrics.breaker_opened += 1;
            tracing::warn!(shard = self.0.shard, "redis circuit breaker opened");
        }
        result
    }

    /// [`RedisStore::call`] with retries, for operations that are safe to repeat (all of ours).
    pub(super) async fn retrying<T, F, Fut>(&self, mut operation: F) -> Result<T, RedisError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, fred::error::Error>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.call(operation()).await {
                Ok(value) => return Ok(value),
                Err(
                    error @ (RedisError::Open | RedisError::Rejected(_) | RedisError::Reply(_)),
                ) => return Err(error),
                Err(error) if attempt >= ATTEMPTS => return Err(error),
                Err(_) => {
                    let jitter = self
                        .0
                        .rng
                        .borrow_mut()
                        .gen_range(0..=backoff.as_micros() as u64);
                    glommio::timer::sleep(backoff + Duration::from_micros(jitter)).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Runs `script` over `sku`'s keys, with retries.
    pub(super) async fn script(
        &self,
        script: &Script,
        sku: &str,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        let keys = self.keys(sku).0;
        self.retrying(|| self.evalsha(script, keys.clone(), args.clone()))
            .await
    }

    /// The client, failing at once while disconnected. Otherwise fred would queue the command
    /// and send it after reconnecting, long after its caller was told 503: a purchase would then
    /// create an order nobody is waiting for.
    pub(super) fn now_or_never(&self) -> fred::clients::WithOptions<Client> {
        self.0.client.with_options(&Options {
            fail_fast: true,
            ..Options::default()
        })
    }

    /// `EVALSHA`, loading the script and trying again on `NOSCRIPT` (a restarted or failed-over
    /// Redis has none).
    pub(super) async fn evalsha(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, fred::error::Error> {
        let client = self.now_or_never();
        match client
            .evalsha::<Value, _, _, _>(script.sha1().clone(), keys.clone(), args.clone())
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                script.load(&self.0.client).await?;
                client
                    .evalsha::<Value, _, _, _>(script.sha1().clone(), keys, args)
                    .await
            }
            result => result,
        }
    }
}
