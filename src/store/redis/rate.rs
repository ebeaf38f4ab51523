//! Cluster-wide rate limits: one token bucket per sale in Redis, under the SKU's `{sku}` hash
//! tag (so on Redis Cluster it lives with the sale's stock), that shards lease tokens from in
//! blocks ([`crate::sale::admission::Lease`]).
//!
//! The bucket refills at the sale's `rate_limit_per_sec` by Redis's own clock (`TIME`), so node
//! clocks do not matter, and holds at most [`CLUSTER_BURST_SECS`] of it. A lease call takes up to
//! a block (`BLOCK_SECS` of the rate) and answers how long until the bucket has a token again
//! when it is empty. Shards spend leased tokens without a round trip and let unused ones lapse
//! after `LEASE_TTL`; none are given back, so the cluster admits at most the rate, plus the
//! burst and one overdraft token per shard.
//!
//! Failure: when the bucket cannot be reached, a shard admits by its local share of the
//! node-wide rate (fail open to the per-node limit) until a lease call succeeds again. The
//! bucket's key is in the same slot as the sale's stock, so a purchase it lets through then
//! meets the same outage and is answered `503` honestly, instead of a misleading `429`; and
//! while Redis answers for the stock but not the bucket (a script error, a brief blip), the
//! cluster admits at most one node-wide rate per node, as before cluster-wide limits existed.

use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::Value;
use futures::future::LocalBoxFuture;

use super::{RedisError, RedisStore};
use crate::sale::admission::{Grant, TokenSource, CLUSTER_BURST_SECS};

/// Longest a lease call may take. The lease task asks again after a failure; a slow answer
/// only delays tokens, so this is short.
const LEASE_TIMEOUT: Duration = Duration::from_millis(250);

/// How long an untouched bucket is kept: long enough to outlive any lease, short enough that
/// the buckets of sales nobody buys any more disappear. A bucket that expired comes back full,
/// which is what it would have refilled to anyway.
const BUCKET_IDLE_MS: u64 = 10_000;

/// Takes up to `ARGV[3]` tokens from the bucket at `KEYS[1]` (a hash: `tokens`, fractional, and
/// `at`, Redis `TIME` in ms), refilling it first at `ARGV[1]` tokens/s up to `ARGV[2]`.
/// `ARGV[4]` is the key's idle expiry in ms. Returns `{granted, ms until a token is there}`.
/// Numbers are written as strings: Redis would truncate a Lua number to an integer.
pub const RATE_LEASE: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = tokens + (now - at) * rate / 1000
  at = now
end
if tokens > burst then tokens = burst end
local granted = math.floor(math.min(want, tokens))
if granted < 0 then granted = 0 end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local wait = 0
if tokens < 1 and rate > 0 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {granted, wait}
"#;

/// The key of `sku`'s bucket under `prefix`.
pub fn bucket_key(prefix: &str, sku: &str) -> String {
    format!("{prefix}:{{{sku}}}:rate")
}

/// The largest number of tokens `sku`'s bucket holds at `rate_per_sec`.
pub fn burst_for(rate_per_sec: u32) -> u32 {
    (f64::from(rate_per_sec) * CLUSTER_BURST_SECS)
        .ceil()
        .max(1.0) as u32
}

/// A shard's [`TokenSource`] in cluster mode: the buckets in Redis, reached through the
/// shard's own store (its routes, breakers and reply clocks).
pub struct RateLeases {
    store: RedisStore,
    script: Script,
}

impl RateLeases {
    /// Leases through `store`'s connections.
    pub fn new(store: RedisStore) -> Self {
        Self {
            store,
            script: Script::from_lua(RATE_LEASE),
        }
    }

    async fn take(&self, sku: &str, rate_per_sec: u32, want: u32) -> Result<Grant, RedisError> {
        let key = bucket_key(&self.store.0.prefix, sku);
        let route = self.store.route(&key)?;
        let args = vec![
            rate_per_sec.to_string(),
            burst_for(rate_per_sec).max(want).to_string(),
            want.to_string(),
            BUCKET_IDLE_MS.to_string(),
        ];
        let call = self
            .store
            .evalsha(&route, &self.script, vec![key.clone()], args);
        let reply = self.store.call(&route, LEASE_TIMEOUT, call).await?;
        decode_grant(reply)
    }
}

/// Reads the script's `{granted, wait_ms}`.
fn decode_grant(reply: Value) -> Result<Grant, RedisError> {
    let shape = || RedisError::Reply("rate lease: expected {granted, wait_ms}".into());
    let Value::Array(items) = reply else {
        return Err(shape());
    };
    let number = |index: usize| -> Result<u64, RedisError> {
        items.get(index).and_then(Value::as_u64).ok_or_else(shape)
    };
    Ok(Grant {
        tokens: u32::try_from(number(0)?).unwrap_or(u32::MAX),
        retry_after: Duration::from_millis(number(1)?),
    })
}

impl TokenSource for RateLeases {
    fn lease<'a>(
        &'a self,
        sku: &'a str,
        rate_per_sec: u32,
        want: u32,
    ) -> LocalBoxFuture<'a, Option<Grant>> {
        Box::pin(async move {
            match self.take(sku, rate_per_sec, want).await {
                Ok(grant) => Some(grant),
                Err(error) => {
                    tracing::debug!(sku, %error, "rate lease failed; admitting by the local share");
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_shares_the_sales_hash_tag_and_replies_decode() {
        assert_eq!(bucket_key("seckill", "moutai"), "seckill:{moutai}:rate");
        assert_eq!(burst_for(1000), 250);
        assert_eq!(burst_for(1), 1);
        let reply = Value::Array(vec![Value::Integer(7), Value::Integer(3)]);
        assert_eq!(
            decode_grant(reply).ok(),
            Some(Grant {
                tokens: 7,
                retry_after: Duration::from_millis(3)
            })
        );
        assert!(decode_grant(Value::Integer(1)).is_err());
    }
}
