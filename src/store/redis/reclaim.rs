//! The reclaimer lease: per SKU, one shard of one node sweeps due orders; the others only
//! watch the SKU's stock, cheaply.
//!
//! - **Acquire.** The `SYNC` script ([`super::scripts::SYNC`]) takes `PREFIX:{sku}:reclaim:lease`
//!   with `SET NX PX` when it is free, storing this shard's random token, and `INCR`s the fencing
//!   counter `PREFIX:{sku}:reclaim:fence`, so every holder has a higher number than the one
//!   before (reported as `fence`, logged on takeover).
//! - **Renew.** The holder's `SYNC` renews the lease (`PEXPIRE`, only if the token matches) and
//!   sweeps in the same atomic script, every third of [`LEASE_TTL`] and whenever an order is due.
//! - **Release.** On drain, [`RELEASE`] deletes the lease only if it still holds this shard's
//!   token (compare-and-delete), so another node takes over at its next tick, not after
//!   [`LEASE_TTL`].
//! - **Idle SKUs cost almost nothing.** A shard reads an owned SKU when a change notice names
//!   it, else on a backing-off poll ([`super::schedule`]): `remaining`, `seq`, the regression
//!   marker and the lease, with one `MGET`. Only when one of
//!   them differs from its last full read (a sale sold, was replaced or resumed, regressed, or
//!   the lease is free or changed hands), or as the holder when renewal or a sweep is due, does
//!   it run `SYNC`. So stock changes still reach every node within a tick, and regressions are
//!   still detected against each shard's floor: a lost write changes `seq` or removes it.
//!
//! **Why the lease cannot double-expire an order.** Safety never rested on it: expiring an order
//! is one Lua script that reads the order's status and, only if it is `pending` and due by Redis
//! `TIME`, closes it and returns its stock, atomically. Two sweepers (a holder paused past its
//! lease, a clock that drifts, a lease lost to a failover) each run that step; the second finds
//! the order `expired` and does nothing. The lease check itself runs inside the same script as the
//! sweep, on Redis' clock (`PX` is timed by Redis, not by the node), so a paused node that wakes
//! after its lease expired is refused there, with no gap between the check and the sweep for a
//! pause to fall into. The lease only decides who does the work; when it lapses (the holder died),
//! due orders wait at most [`LEASE_TTL`] plus a tick before another shard takes it and sweeps.

use std::collections::HashMap;
use std::time::Instant;

use fred::types::Value;

use super::RedisStore;

/// How long a lease outlives its holder's last renewal: after a holder dies, another node takes
/// the SKU's sweep over within this plus one owner tick. The holder renews every tick (100 ms
/// plus the sync's own time), so this leaves room for slow ticks before the lease changes hands.
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_millis(1500);

/// Compare-and-delete: `KEYS = [lease]`, `ARGV = [token]`. Returns 1 when the lease was this
/// token's and is gone.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// The lease's two keys of `sku`, after the sixteen of every script: the lease and its fencing
/// counter, both in the SKU's hash slot.
pub fn lease_keys(prefix: &str, sku: &str) -> [String; 2] {
    [
        format!("{prefix}:{{{sku}}}:reclaim:lease"),
        format!("{prefix}:{{{sku}}}:reclaim:fence"),
    ]
}

/// What a watcher compares between ticks: `remaining`, `seq`, the marker and the lease, as read
/// by `MGET` (absent keys are `None`).
pub(super) type Watch = [Option<String>; 4];

/// What a shard learnt from its last full `SYNC` of one SKU, reused while `MGET` shows nothing
/// changed.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// `MGET`'s reading just before that `SYNC`.
    pub watch: Watch,
    /// The `SYNC`'s answer.
    pub synced: crate::store::Synced,
    /// Orders pending then.
    pub pending: u64,
    /// When the first of them is due (this node's monotonic clock: Redis sent a delay, so the
    /// two clocks need not agree).
    pub due_at: Option<Instant>,
}

/// One shard's lease state.
#[derive(Debug)]
pub(super) struct Reclaim {
    /// This shard's lease token: node name, shard and a random number, so a restarted node
    /// (even with the same pid) does not pass for the holder it replaced.
    pub token: String,
    /// SKUs whose lease this shard held at its last `SYNC`, and when that call was sent: the
    /// lease is this shard's until at least then plus [`LEASE_TTL`].
    pub held: HashMap<Box<str>, Instant>,
    /// Per owned SKU, the last full read. Bounded by the SKUs this shard owns (sales are
    /// admin-made).
    pub seen: HashMap<Box<str>, Seen>,
}

impl Reclaim {
    /// A fresh state with a token for `node`'s shard `shard`.
    pub fn new(node: &str, shard: usize, random: u64) -> Self {
        Self {
            token: format!("{node} shard {shard} #{random:016x}"),
            held: HashMap::new(),
            seen: HashMap::new(),
        }
    }
}

/// `MGET`'s reply as a [`Watch`].
pub(super) fn watch_of(reply: Value) -> Watch {
    let mut fields = reply
        .into_array()
        .into_iter()
        .map(|value| value.as_string());
    std::array::from_fn(|_| fields.next().flatten())
}

impl RedisStore {
    /// Gives up every lease this shard holds (compare-and-delete), so another node sweeps its
    /// SKUs at its next tick. Best effort: a lease left behind lapses after [`LEASE_TTL`].
    pub(super) async fn release_leases(&self) {
        let (token, held): (String, Vec<Box<str>>) = {
            let mut reclaim = self.0.reclaim.borrow_mut();
            let held = reclaim.held.drain().map(|(sku, _)| sku).collect();
            (reclaim.token.clone(), held)
        };
        let release = &self.0.scripts.release;
        for sku in held {
            let [lease, _] = lease_keys(&self.0.prefix, &sku);
            let Ok(route) = self.route(&lease) else {
                continue;
            };
            let attempt = self.evalsha(&route, release, vec![lease], vec![token.clone()]);
            let released = self
                .call(&route, super::BACKGROUND_TIMEOUT, Box::pin(attempt))
                .await;
            tracing::debug!(sku = %sku, ?released, "reclaimer lease released");
        }
    }
}

impl RedisStore {
    /// One owner tick's sync of `sku` (or of one part of a split sale, see [`super::buckets`]:
    /// each part has its own lease, watch and regression floor). Every shard first reads four keys (`MGET`); it runs
    /// `SYNC` only when one of them changed since its last full read, when the lease is free
    /// (to take it), or, as the holder, when the lease is due for renewal (every third of
    /// [`LEASE_TTL`]) or an order is due (to sweep). Otherwise it reuses its last answer: an idle
    /// SKU costs one `MGET` per node per tick. Answers with the orders still pending; `None` when
    /// Redis gave no answer.
    pub(super) async fn sync_part(&self, sku: &str) -> Option<(crate::store::Synced, u64)> {
        use fred::interfaces::KeysInterface;

        let mut keys = self.keys(sku).0;
        let lease = lease_keys(&self.0.prefix, sku);
        let route = self.route(keys.first()?).ok()?;
        let started = Instant::now();
        let token = self.0.reclaim.borrow().token.clone();
        let names = super::poll::watch_names(&self.0.prefix, sku);
        let read = Box::pin(route.mget::<Value, _>(names));
        let watch = watch_of(
            self.call(&route, super::BACKGROUND_TIMEOUT, read)
                .await
                .ok()?,
        );
        let free = watch[3].is_none();
        let mine = watch[3].as_deref() == Some(token.as_str());
        // The lease's TTL and renewal period follow the SKU's activity (schedule.rs).
        let renew_every = self.0.schedule.borrow().lease_ttl(sku) / 3;
        let ttl = super::schedule::next_lease_ttl(self.0.reclaim.borrow().seen.get(sku), &watch);
        {
            let reclaim = self.0.reclaim.borrow();
            let renew = reclaim
                .held
                .get(sku)
                .is_none_or(|at| started.duration_since(*at) >= renew_every);
            if let Some(seen) = reclaim.seen.get(sku) {
                let due = seen.due_at.is_some_and(|at| started >= at);
                if seen.watch == watch && !free && !(mine && (renew || due)) {
                    return Some((seen.synced.clone(), seen.pending));
                }
            }
        }
        let sweep = free || mine;
        let mut args = vec![
            self.0.retention.to_string(),
            if sweep {
                super::EXPIRE_PER_SWEEP.to_string()
            } else {
                "0".to_owned()
            },
        ];
        // The view is taken when the call is sent: a purchase answered while it is in flight
        // must not make the older state it reads look like a regression.
        args.extend(self.floor_args(sku));
        args.push(if sweep { token } else { String::new() });
        args.push(ttl.as_millis().to_string());
        keys.extend(lease);
        // With `--redis-wait`, a level is trusted (as the floor a regression is judged against)
        // only once the replicas have it: writes a failover lost before any of them was
        // acknowledged are not a regression.
        let wait = self.0.wait;
        let sync = &self.0.scripts.sync;
        let attempt = async {
            if wait.replicas > 0 {
                let fence = self.fence_key(sku);
                self.script_then_wait(&route, sync, &keys, &args, &fence, wait)
                    .await
            } else {
                self.evalsha(&route, sync, keys.clone(), args.clone()).await
            }
        };
        let sent = Instant::now();
        let reply = self
            .call(&route, super::BACKGROUND_TIMEOUT, Box::pin(attempt))
            .await
            .ok()?;
        let fields = reply.clone().into_array();
        let synced = self.synced(sku, reply).ok()?;
        let holder = super::decode::int_at(&fields, 14).is_ok_and(|flag| flag == 1);
        // A reply without the count (no sale) has nothing pending.
        let pending = super::decode::int_at(&fields, 16).unwrap_or(0);
        let due_at = super::decode::int_at(&fields, 17)
            .ok()
            .map(|delay| sent + std::time::Duration::from_millis(delay));
        let mut reclaim = self.0.reclaim.borrow_mut();
        if holder {
            self.0.schedule.borrow_mut().set_lease_ttl(sku, ttl);
            if reclaim.held.insert(sku.into(), sent).is_none() {
                let fence = super::decode::int_at(&fields, 15).unwrap_or(0);
                tracing::debug!(sku, fence, "reclaimer lease taken");
            }
        } else {
            reclaim.held.remove(sku);
        }
        let seen = Seen {
            watch,
            synced: synced.clone(),
            pending,
            due_at,
        };
        reclaim.seen.insert(sku.into(), seen);
        Some((synced, pending))
    }
}
