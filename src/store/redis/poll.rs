//! The safety polls of one tick, batched: on one Redis, one `MGET` per [`CHUNK`] SKUs instead of
//! one round trip per SKU (most of an idle SKU's cost in Redis was the round trip itself: a read
//! and a write syscall, an event-loop turn); and the idle lease renewals. (fred 10.1's
//! pipelines mismatched replies here under glommio, "unexpected buffer response index", so
//! nothing is pipelined.)

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use fred::interfaces::KeysInterface;
use fred::types::Value;

use super::calls::Route;
use super::reclaim::{lease_keys, watch_of, Watch};
use super::{RedisStore, BACKGROUND_TIMEOUT};

/// Most SKUs in one `MGET` (four keys each).
const CHUNK: usize = 256;
/// Keys read per SKU.
const WATCHED: usize = 4;

/// One command of a batch.
enum Op {
    /// Read the SKU's watch keys.
    Poll(Box<str>),
    /// Renew this shard's lease of the SKU with `RENEW`.
    Renew(Box<str>),
}

/// What a batch found.
#[derive(Debug, Default)]
pub(super) struct Polled {
    /// Each polled SKU's watch keys, as `MGET` read them (a SKU whose read failed is absent).
    pub watches: HashMap<Box<str>, Watch>,
    /// The SKUs whose lease this shard renewed.
    pub renewed: HashSet<Box<str>>,
}

/// The keys a watcher compares between reads, in [`Watch`] order: `remaining`, `seq`, the
/// regression marker and the lease. `sync_sku`'s own `MGET` reads the same.
pub(super) fn watch_names(prefix: &str, sku: &str) -> Vec<String> {
    let keys = super::keys::SkuKeys::new(prefix, sku).0;
    let [lease, _] = lease_keys(prefix, sku);
    vec![keys[1].clone(), keys[2].clone(), keys[12].clone(), lease]
}

impl RedisStore {
    /// Reads the watch keys of `polls` and renews the leases of `renews`, one `MGET` per
    /// node and [`CHUNK`] SKUs on one Redis, one per SKU on a cluster.
    pub(super) async fn poll_batch(&self, polls: Vec<Box<str>>, renews: Vec<Box<str>>) -> Polled {
        let mut groups: HashMap<Rc<str>, (Route, Vec<Op>)> = HashMap::new();
        let ops = polls
            .into_iter()
            .map(Op::Poll)
            .chain(renews.into_iter().map(Op::Renew));
        for op in ops {
            let (Op::Poll(sku) | Op::Renew(sku)) = &op;
            let [lease, _] = lease_keys(&self.0.prefix, sku);
            let Ok(route) = self.route(&lease) else {
                continue;
            };
            let server = route.node.server.clone();
            groups
                .entry(server)
                .or_insert_with(|| (route, Vec::new()))
                .1
                .push(op);
        }
        let mut polled = Polled::default();
        let token = self.0.reclaim.borrow().token.clone();
        for (route, ops) in groups.into_values() {
            let mut ops = ops.into_iter().peekable();
            while ops.peek().is_some() {
                let chunk: Vec<Op> = ops.by_ref().take(CHUNK).collect();
                self.run_chunk(&route, chunk, &token, &mut polled).await;
            }
        }
        polled
    }

    async fn run_chunk(&self, route: &Route, chunk: Vec<Op>, token: &str, polled: &mut Polled) {
        let (polls, renews): (Vec<Op>, Vec<Op>) =
            chunk.into_iter().partition(|op| matches!(op, Op::Poll(_)));
        // Renewals one by one: a script call per key, as they are on a cluster anyway.
        for op in renews {
            let Op::Renew(sku) = op else { continue };
            let [lease, _] = lease_keys(&self.0.prefix, &sku);
            let ttl = self.0.schedule.borrow().lease_ttl(&sku);
            let args = vec![token.to_owned(), ttl.as_millis().to_string()];
            let sent = Instant::now();
            let attempt = self.evalsha(route, &self.0.scripts.renew, vec![lease], args);
            let reply = self
                .call(route, BACKGROUND_TIMEOUT, Box::pin(attempt))
                .await;
            let mut reclaim = self.0.reclaim.borrow_mut();
            if matches!(reply.map(|value| value.as_i64()), Ok(Some(1))) {
                reclaim.held.insert(sku.clone(), sent);
                polled.renewed.insert(sku);
            } else {
                reclaim.held.remove(&sku);
            }
        }
        if polls.is_empty() {
            return;
        }
        // One Redis (or Sentinel): one `MGET` for the whole chunk. A cluster refuses keys of
        // different slots in one command, even on one node: one `MGET` per SKU there.
        let clustered = self.0.topology.borrow().clustered();
        let groups: Vec<Vec<Box<str>>> = polls
            .into_iter()
            .filter_map(|op| match op {
                Op::Poll(sku) => Some(sku),
                Op::Renew(_) => None,
            })
            .fold(Vec::new(), |mut groups: Vec<Vec<Box<str>>>, sku| {
                match groups.last_mut() {
                    Some(last) if !clustered => last.push(sku),
                    _ => groups.push(vec![sku]),
                }
                groups
            });
        for skus in groups {
            let names: Vec<String> = skus
                .iter()
                .flat_map(|sku| watch_names(&self.0.prefix, sku))
                .collect();
            let read = Box::pin(route.mget::<Value, _>(names));
            let Ok(reply) = self.call(route, BACKGROUND_TIMEOUT, read).await else {
                continue;
            };
            let values = reply.into_array();
            for (sku, fields) in skus.into_iter().zip(values.chunks(WATCHED)) {
                polled
                    .watches
                    .insert(sku, watch_of(Value::Array(fields.to_vec())));
            }
        }
    }
}
