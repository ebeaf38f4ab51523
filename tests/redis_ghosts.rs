//! No ghost orders in cluster mode: a purchase whose caller was answered 503 must not leave an
//! order holding stock in Redis, whatever the fault (a stall, a partition, cut connections),
//! and a buyer who did get a 201 (directly, or by an idempotency replay) keeps their order.
//!
//! Every test runs node → fault proxy → redis-server, and checks Redis itself once the node's
//! abandon queue (`seckill_redis_ghosts_pending`) is empty.

mod common;
#[path = "redis_ghosts/scripts.rs"]
mod scripts_rule;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::redis::RedisServer;
use common::*;
use seckill::store::redis::keys::SkuKeys;
use seckill::store::redis::scripts;

/// Only a "gave up" bound for the abandon retries to settle.
const SETTLE: Duration = Duration::from_secs(30);
/// Never sold out during a load test: pipelined, cheaper purchases sold 100,000 units within the
/// cut test's rounds.
const STOCK: u64 = 10_000_000;
/// Concurrent shoppers of the load tests.
const SHOPPERS: usize = 16;

/// A node whose only way to Redis is through a fault proxy.
struct Rig {
    redis: RedisServer,
    proxy: Proxy,
    node: Server,
}

impl Rig {
    fn start(shards: usize) -> Rig {
        Self::start_with(shards, &[])
    }

    /// With `extra` node arguments.
    fn start_with(shards: usize, extra: &[&str]) -> Rig {
        let redis = RedisServer::start(&["--enable-debug-command", "yes"]);
        let proxy = Proxy::start(redis.port);
        let url = proxy.url();
        let mut args = vec!["--redis", url.as_str()];
        args.extend_from_slice(extra);
        let node = Server::start(shards, &args);
        Rig { redis, proxy, node }
    }
}

/// The node's ghost figures: pending, and abandoned by outcome.
#[derive(Debug, Default)]
struct Ghosts {
    pending: u64,
    outcomes: HashMap<String, u64>,
    retries: u64,
}

impl Ghosts {
    fn outcome(&self, name: &str) -> u64 {
        self.outcomes.get(name).copied().unwrap_or(0)
    }
}

fn ghosts(node: &Server) -> Option<Ghosts> {
    let response = node.client().get("/metrics");
    if response.status != 200 {
        return None; // a scrape refused by the per-shard limit: ask again
    }
    let text = response.text();
    let parsed = common::prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let outcomes = parsed
        .samples("seckill_redis_ghosts_abandoned_total")
        .into_iter()
        .filter_map(|s| Some((s.labels.get("outcome")?.clone(), s.value as u64)))
        .collect();
    Some(Ghosts {
        pending: parsed.count("seckill_redis_ghosts_pending", &[]),
        outcomes,
        retries: parsed.count("seckill_redis_abandon_retries_total", &[]),
    })
}

/// Waits until the node has no ghost left to abandon and `done` holds; returns the figures.
#[track_caller]
fn settle(node: &Server, done: impl Fn(&Ghosts) -> bool) -> Ghosts {
    let started = Instant::now();
    let mut last = None;
    let settled = poll(SETTLE, || {
        let now = ghosts(node)?;
        let ok = now.pending == 0 && done(&now);
        last = Some(format!("{now:?}"));
        ok.then_some(now)
    });
    let settled = settled.unwrap_or_else(|| {
        panic!("the ghosts did not settle within {SETTLE:?}; last figures: {last:?}")
    });
    println!(
        "abandon settled {:?} after the fault ({} abandon calls retried): {settled:?}",
        started.elapsed(),
        settled.retries
    );
    settled
}

/// Every order of `sku` in Redis, by id: (user, status, quantity).
fn orders_in_redis(redis: &RedisServer, sku: &str) -> HashMap<String, serde_json::Value> {
    redis
        .orders(sku)
        .into_iter()
        .map(|(id, raw)| (id, common::redis::stored_order(&raw)))
        .collect()
}

/// What the shoppers saw.
#[derive(Debug, Default)]
struct Seen {
    /// Order ids answered 201 (created or replayed).
    created: HashSet<String>,
    unavailable: u64,
    /// 201s for a retry (same Idempotency-Key) after a 503.
    retried_201: u64,
}

/// Runs `SHOPPERS` shoppers buying one unit each with a fresh user and key, until `stop`; a
/// 503 is retried once with the same key, as a client library would.
fn shop(node: &Server, sku: &str, stop: &AtomicBool, seen: &Mutex<Seen>) {
    std::thread::scope(|scope| {
        for thread in 0..SHOPPERS {
            scope.spawn(move || {
                let mut client = node.client();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (user, key) = (format!("u-{thread}-{n}"), format!("k-{thread}-{n}"));
                    let token = tok(&user);
                    for attempt in 0..2 {
                        let r = client.purchase(sku, &token, Some(1), Some(&key));
                        let mut seen = seen.lock().expect("lock");
                        match r.status {
                            201 => {
                                seen.created.insert(order_id(&r.json()));
                                seen.retried_201 += attempt;
                                break;
                            }
                            503 => seen.unavailable += 1,
                            other => panic!("unexpected {other}: {r}"),
                        }
                        drop(seen);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            });
        }
    });
}

/// Runs the shoppers while `fault` runs on this thread, then checks that no ghost is left.
fn ghosts_are_abandoned(sku: &str, fault: impl FnOnce(&Rig)) {
    ghosts_are_abandoned_with(sku, &[], fault);
}

/// [`ghosts_are_abandoned`] with `extra` node arguments.
fn ghosts_are_abandoned_with(sku: &str, extra: &[&str], fault: impl FnOnce(&Rig)) {
    let rig = Rig::start_with(2, extra);
    rig.node.client().create_sale(sku, &sale_spec(STOCK, 1));
    common::edge::wait_until_open(&[&rig.node], sku, SETTLE);
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let fault_at = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| shop(&rig.node, sku, &stop, &seen));
        // Shoppers in full swing first, so the fault hits requests in flight.
        poll(SETTLE, || {
            (seen.lock().expect("lock").created.len() >= 200).then_some(())
        })
        .expect("the shoppers buy before the fault");
        fault_at.store(
            seen.lock().expect("lock").created.len() as u64,
            Ordering::Relaxed,
        );
        let started = Instant::now();
        fault(&rig);
        println!("fault injected for {:?}", started.elapsed());
        // Selling again after the fault, so the node is known to be healthy.
        let before = seen.lock().expect("lock").created.len();
        poll(SETTLE, || {
            (seen.lock().expect("lock").created.len() >= before + 200).then_some(())
        })
        .expect("the node sells again after the fault");
        stop.store(true, Ordering::Relaxed);
    });
    let seen = seen.into_inner().expect("lock");
    println!(
        "201s: {} ({} before the fault, {} for a retry after a 503); 503s: {}",
        seen.created.len(),
        fault_at.load(Ordering::Relaxed),
        seen.retried_201,
        seen.unavailable
    );
    assert!(seen.unavailable > 0, "the fault caused no 503");
    let figures = settle(&rig.node, |_| true);

    let orders = orders_in_redis(&rig.redis, sku);
    let status = |id: &str| orders.get(id).map(|o| o["status"].as_str().unwrap_or("?"));
    let ghosts: Vec<&String> = orders
        .iter()
        .filter(|(id, o)| o["status"] == "pending" && !seen.created.contains(*id))
        .map(|(id, _)| id)
        .collect();
    let lost: Vec<(&String, Option<&str>)> = seen
        .created
        .iter()
        .map(|id| (id, status(id)))
        .filter(|(_, status)| *status != Some("pending"))
        .collect();
    let held: u64 = orders
        .values()
        .filter(|o| o["status"] == "pending" || o["status"] == "paid")
        .map(|o| o["quantity"].as_u64().expect("quantity"))
        .sum();
    let remaining = rig
        .redis
        .integer(&["GET", &format!("seckill:{{{sku}}}:remaining")])
        .expect("remaining") as u64;
    println!(
        "orders in redis: {}; ghosts pending without a 201: {}; 201'd orders not pending: {}",
        orders.len(),
        ghosts.len(),
        lost.len()
    );
    assert!(
        ghosts.is_empty(),
        "{} orders pending in Redis whose buyers got no 201: {:?}",
        ghosts.len(),
        ghosts.iter().take(10).collect::<Vec<_>>()
    );
    assert!(lost.is_empty(), "201'd orders not pending: {lost:?}");
    assert_eq!(remaining + held, STOCK, "stock accounted for");
    // The fault really made ghosts: orders that existed although their callers saw 503.
    assert!(
        figures.outcome("cancelled") + figures.outcome("claimed") > 0,
        "the fault made no ghost order: {figures:?}"
    );
}

#[test]
fn a_stall_leaves_no_ghost_orders() {
    ghosts_are_abandoned("stall", |rig| {
        // Redis serves nothing for 2 s (longer than every attempt of a purchase): what the node
        // sent meanwhile runs afterwards, after its callers were told 503.
        rig.redis
            .query::<()>(&["DEBUG", "SLEEP", "2"])
            .expect("DEBUG SLEEP");
    });
}

#[test]
fn a_partition_leaves_no_ghost_orders() {
    ghosts_are_abandoned("partition", |rig| {
        // Longer than every attempt of a purchase: what the node sent into the partition is
        // delivered when it heals, after its callers were told 503.
        rig.proxy.set_blackhole(true);
        std::thread::sleep(Duration::from_millis(2_500));
        rig.proxy.set_blackhole(false);
    });
}

#[test]
fn cut_connections_leave_no_ghost_orders() {
    ghosts_are_abandoned("cut", |rig| {
        // A round trip takes 200 ms through the proxy and a cut comes every 150 ms: a script
        // that reached Redis has its reply cut, and so have the node's retries.
        rig.proxy.set_delay(Duration::from_millis(100));
        for round in 1..=5 {
            for _ in 0..12 {
                std::thread::sleep(Duration::from_millis(150));
                rig.proxy.cut();
            }
            rig.proxy.set_delay(Duration::ZERO);
            let figures = settle(&rig.node, |_| true);
            let made = figures.outcome("cancelled") + figures.outcome("claimed");
            println!("cut round {round}: {made} ghost orders so far");
            if made > 0 {
                break;
            }
            rig.proxy.set_delay(Duration::from_millis(100));
        }
    });
}

#[test]
fn purchases_timed_out_in_the_queue_leave_no_ghost_orders() {
    // Each script call takes about 240 ms through the proxy, within the 300 ms budget of its
    // own, but a purchase queued behind the call in flight waits for that one too: it is
    // answered 503 when its budget is over, while its own call goes on and creates its order.
    ghosts_are_abandoned_with("queued", &["--redis-budget-ms", "300"], |rig| {
        rig.proxy.set_delay(Duration::from_millis(120));
        std::thread::sleep(Duration::from_millis(2_000));
        rig.proxy.set_delay(Duration::ZERO);
    });
}

/// A sale that opens once both nodes know it (nodes learn sales by polling Redis).
fn open_on_both(sku: &str, a: &Server, b: &Server) {
    let now = now_ms();
    let spec = serde_json::json!({
        "name": "Ghost sale", "stock": 10, "starts_at": now + 1_500,
        "ends_at": now + 3_600_000, "per_user_limit": 1,
    });
    a.client().create_sale(sku, &spec);
    common::edge::wait_until_open(&[a, b], sku, SETTLE);
}

/// One purchase by another user, so the node has loaded the purchase script into Redis before
/// the link slows down: over a link slower than the deadline, `NOSCRIPT` is never seen.
fn warm_up(node: &Server, sku: &str) {
    node.client().buy(sku, &tok("warm-up"), 1);
}

/// The order `user`'s `key` points at in Redis, if any.
fn keyed_order(redis: &RedisServer, sku: &str, user: &str, key: &str) -> Option<String> {
    redis
        .query::<Option<String>>(&[
            "HGET",
            &format!("seckill:{{{sku}}}:idem"),
            &format!("{user}\0{key}"),
        ])
        .expect("HGET idem")
}

#[test]
fn a_ghost_is_cancelled_and_its_key_buys_afresh() {
    // A budget well below the proxy's delay: with the harness's 2 s budget a 1 s delay each way
    // was a coin toss on a starved machine (the deadline's timer can fire after the late reply).
    let rig = Rig::start_with(1, &["--redis-budget-ms", "400"]);
    rig.node.client().create_sale("lost", &sale_spec(10, 1));
    let token = tok("lost-buyer");
    warm_up(&rig.node, "lost");
    // Every reply comes back after the node's deadline: the script runs, its caller gets 503.
    rig.proxy.set_delay(Duration::from_millis(1_000));
    let r = rig
        .node
        .client()
        .purchase("lost", &token, Some(1), Some("L"));
    assert_error(&r, 503, "unavailable");
    let ghost = poll(SETTLE, || {
        keyed_order(&rig.redis, "lost", "lost-buyer", "L")
    })
    .expect("the purchase ran in Redis");
    rig.proxy.set_delay(Duration::ZERO);
    settle(&rig.node, |g| g.outcome("cancelled") >= 1);
    let orders = orders_in_redis(&rig.redis, "lost");
    assert_eq!(orders[&ghost]["status"], "cancelled", "{orders:?}");
    assert_eq!(
        rig.redis.integer(&["GET", "seckill:{lost}:remaining"]),
        Some(9)
    );
    // The same key buys afresh (no replay of the ghost), and the holding came back.
    let mut client = rig.node.client();
    let again = client.purchase("lost", &token, Some(1), Some("L"));
    assert_status(&again, 201);
    assert_ne!(order_id(&again.json()), ghost, "the ghost was replayed");
    assert_error(
        &client.purchase("lost", &token, Some(1), None),
        403,
        "limit_exceeded",
    );
    assert_eq!(
        rig.redis.integer(&["GET", "seckill:{lost}:remaining"]),
        Some(8)
    );
}

#[test]
fn a_replayed_ghost_is_kept_for_the_buyer_who_got_its_201() {
    let rig = Rig::start(1);
    // Node B reaches Redis directly: the shopper's retry goes there.
    let b = Server::start(1, &["--redis", &rig.redis.url()]);
    open_on_both("race", &rig.node, &b);
    let token = tok("racer");
    warm_up(&rig.node, "race");
    rig.proxy.set_delay(Duration::from_millis(1_000));
    let node = &rig.node;
    let (first, ghost) = std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            node.client()
                .purchase("race", &tok("racer"), Some(1), Some("K"))
        });
        // The script ran; everything node A sends from now on (its retries, its abandon) is
        // held until the shopper's retry through B has been answered. The abandon is sent with
        // the 503, so it reaches Redis no sooner than a whole purchase deadline after the
        // script did: that is the time this loop has to notice the order.
        let started = Instant::now();
        let ghost = loop {
            if let Some(order) = keyed_order(&rig.redis, "race", "racer", "K") {
                break order;
            }
            assert!(
                started.elapsed() < SETTLE,
                "the purchase never ran in Redis"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        rig.proxy.set_blackhole(true);
        (first.join().expect("first purchase"), ghost)
    });
    assert_error(&first, 503, "unavailable");
    let retry = b.client().purchase("race", &token, Some(1), Some("K"));
    assert_status(&retry, 201);
    assert_eq!(
        order_id(&retry.json()),
        ghost,
        "the retry replays the ghost"
    );
    rig.proxy.set_blackhole(false);
    rig.proxy.set_delay(Duration::ZERO);
    let figures = settle(node, |g| g.outcome("claimed") + g.outcome("cancelled") >= 1);
    assert_eq!(
        figures.outcome("claimed"),
        1,
        "the abandon ran after the replay and found its claim: {figures:?}"
    );
    let orders = orders_in_redis(&rig.redis, "race");
    assert_eq!(orders[&ghost]["status"], "pending", "{orders:?}");
    assert_eq!(
        rig.redis.integer(&["GET", "seckill:{race}:remaining"]),
        Some(8)
    );
    let order = b.client().get_order(&ghost, &token);
    assert_status(&order, 200);
    assert_eq!(order.json()["status"], "pending");
}
