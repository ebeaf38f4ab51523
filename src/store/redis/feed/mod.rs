//! The order feed in cluster mode: each SKU's Redis stream (`K.events`, written by the scripts
//! in the same atomic step as the change it records) is the durable outbox, and a pump per shard
//! publishes the SKUs that shard owns.
//!
//! Per SKU, every tick (`TICK`):
//! 1. [`FEED_READ`] takes or renews the SKU's **lease** (`PREFIX:{sku}:events:lease`, this
//!    pump's unique name, `LEASE_TTL`) and reads up to `BATCH` entries after the **cursor**
//!    (`PREFIX:{sku}:events:cursor`, field `id`: the last entry JetStream acknowledged).
//! 2. Only entries older than the grace period (`RedisStore::feed_grace`) are taken, and the
//!    creation (and the abandon's cancel) of an order abandoned as a ghost is skipped: see
//!    "never invent" below.
//! 3. The events go to the publisher in stream order; the pump polls until JetStream has
//!    acknowledged every one, renewing the lease meanwhile.
//! 4. [`FEED_ADVANCE`] moves the cursor forward (never back, and only for the lease's holder)
//!    and trims the stream up to it (`XTRIM MINID`), so Redis keeps only what is unpublished.
//!
//! The lease only keeps N nodes from each publishing every event: correctness does not rest on
//! it. Two pumps that both believe they hold it each publish one SKU's events in stream order,
//! each event only after the previous one was acknowledged, so the first copy JetStream stores
//! of each event still comes in stream order, and it drops the later copies by `Nats-Msg-Id`
//! (within its duplicate window).
//!
//! **Never invent.** A purchase whose script ran but whose reply the node gave up on was answered
//! 503; its order is a ghost, cancelled soon after by [`super::abandon`] (which marks it
//! `abandoned`). The pump waits a grace period past an entry's time before publishing it (twice
//! `--redis-budget-ms`, plus the abandon retrier's longest pause, 4 s, plus a second: 5.6 s by
//! default), so the abandon has normally run by then. It skips the `created` entry of an order
//! abandoned by then, records the skip (`events:skipped`), and skips that order's
//! abandon-`cancelled` entry too. Residual window, stated in the README: an abandon that has not
//! reached Redis within the grace period (Redis unreachable from the node that owes it but
//! reachable from the pump, or that node dead) lets the ghost's `created` be published, followed
//! later by its `cancelled` or `expired`; and an order kept because an idempotency replay claimed
//! it is announced, and announced cancelled if every claim turns out to have been answered 503.
//!
//! **Bounded.** Each stream is capped at about 100,000 entries (`MAXLEN ~` in the scripts). If
//! the broker stays away longer than that many changes of one SKU, the oldest unpublished
//! entries are trimmed unpublished; the pump notices (the stream starts past the cursor, and
//! fewer entries are left than were added and not passed), logs an error once per SKU with the
//! count, and counts them in `seckill_events_lost_total`. Purchases are not refused for the
//! feed's sake in cluster mode (`events_outbox_max` is the embedded store's bound).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use fred::types::scripts::Script;
use fred::types::Value;
use rand::Rng;

use super::{RedisError, RedisStore, BACKGROUND_TIMEOUT};
use crate::feed::{FeedEvent, FeedLane};
use crate::sale::{Order, Sale};

/// How often the pump visits every owned SKU when none had more ready than one batch.
const TICK: Duration = Duration::from_millis(200);
/// The pause instead of [`TICK`] after a tick that left ready entries behind (a backlog).
const BACKLOG_TICK: Duration = Duration::from_millis(5);
/// Entries read, and published, per SKU per visit.
const BATCH: usize = 256;
/// How long a lease outlives its holder's last renewal: another node's pump takes the SKU over
/// after this when the holder dies.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the lease is renewed while a batch waits for JetStream.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a submitted batch is polled.
const POLL: Duration = Duration::from_millis(5);

mod scripts;
pub use scripts::{FEED_ADVANCE, FEED_LEASE, FEED_READ};

/// The feed scripts, loaded per pump.
struct FeedScripts {
    lease: Script,
    read: Script,
    advance: Script,
}

/// One entry [`FEED_READ`] returned.
struct Entry {
    id: String,
    kind: String,
    json: String,
    skip: bool,
}

/// A [`FEED_READ`] reply for a SKU whose lease this pump holds.
struct Read {
    pending: u64,
    lost: u64,
    oldest_at: Option<u64>,
    cursor: String,
    first_kept: String,
    entries: Vec<Entry>,
    more: bool,
    /// Stream entries read (one may give several events).
    taken: u64,
    /// The id of the last of them.
    last: String,
}

/// What the pump remembers between ticks.
#[derive(Default)]
struct PumpState {
    /// Per SKU: entries past the cursor and the oldest one's time, as last read.
    outbox: HashMap<Box<str>, (u64, Option<u64>)>,
    /// Settled SKUs with nothing left to publish: never visited again.
    drained: HashSet<Box<str>>,
    /// SKUs whose lost entries were logged as an error already.
    gap_logged: HashSet<Box<str>>,
}

impl RedisStore {
    /// The grace period before an entry is published: a purchase's caller has had its 201 or
    /// its 503 by then (within the budget), and the abandon of a 503 has reached Redis if Redis
    /// answers the node that owes it: the entry's time is when the purchase ran, which may be
    /// after a stall that kept the abandon retrier backing off, so the retrier's longest pause
    /// (its backoff plus as much again of jitter) is covered too.
    fn feed_grace(&self) -> Duration {
        self.0.budget * 2 + super::abandon::MAX_BACKOFF * 2 + Duration::from_secs(1)
    }

    /// The pump: publishes the streams of the SKUs this shard owns, forever. Redis or the
    /// broker being away only delays it; it is its own task, so no shopper waits on it.
    pub(super) async fn pump_feed(&self, lane: FeedLane) {
        let scripts = FeedScripts {
            lease: Script::from_lua(FEED_LEASE),
            read: Script::from_lua(FEED_READ),
            advance: Script::from_lua(FEED_ADVANCE),
        };
        // Unique per pump: a restarted node (even with the same pid) must not pass for the
        // holder it replaced.
        let holder = format!(
            "{} shard {} #{:016x}",
            self.0.node,
            self.0.shard,
            self.0.rng.borrow_mut().gen::<u64>()
        );
        let mut state = PumpState::default();
        loop {
            let mut backlog = false;
            if let Some(skus) = self.feed_skus().await {
                let owned: HashSet<&str> = skus.iter().map(|sku| &**sku).collect();
                state.outbox.retain(|sku, _| owned.contains(&**sku));
                for sku in &skus {
                    if state.drained.contains(sku) {
                        continue;
                    }
                    let visit = Box::pin(self.pump_sku(&lane, &scripts, &holder, sku, &mut state));
                    match visit.await {
                        Ok(more) => backlog |= more,
                        Err(error) => {
                            tracing::debug!(%error, sku = %sku, "order feed: SKU not published this tick");
                        }
                    }
                    Self::report(&lane, &state);
                }
            }
            Self::report(&lane, &state);
            glommio::timer::sleep(if backlog { BACKLOG_TICK } else { TICK }).await;
        }
    }

    fn report(lane: &FeedLane, state: &PumpState) {
        let pending = state.outbox.values().map(|(pending, _)| pending).sum();
        let oldest = state.outbox.values().filter_map(|(_, at)| *at).min();
        lane.report(pending, oldest);
    }

    /// The SKUs this shard owns, ended ones included (they may still have entries to
    /// publish); `None` when the index of sales cannot be read now.
    async fn feed_skus(&self) -> Option<Vec<Box<str>>> {
        let key = super::keys::sales(&self.0.prefix);
        let client = self.route(&key).ok()?;
        let read = Box::pin(self.call(
            &client,
            BACKGROUND_TIMEOUT,
            fred::interfaces::SetsInterface::smembers::<Vec<String>, _>(&*client, key.as_str()),
        ));
        let mut skus = read.await.ok()?;
        // A SKU the index lost (see `sync_owned`) still has its stream.
        let indexed: HashSet<String> = skus.iter().cloned().collect();
        skus.extend(
            self.watched()
                .into_iter()
                .filter(|sku| !indexed.contains(sku)),
        );
        // A split sale's every part has its own stream (`buckets`).
        Some(
            skus.into_iter()
                .filter(|sku| !super::keys::is_part(sku) && self.owns(sku))
                .flat_map(|sku| self.known_parts(&sku))
                .collect(),
        )
    }

    /// The feed scripts' keys for `sku`.
    fn feed_keys(&self, sku: &str) -> Vec<String> {
        let keys = self.keys(sku).0;
        let base = format!("{}:{{{sku}}}:events", self.0.prefix);
        vec![
            keys[8].clone(),
            keys[5].clone(),
            keys[10].clone(),
            format!("{base}:cursor"),
            format!("{base}:lease"),
            format!("{base}:skipped"),
        ]
    }

    /// Runs a feed script over `sku`'s keys, once, within [`BACKGROUND_TIMEOUT`] (a failure is
    /// tried again next tick).
    async fn feed_script(
        &self,
        script: &Script,
        keys: &[String],
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        let first = keys.first().map(String::as_str).unwrap_or_default();
        let route = self.route(first)?;
        let call = Box::pin(self.evalsha(&route, script, keys.to_vec(), args));
        self.call(&route, BACKGROUND_TIMEOUT, call).await
    }

    /// One visit of one SKU: read, publish, advance. Returns whether ready entries were left.
    async fn pump_sku(
        &self,
        lane: &FeedLane,
        scripts: &FeedScripts,
        holder: &str,
        sku: &str,
        state: &mut PumpState,
    ) -> Result<bool, RedisError> {
        let keys = self.feed_keys(sku);
        let ttl = LEASE_TTL.as_millis().to_string();
        let args = vec![
            holder.to_owned(),
            ttl.clone(),
            BATCH.to_string(),
            self.feed_grace().as_millis().to_string(),
        ];
        let reply = self.feed_script(&scripts.read, &keys, args).await?;
        let Some(read) = decode_read(reply)? else {
            // Another node's pump holds the lease and reports these entries itself.
            state.outbox.remove(sku);
            return Ok(false);
        };
        state
            .outbox
            .insert(sku.into(), (read.pending, read.oldest_at));
        if read.lost > 0 {
            self.entries_lost(sku, &read, state);
        }
        let mut events = Vec::with_capacity(read.entries.len());
        let mut forget = Vec::new();
        for entry in &read.entries {
            if entry.skip {
                if entry.kind == "cancelled" {
                    forget.push(order_id_of(&entry.json).unwrap_or_default());
                }
                continue;
            }
            match to_event(sku, entry) {
                Some(event) => events.push(event),
                None => tracing::error!(
                    sku = %sku,
                    entry = %entry.id,
                    kind = %entry.kind,
                    "order feed: a stream entry does not decode; skipped"
                ),
            }
        }
        if !events.is_empty() {
            let Ok(submitted) = lane.submit(&events) else {
                // The publisher's queue is full: the broker is slow or away. Next tick.
                return Ok(false);
            };
            let mut renewed = Instant::now();
            while !submitted.is_done() {
                glommio::timer::sleep(POLL).await;
                if renewed.elapsed() >= RENEW_EVERY {
                    renewed = Instant::now();
                    // Kept while the broker is away, so other nodes do not publish the same
                    // entries meanwhile; a failure here only risks repeats.
                    let args = vec![holder.to_owned(), ttl.clone()];
                    let _ = self.feed_script(&scripts.lease, &keys, args).await;
                }
            }
        }
        let last = (read.taken > 0).then(|| read.last.clone());
        if last.is_none() && read.lost == 0 {
            if read.pending == 0 && self.0.settled.borrow().contains(sku) {
                state.drained.insert(sku.into());
            }
            return Ok(false);
        }
        let mut args = vec![
            holder.to_owned(),
            ttl,
            last.unwrap_or_default(),
            read.taken.to_string(),
            read.lost.to_string(),
        ];
        args.extend(forget.into_iter().filter(|id| !id.is_empty()));
        let advanced = self.feed_script(&scripts.advance, &keys, args).await?;
        if advanced.as_i64() == Some(1) {
            if read.lost > 0 {
                self.0.feed_lost.set(self.0.feed_lost.get() + read.lost);
            }
            let left = read.pending.saturating_sub(read.taken);
            let oldest = if left == 0 { None } else { read.oldest_at };
            state.outbox.insert(sku.into(), (left, oldest));
        }
        Ok(read.more)
    }

    /// Entries of `sku` were trimmed before they were published: the broker was away for more
    /// than the stream keeps. Logged as an error once per SKU (then at warn level).
    fn entries_lost(&self, sku: &str, read: &Read, state: &mut PumpState) {
        if state.gap_logged.insert(sku.into()) {
            tracing::error!(
                sku = %sku,
                lost = read.lost,
                cursor = %read.cursor,
                first_kept = %read.first_kept,
                pending = read.pending,
                "order feed: events were trimmed from the SKU's Redis stream before they were \
                 published (the broker was away for more than ~100,000 changes of this SKU); \
                 they will never be published"
            );
        } else {
            tracing::warn!(sku = %sku, lost = read.lost, "order feed: more events trimmed before publication");
        }
    }
}

/// Reads a [`FEED_READ`] reply; `None` for `busy`.
fn decode_read(reply: Value) -> Result<Option<Read>, RedisError> {
    let bad = |what: &str| RedisError::Reply(format!("feed read: {what}"));
    let fields = reply.into_array();
    match fields.first().and_then(Value::as_string).as_deref() {
        Some("busy") => return Ok(None),
        Some("ok") => {}
        _ => return Err(bad("outcome")),
    }
    let text = |index: usize| {
        fields
            .get(index)
            .and_then(Value::as_string)
            .ok_or_else(|| bad("field"))
    };
    let int = |index: usize| {
        fields
            .get(index)
            .and_then(Value::as_i64)
            .and_then(|value| u64::try_from(value).ok())
            .ok_or_else(|| bad("number"))
    };
    let oldest = int(4)?;
    let mut entries = Vec::new();
    for entry in fields
        .get(6)
        .cloned()
        .map(Value::into_array)
        .unwrap_or_default()
    {
        let parts = entry.into_array();
        let part = |index: usize| parts.get(index).and_then(Value::as_string);
        let (Some(id), Some(kind), Some(json)) = (part(0), part(1), part(2)) else {
            return Err(bad("entry"));
        };
        let skip = parts.get(3).and_then(Value::as_i64) == Some(1);
        entries.push(Entry {
            id,
            kind,
            json,
            skip,
        });
    }
    Ok(Some(Read {
        cursor: text(1)?,
        pending: int(2)?,
        lost: int(3)?,
        oldest_at: (oldest > 0).then_some(oldest),
        first_kept: text(5)?,
        entries,
        more: int(7)? == 1,
        taken: int(8)?,
        last: text(9)?,
    }))
}

/// The milliseconds of a stream entry id (`<ms>-<seq>`): when Redis added it.
fn entry_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// The feed event an entry records; `None` if it does not decode (or names another SKU).
fn to_event(part: &str, entry: &Entry) -> Option<FeedEvent> {
    let at = entry_ms(&entry.id);
    // A stream of a split sale's bucket (`buckets`) carries its SKU's orders; the sale itself is
    // announced by bucket 0's stream alone.
    let (sku, bucket) = super::keys::split_part(part);
    if entry.kind == "sale" && bucket > 0 {
        return None;
    }
    if entry.kind == "sale" {
        let sale = crate::json::parse::<Sale>(entry.json.as_bytes()).ok()?;
        return (&*sale.sku == sku).then(|| FeedEvent::sale(&sale, at));
    }
    let order = crate::json::parse::<Order>(entry.json.as_bytes()).ok()?;
    // The entry's `event` is the status the order reached, `created` for `pending`.
    let status = match order.status.label() {
        "pending" => "created",
        other => other,
    };
    (&*order.sku == sku && status == entry.kind).then(|| FeedEvent::order(&order, at))
}

/// The `order_id` of an order's JSON.
fn order_id_of(json: &str) -> Option<String> {
    crate::json::parse::<Order>(json.as_bytes())
        .ok()
        .map(|order| order.order_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_give_their_time() {
        assert_eq!(entry_ms("1796320191524-3"), 1_796_320_191_524);
        assert_eq!(entry_ms("garbage"), 0);
    }

    #[test]
    fn entries_become_the_events_of_the_embedded_store() {
        let order = r#"{"order_id":"01JC0000000000000000000000.moutai","sku":"moutai","user_id":"u1","quantity":1,"status":"paid","created_at":1,"expires_at":2,"amount":100,"payment_ref":"p-1","idem":"x","claims":["a"]}"#;
        let entry = Entry {
            id: "5-0".into(),
            kind: "paid".into(),
            json: order.into(),
            skip: false,
        };
        let event = to_event("moutai", &entry).expect("decodes");
        assert_eq!(&*event.id, "01JC0000000000000000000000.moutai.paid");
        assert_eq!(event.at, 5);
        assert!(event.body.contains(r#""payment_ref":"p-1""#));
        assert!(!event.body.contains("idem"));
        let created = Entry {
            kind: "created".into(),
            json: order.replace(r#""status":"paid""#, r#""status":"pending""#),
            id: "4-0".into(),
            skip: false,
        };
        let event = to_event("moutai", &created).expect("decodes");
        assert_eq!(&*event.id, "01JC0000000000000000000000.moutai.created");
        // An entry whose status disagrees with its kind is refused, not relabelled.
        let wrong = Entry {
            kind: "created".into(),
            ..entry
        };
        assert!(to_event("moutai", &wrong).is_none());
        assert!(to_event(
            "other",
            &Entry {
                kind: "paid".into(),
                ..wrong
            }
        )
        .is_none());
    }
}
