//! The order feed in cluster mode: each SKU's Redis stream is the outbox, published to a real
//! NATS JetStream by the node whose shard owns the SKU (under a lease), and read back with
//! `seckill events tail`. Every wait here is a "gave up" bound, never a timing assertion.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::nats::{read_feed, NatsServer};
use common::redis::RedisServer;
use common::*;
use serde_json::{json, Value};

/// The stream the nodes publish to (the default).
const STREAM: &str = "SECKILL_EVENTS";
/// Only a "gave up" bound for the feed to catch up: the pump waits a grace period past each
/// entry, and a debug build on a loaded machine is slow.
const FEED_BOUND: Duration = Duration::from_secs(120);
/// How long `events tail` waits for one more message before it stops.
const TAIL_IDLE: Duration = Duration::from_millis(1_500);

/// A sale of `sku` opening `delay_ms` from now at `price`, so every node has learnt it before
/// the first purchase.
fn sale_opening_in(delay_ms: i64, stock: u64, per_user_limit: u64, price: u64) -> Value {
    let now = now_ms();
    json!({
        "name": "Feed sale",
        "stock": stock,
        "starts_at": now + delay_ms,
        "ends_at": now + 3_600_000,
        "per_user_limit": per_user_limit,
        "price": price,
    })
}

/// The feed's messages about `sku`, in stream order.
fn feed_of(url: &str, sku: &str) -> Vec<Value> {
    read_feed(url, STREAM, TAIL_IDLE)
        .into_iter()
        .filter(|message| message["sku"] == sku)
        .collect()
}

/// Reads the feed until `done` holds for `sku`'s messages, giving up after [`FEED_BOUND`] with
/// what it last saw.
#[track_caller]
fn feed_until(url: &str, sku: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    let got = poll(FEED_BOUND, || {
        last = feed_of(url, sku);
        done(&last).then_some(())
    });
    assert!(
        got.is_some(),
        "the feed never had {what} within {FEED_BOUND:?}; it has {} messages of {sku}:\n{}",
        last.len(),
        last.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    last
}

/// The ids of the messages, in order.
fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|message| message["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `/metrics` of `node` now; `None` when the scrape was refused (scrapes are rate-limited per
/// shard), after a pause so a poll does not hammer it.
fn scrape(node: &Server) -> Option<common::prometheus::Exposition> {
    let metrics = node.client().get("/metrics");
    if metrics.status != 200 {
        std::thread::sleep(Duration::from_millis(500));
        return None;
    }
    let text = metrics.text();
    Some(common::prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// `seckill_events_pending` of `node` now, if it could be scraped.
fn events_pending(node: &Server) -> Option<f64> {
    scrape(node).map(|metrics| metrics.sum("seckill_events_pending", &[]))
}

#[test]
fn the_feed_carries_every_change_of_a_redis_sale() {
    let nats = NatsServer::start();
    let node = Server::start(2, &["--events", &nats.url()]);
    let sku = "feedsku";
    let mut spec = sale_spec(10, 5);
    spec["price"] = json!(250);
    let mut admin = node.client();
    admin.create_sale(sku, &spec);
    let mut shopper = node.client();
    let a = shopper.buy(sku, &tok("alice"), 2);
    let b = shopper.buy(sku, &tok("bob"), 1);
    let c = shopper.buy(sku, &tok("carol"), 1);
    let id = |order: &Value| order["order_id"].as_str().unwrap_or_default().to_owned();
    let (a, b, c) = (id(&a), id(&b), id(&c));
    let paid = shopper.pay_as(&a, PAYMENT_TOKEN, 500, "pay-ref-alice");
    assert_status(&paid, 200);
    let cancelled = shopper.cancel(&b, &tok("bob"));
    assert_status(&cancelled, 200);

    let feed = feed_until(&nats.url(), sku, "the sale and five order events", |feed| {
        feed.len() >= 6
    });
    let got = ids(&feed);
    assert!(
        got[0].starts_with(&format!("{sku}.sale.")),
        "the sale comes first: {got:?}"
    );
    assert_eq!(
        got[1..].to_vec(),
        vec![
            format!("{a}.created"),
            format!("{b}.created"),
            format!("{c}.created"),
            format!("{a}.paid"),
            format!("{b}.cancelled"),
        ],
        "every change once, in the order it happened"
    );
    let types: Vec<&str> = feed.iter().filter_map(|m| m["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "sale.upserted",
            "order.created",
            "order.created",
            "order.created",
            "order.paid",
            "order.cancelled"
        ]
    );
    let sale = &feed[0]["sale"];
    assert_eq!(sale["stock"], 10, "{sale}");
    assert_eq!(sale["price"], 250, "{sale}");
    let created = &feed[1]["order"];
    assert_eq!(created["status"], "pending", "{created}");
    assert_eq!(created["user_id"], "alice", "{created}");
    assert_eq!(created["amount"], 500, "{created}");
    let paid = &feed[4]["order"];
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["amount"], 500, "{paid}");
    assert_eq!(paid["payment_ref"], "pay-ref-alice", "{paid}");
    assert!(
        paid.get("idem").is_none() && paid.get("claims").is_none(),
        "only the API's order shape: {paid}"
    );
    assert_eq!(feed[5]["order"]["status"], "cancelled");
    // Published and trimmed: nothing waits, and Redis keeps only the cursor's entry.
    let drained = poll(WAIT_BOUND, || (events_pending(&node)? == 0.0).then_some(()));
    assert!(
        drained.is_some(),
        "events still pending after the feed caught up"
    );
}

/// What a shopper was told about one order.
#[derive(Debug, Default, Clone)]
struct Told {
    /// The order's closing event the shopper (or the payment side) was acknowledged, if any.
    closed: Option<&'static str>,
    /// Whether the purchase was acknowledged while the broker was down.
    during_outage: bool,
}

#[test]
fn nats_killed_mid_sale_loses_and_invents_nothing() {
    let redis = RedisServer::start(&["--appendonly", "yes"]);
    let mut nats = NatsServer::start();
    let url = redis.url();
    let events = nats.url();
    let nodes: Vec<Server> = (0..2)
        .map(|_| Server::start(2, &["--redis", &url, "--events", &events]))
        .collect();
    let sku = "feedrace";
    nodes[0]
        .client()
        .create_sale(sku, &sale_opening_in(1_500, 100_000, 1, 100));
    common::edge::wait_until_open(&nodes.iter().collect::<Vec<_>>(), sku, WAIT_BOUND);

    let told: Arc<Mutex<HashMap<String, Told>>> = Arc::default();
    let outage = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut saw_pending = false;
    let mut acked_in_outage = 0;
    std::thread::scope(|scope| {
        for thread in 0..12 {
            let node = &nodes[thread % 2];
            let (told, outage, stop, acked) = (
                Arc::clone(&told),
                Arc::clone(&outage),
                Arc::clone(&stop),
                Arc::clone(&acked),
            );
            scope.spawn(move || {
                let mut client = node.client();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let user = format!("u{thread}x{n}");
                    let during = outage.load(Ordering::Relaxed);
                    let r = client.purchase(sku, &tok(&user), Some(1), None);
                    if r.status != 201 {
                        continue;
                    }
                    let order = r.json();
                    let id = order["order_id"].as_str().unwrap_or_default().to_owned();
                    let mut note = Told {
                        closed: None,
                        during_outage: during && outage.load(Ordering::Relaxed),
                    };
                    // Some orders are paid, some cancelled, some left pending, so closing events
                    // interleave with creations of other orders.
                    match n % 3 {
                        1 => {
                            let r = client.cancel(&id, &tok(&user));
                            if r.status == 200 {
                                note.closed = Some("cancelled");
                            }
                        }
                        2 => {
                            let r = client.pay_as(&id, PAYMENT_TOKEN, 100, &format!("ref-{id}"));
                            if r.status == 200 {
                                note.closed = Some("paid");
                            }
                        }
                        _ => {}
                    }
                    told.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, note);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let wait_acked = |at_least: usize| {
            let reached = poll(WAIT_BOUND, || {
                (acked.load(Ordering::Relaxed) >= at_least).then_some(())
            });
            assert!(reached.is_some(), "shoppers stalled at {acked:?} orders");
        };
        wait_acked(60);
        nats.kill9();
        outage.store(true, Ordering::Relaxed);
        let before = acked.load(Ordering::Relaxed);
        wait_acked(before + 150);
        // The race is real: orders were acknowledged that the feed could not publish yet.
        saw_pending = poll(WAIT_BOUND, || {
            nodes
                .iter()
                .any(|node| events_pending(node).is_some_and(|pending| pending > 0.0))
                .then_some(())
        })
        .is_some();
        acked_in_outage = told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|note| note.during_outage)
            .count();
        nats.restart();
        outage.store(false, Ordering::Relaxed);
        let before = acked.load(Ordering::Relaxed);
        wait_acked(before + 60);
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        saw_pending,
        "no node ever had events pending during the outage"
    );
    assert!(
        acked_in_outage > 0,
        "no order was acknowledged while NATS was down"
    );
    let told = told.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let expected: usize = told
        .values()
        .map(|note| 1 + usize::from(note.closed.is_some()))
        .sum();

    let feed = feed_until(&events, sku, "every acknowledged change", |feed| {
        let created: HashSet<&str> = feed
            .iter()
            .filter(|m| m["type"] == "order.created")
            .filter_map(|m| m["order"]["order_id"].as_str())
            .collect();
        told.keys().all(|id| created.contains(id.as_str())) && feed.len() > expected
    });
    // Exactly once: no id twice (JetStream dropped the repeats of a retry or of two publishers).
    let all = ids(&feed);
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "an event was stored twice: {all:?}"
    );
    // Nothing invented: every order in the feed was acknowledged to a shopper, and every
    // closing event is one a caller was told about.
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut last_at = 0;
    for (index, message) in feed.iter().enumerate() {
        let at = message["at"].as_u64().unwrap_or_default();
        assert!(
            at >= last_at,
            "events out of stream order at {index}: {message} after at={last_at}"
        );
        last_at = at;
        let kind = message["type"].as_str().unwrap_or_default();
        if kind == "sale.upserted" {
            continue;
        }
        let id = message["order"]["order_id"].as_str().unwrap_or_default();
        let Some(note) = told.get(id) else {
            panic!("the feed has an order no shopper was given: {message}");
        };
        match kind {
            "order.created" => {
                position.insert(id.to_owned(), index);
            }
            "order.paid" | "order.cancelled" => {
                let status = &kind["order.".len()..];
                assert_eq!(
                    note.closed,
                    Some(status),
                    "a closing event nobody was told: {message}"
                );
                let created = position.get(id).copied();
                assert!(
                    created.is_some_and(|at| at < index),
                    "{kind} of {id} before its creation"
                );
            }
            other => panic!("unexpected event {other}: {message}"),
        }
    }
    for (id, note) in &told {
        if let Some(status) = note.closed {
            let closing = format!("{id}.{status}");
            assert!(
                all.contains(&closing),
                "acknowledged {closing} never published"
            );
        }
    }
    assert_eq!(
        all.len(),
        1 + expected,
        "the sale and every acknowledged change, nothing else"
    );
}

#[test]
fn a_node_killed_with_unpublished_events_delivers_them_once_after_restart() {
    let redis = RedisServer::start(&["--appendonly", "yes"]);
    let mut nats = NatsServer::start();
    let url = redis.url();
    let events = nats.url();
    let args = ["--redis", url.as_str(), "--events", events.as_str()];
    let mut node = Server::start(2, &args);
    let sku = "feedcrash";
    node.client().create_sale(sku, &sale_spec(1_000, 1));
    let sale = feed_until(&events, sku, "the sale", |feed| !feed.is_empty());
    assert_eq!(sale.len(), 1);
    // The broker goes away; orders keep being acknowledged into Redis' streams.
    nats.kill9();
    let mut shopper = node.client();
    let mut orders = Vec::new();
    for n in 0..40 {
        let order = shopper.buy(sku, &tok(&format!("crash{n}")), 1);
        orders.push(order["order_id"].as_str().unwrap_or_default().to_owned());
    }
    // The pump has read them and handed them to the publisher, which is failing to reach the
    // broker: the node dies with a batch in flight.
    let waiting = poll(WAIT_BOUND, || {
        let metrics = scrape(&node)?;
        let pending = metrics.sum("seckill_events_pending", &[]);
        let failures = metrics.sum("seckill_events_publish_failures_total", &[]);
        (pending >= 40.0 && failures > 0.0).then_some(())
    });
    assert!(
        waiting.is_some(),
        "the node never had its events pending and failing to publish"
    );
    node.kill9();
    nats.restart();
    let node = Server::start(2, &args);
    let feed = feed_until(&events, sku, "the 40 orders", |feed| feed.len() > 40);
    let got = ids(&feed);
    let mut expected: Vec<String> = orders.iter().map(|id| format!("{id}.created")).collect();
    expected.insert(0, got[0].clone());
    assert_eq!(
        got, expected,
        "each order once, in order, after the restart"
    );
    let drained = poll(WAIT_BOUND, || (events_pending(&node)? == 0.0).then_some(()));
    assert!(
        drained.is_some(),
        "events still pending after the feed caught up"
    );
}

#[test]
fn ghost_orders_of_a_redis_stall_are_never_announced() {
    let redis = RedisServer::start(&["--enable-debug-command", "yes"]);
    let proxy = common::proxy::Proxy::start(redis.port);
    let nats = NatsServer::start();
    let events = nats.url();
    let node = Server::start(2, &["--redis", &proxy.url(), "--events", &events]);
    let sku = "feedghost";
    node.client().create_sale(sku, &sale_spec(100_000, 1));
    common::edge::wait_until_open(&[&node], sku, WAIT_BOUND);
    let given: Mutex<HashSet<String>> = Mutex::default();
    let unavailable = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for thread in 0..16 {
            let (node, given, unavailable, stop) = (&node, &given, &unavailable, &stop);
            scope.spawn(move || {
                let mut client = node.client();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let r = client.purchase(sku, &tok(&format!("g{thread}x{n}")), Some(1), None);
                    match r.status {
                        201 => {
                            let id = r.json()["order_id"].as_str().unwrap_or_default().to_owned();
                            given.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
                        }
                        503 => {
                            unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected {other}: {r}"),
                    }
                }
            });
        }
        let count = || given.lock().unwrap_or_else(|e| e.into_inner()).len();
        assert!(poll(WAIT_BOUND, || (count() >= 200).then_some(())).is_some());
        // Redis serves nothing for 2 s, longer than every attempt of a purchase: what the node
        // sent meanwhile runs afterwards, after its callers were told 503 (ghosts).
        redis
            .query::<()>(&["DEBUG", "SLEEP", "2"])
            .unwrap_or_else(|e| panic!("DEBUG SLEEP: {e}"));
        let before = count();
        assert!(poll(WAIT_BOUND, || (count() >= before + 200).then_some(())).is_some());
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        unavailable.load(Ordering::Relaxed) > 0,
        "the stall caused no 503"
    );
    let given = given.into_inner().unwrap_or_else(|e| e.into_inner());
    // The stall really made ghosts: orders that existed although their callers saw 503.
    let cancelled = poll(WAIT_BOUND, || {
        let metrics = scrape(&node)?;
        let pending = metrics.count("seckill_redis_ghosts_pending", &[]);
        let cancelled = metrics.count(
            "seckill_redis_ghosts_abandoned_total",
            &[("outcome", "cancelled")],
        );
        (pending == 0).then_some(cancelled)
    })
    .unwrap_or_else(|| panic!("ghosts still waiting for their abandon"));
    assert!(cancelled > 0, "the stall made no ghost order");

    let feed = feed_until(&events, sku, "every order given", |feed| {
        let created: HashSet<&str> = feed
            .iter()
            .filter(|m| m["type"] == "order.created")
            .filter_map(|m| m["order"]["order_id"].as_str())
            .collect();
        given.iter().all(|id| created.contains(id.as_str()))
    });
    let all = ids(&feed);
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "an event was stored twice");
    let invented: Vec<&Value> = feed
        .iter()
        .filter(|m| m["type"] != "sale.upserted")
        .filter(|m| !given.contains(m["order"]["order_id"].as_str().unwrap_or_default()))
        .collect();
    assert!(
        invented.is_empty(),
        "{} events of orders no shopper was given ({cancelled} ghosts cancelled), e.g. {:?}",
        invented.len(),
        invented.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        all.len(),
        1 + given.len(),
        "the sale and one creation per order"
    );
}

/// A [`feed::FEED_READ`] reply: outcome, cursor, pending, lost, oldest_ms, first_id,
/// entries `(id, kind, json, skip)`, more, stream entries taken, the last one's id.
type ReadReply = (
    String,
    String,
    i64,
    i64,
    i64,
    String,
    Vec<(String, String, String, i64)>,
    i64,
    i64,
    String,
);

/// Runs a feed script on `sku`'s keys, as the pump does.
fn feed_eval<T: common::redis::FromRedisValue>(
    redis: &RedisServer,
    script: &str,
    sku: &str,
    args: &[&str],
) -> T {
    let keys = [
        format!("seckill:{{{sku}}}:events"),
        format!("seckill:{{{sku}}}:orders"),
        format!("seckill:{{{sku}}}:abandoned"),
        format!("seckill:{{{sku}}}:events:cursor"),
        format!("seckill:{{{sku}}}:events:lease"),
        format!("seckill:{{{sku}}}:events:skipped"),
    ];
    let count = keys.len().to_string();
    let mut argv: Vec<&str> = vec!["EVAL", script, &count];
    argv.extend(keys.iter().map(String::as_str));
    argv.extend_from_slice(args);
    redis
        .query(&argv)
        .unwrap_or_else(|e| panic!("EVAL feed script {args:?}: {e}"))
}

/// The cursor's lease, cursor and trim rules, and the report of entries trimmed unpublished,
/// run directly against Redis: losing 100,000 events of one SKU through the node would take a
/// broker outage of that many purchases.
#[test]
fn the_cursor_only_moves_forward_and_trimmed_entries_are_reported_lost() {
    use seckill::store::redis::feed::{FEED_ADVANCE, FEED_READ};
    let redis = RedisServer::start(&[]);
    let stream = "seckill:{gap}:events";
    for ms in 1..=10 {
        let id = format!("{ms}-0");
        redis
            .query::<String>(&["XADD", stream, &id, "event", "sale", "sale", "{}"])
            .unwrap_or_else(|e| panic!("XADD: {e}"));
    }
    let read = |holder: &str| -> ReadReply {
        feed_eval(&redis, FEED_READ, "gap", &[holder, "5000", "4", "0"])
    };
    let advance = |holder: &str, to: &str, passed: &str, lost: &str| -> i64 {
        feed_eval(
            &redis,
            FEED_ADVANCE,
            "gap",
            &[holder, "5000", to, passed, lost],
        )
    };
    let first = read("a");
    assert_eq!(
        (first.2, first.3, first.4, first.7),
        (10, 0, 1, 1),
        "{first:?}"
    );
    let got: Vec<&str> = first.6.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(got, ["1-0", "2-0", "3-0", "4-0"]);
    // Another pump is refused while the lease is held, and cannot move the cursor.
    let busy: Vec<String> = feed_eval(&redis, FEED_READ, "gap", &["b", "5000", "4", "0"]);
    assert_eq!(busy, ["busy"]);
    assert_eq!(advance("b", "9-0", "9", "0"), 0);
    assert_eq!(advance("a", "4-0", "4", "0"), 1);
    // Only forward: a late advance to an older entry changes nothing.
    assert_eq!(advance("a", "2-0", "2", "0"), 1);
    let cursor: Option<String> = redis
        .query(&["HGET", "seckill:{gap}:events:cursor", "id"])
        .unwrap_or_else(|e| panic!("HGET: {e}"));
    assert_eq!(cursor.as_deref(), Some("4-0"));
    // Trimmed up to the cursor's entry, which is kept.
    assert_eq!(redis.integer(&["XLEN", stream]), Some(7));
    let second = read("a");
    assert_eq!(
        (second.1.as_str(), second.2, second.3),
        ("4-0", 6, 0),
        "{second:?}"
    );
    // The stream is trimmed past the cursor (as MAXLEN does while the broker is away):
    // 5-0, 6-0 and 7-0 go unpublished.
    redis
        .query::<i64>(&["XTRIM", stream, "MINID", "8-0"])
        .unwrap_or_else(|e| panic!("XTRIM: {e}"));
    let third = read("a");
    assert_eq!(
        (third.2, third.3, third.5.as_str()),
        (3, 3, "8-0"),
        "{third:?}"
    );
    let got: Vec<&str> = third.6.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(got, ["8-0", "9-0", "10-0"]);
    assert_eq!(advance("a", "10-0", "3", "3"), 1);
    let last = read("a");
    assert_eq!(
        (last.2, last.3, last.6.len()),
        (0, 0, 0),
        "reported once: {last:?}"
    );
}

/// On a Redis Cluster, every SKU's outbox, cursor and lease live in the SKU's own slot, so each
/// SKU is published from whichever master serves it.
#[test]
fn a_redis_cluster_publishes_every_sku_from_its_own_master() {
    let masters = common::redis_cluster::three_masters();
    let hosts: Vec<String> = masters
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let url = format!("redis-cluster://{}", hosts.join(","));
    let nats = NatsServer::start();
    let events = nats.url();
    let node = Server::start(2, &["--redis", &url, "--events", &events]);
    let skus: Vec<String> = (0..6).map(|i| format!("spread-{i}")).collect();
    let served: HashSet<i64> = skus
        .iter()
        .map(|sku| {
            let slot: i64 = masters[0]
                .query(&["CLUSTER", "KEYSLOT", &format!("seckill:{{{sku}}}:events")])
                .unwrap_or_else(|e| panic!("KEYSLOT: {e}"));
            // Three equal ranges, as `--cluster create` assigns them.
            slot * 3 / 16384
        })
        .collect();
    assert!(served.len() >= 2, "the SKUs landed on one master");
    let mut client = node.client();
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for sku in &skus {
        client.create_sale(sku, &sale_spec(10, 1));
    }
    common::edge::wait_until_open(&[&node], &skus[5], WAIT_BOUND);
    for sku in &skus {
        let mut ids = Vec::new();
        for n in 0..3 {
            let order = client.buy(sku, &tok(&format!("{sku}-{n}")), 1);
            ids.push(format!(
                "{}.created",
                order["order_id"].as_str().unwrap_or_default()
            ));
        }
        let first = ids[0].trim_end_matches(".created").to_owned();
        assert_status(&client.pay(&first), 200);
        ids.push(format!("{first}.paid"));
        expected.insert(sku.clone(), ids);
    }
    let mut last = Vec::new();
    let done = poll(FEED_BOUND, || {
        last = read_feed(&events, STREAM, TAIL_IDLE);
        (last.len() >= skus.len() * 5).then_some(())
    });
    assert!(done.is_some(), "the feed has only {} messages", last.len());
    for sku in &skus {
        let of_sku: Vec<Value> = last.iter().filter(|m| m["sku"] == **sku).cloned().collect();
        let got = ids(&of_sku);
        assert!(got[0].starts_with(&format!("{sku}.sale.")), "{got:?}");
        assert_eq!(got[1..], expected[sku][..], "{sku}");
    }
}
