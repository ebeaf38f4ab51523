//! Acknowledged survives failover: a master, two replicas and a Sentinel under purchase load;
//! the master dies (or is cut off) mid-sale and Sentinel promotes a replica. With
//! `--redis-wait 1`, no order a shopper got 201 for is missing on the new master, and selling on
//! after the failover never sells more than the stock.
//!
//! Two replicas, so that after the promotion the new master still has one to confirm writes
//! (with one, `--redis-wait 1` would rightly refuse every sale until a replica is back).
//! No timing assertions: every bound is a "gave up" limit, and the measured times are printed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::redis::{query, stored_order, RedisServer};
use common::sentinel::{Sentinel, SentinelTimings};
use common::*;

/// `--redis-wait` of the nodes under test. Set to "0" to watch the tests fail.
const REDIS_WAIT: &str = "1";
/// Only a "gave up" bound for each phase (setup, failover, selling on).
const BOUND: Duration = Duration::from_secs(90);
const SKU: &str = "failover";

/// One answered purchase.
struct Answer {
    at: Instant,
    status: u16,
    /// The order id of a 201.
    order: Option<String>,
    /// Which node answered.
    node: usize,
}

/// A master, two replicas replicating from `127.0.0.1:via` (the master, or a proxy to it) and a
/// Sentinel watching the master at `via` or directly. The Sentinel names the master to the nodes
/// by the address it watches.
struct Topology {
    master: RedisServer,
    /// The port the Sentinel watches the master on.
    watched: u16,
    replicas: Vec<RedisServer>,
    sentinel: Sentinel,
}

fn start(
    via: impl FnOnce(u16) -> u16,
    sentinel_via: bool,
    timings: SentinelTimings,
) -> Option<Topology> {
    let master = RedisServer::start(&[]);
    let via = via(master.port);
    let replica_of = ["--replicaof", "127.0.0.1", &via.to_string()].map(str::to_owned);
    let replica_args: Vec<&str> = replica_of.iter().map(String::as_str).collect();
    let replicas: Vec<RedisServer> = (0..2).map(|_| RedisServer::start(&replica_args)).collect();
    let synced = poll(BOUND, || {
        let linked = replicas.iter().all(|replica| {
            replica
                .query::<String>(&["INFO", "replication"])
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
        linked.then_some(())
    });
    assert!(synced.is_some(), "replicas never synced");
    let watched = if sentinel_via { via } else { master.port };
    let sentinel = match Sentinel::start(watched, timings) {
        Ok(sentinel) => sentinel,
        Err(why) => {
            skip_unless_required("SECKILL_REQUIRE_SENTINEL", &why);
            return None;
        }
    };
    let known = poll(BOUND, || (sentinel.healthy_replicas() == 2).then_some(()));
    assert!(known.is_some(), "the sentinel never saw both replicas");
    Some(Topology {
        master,
        watched,
        replicas,
        sentinel,
    })
}

/// A node on `url` with `--redis-wait REDIS_WAIT`.
fn node(url: &str) -> Server {
    Server::start(
        2,
        &[
            "--redis",
            url,
            "--redis-wait",
            REDIS_WAIT,
            "--redis-wait-timeout-ms",
            "300",
        ],
    )
}

/// Buys one unit per request, each as a new shopper, on `threads` connections to `node`, until
/// `stop` is set or, with `sold_out`, the sale is sold out (which sets it). Every answer is
/// appended to `answers`.
fn shop<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    server: &Server,
    node: usize,
    threads: usize,
    stop: &'scope AtomicBool,
    sold_out: Option<&'scope AtomicBool>,
    answers: &'scope Mutex<Vec<Answer>>,
) {
    let port = server.port;
    for thread in 0..threads {
        scope.spawn(move || {
            let mut client = Client::connect(port);
            for n in 0.. {
                if stop.load(Ordering::Relaxed)
                    || sold_out.is_some_and(|s| s.load(Ordering::Relaxed))
                {
                    return;
                }
                let auth = format!("Bearer {}", tok(&format!("n{node}-t{thread}-{n}")));
                let reply = client.try_request(
                    "POST",
                    &format!("/v1/sales/{SKU}/purchase"),
                    &[("Authorization", &auth)],
                    Some(r#"{"quantity":1}"#),
                );
                let Ok(reply) = reply else {
                    client = Client::connect(port);
                    continue;
                };
                let code = reply.error_code();
                if reply.status == 409 || code.as_deref() == Some("sold_out") {
                    sold_out.inspect(|s| s.store(true, Ordering::Relaxed));
                }
                assert!(
                    matches!(reply.status, 201 | 409 | 503),
                    "unexpected answer: {reply}"
                );
                let order = (reply.status == 201).then(|| order_id(&reply.json()));
                answers.lock().expect("answers").push(Answer {
                    at: Instant::now(),
                    status: reply.status,
                    order,
                    node,
                });
                if reply.status == 503 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
    }
}

/// When `node` sold again after `fault`: its first 201 after its first 503 since then (a 201
/// answered just after the fault was in flight before it).
fn resumed(answers: &[Answer], node: usize, fault: Instant) -> Option<Duration> {
    let mut since = answers.iter().filter(|a| a.node == node && a.at > fault);
    since.find(|a| a.status == 503)?;
    since.find(|a| a.status == 201).map(|a| a.at - fault)
}

fn acked(answers: &Mutex<Vec<Answer>>) -> usize {
    let answers = answers.lock().expect("answers");
    answers.iter().filter(|a| a.status == 201).count()
}

/// What the new master holds, checked against what shoppers were told.
#[derive(Debug)]
struct Audit {
    acknowledged: usize,
    missing: Vec<String>,
    remaining: i64,
    held_by_orders: i64,
}

fn audit(master_port: u16, answers: &[Answer], stock: i64) -> Audit {
    let orders_key = format!("seckill:{{{SKU}}}:orders");
    let acked: Vec<&String> = answers.iter().filter_map(|a| a.order.as_ref()).collect();
    let fields: Vec<(String, String)> =
        query(master_port, &["HGETALL", &orders_key]).expect("HGETALL orders");
    let all = common::redis::stored_orders(fields);
    let missing = acked
        .iter()
        .filter(|id| !all.contains_key(id.as_str()))
        .map(|id| id.to_string())
        .collect();
    let remaining: i64 = query::<Option<i64>>(
        master_port,
        &["GET", &format!("seckill:{{{SKU}}}:remaining")],
    )
    .expect("GET remaining")
    .unwrap_or(stock);
    let held_by_orders = all
        .values()
        .map(String::as_str)
        .map(stored_order)
        .filter(|order| matches!(order["status"].as_str(), Some("pending" | "paid")))
        .map(|order| order["quantity"].as_i64().expect("quantity"))
        .sum();
    Audit {
        acknowledged: acked.len(),
        missing,
        remaining,
        held_by_orders,
    }
}

/// The promises: nothing acknowledged is missing, nothing is sold twice, and Redis' stock
/// adds up.
#[track_caller]
fn assert_promises_kept(audit: &Audit, stock: i64) {
    assert!(
        audit.missing.is_empty(),
        "{} acknowledged order(s) missing on the new master: {:?}",
        audit.missing.len(),
        &audit.missing[..audit.missing.len().min(10)]
    );
    assert!(
        audit.acknowledged as i64 <= stock,
        "oversold: {} units acknowledged for a stock of {stock}",
        audit.acknowledged
    );
    assert_eq!(
        audit.remaining + audit.held_by_orders,
        stock,
        "the new master's stock does not add up: {audit:?}"
    );
}

/// Until `port` is the master Sentinel names (it promoted a replica), or the bound.
fn wait_promoted(sentinel: &Sentinel, old: u16) -> Option<u16> {
    poll(BOUND, || sentinel.master_port().filter(|port| *port != old))
}

/// SIGKILL the master under load; `lag` delays the replication link.
fn kill_master_under_load(lag: Option<Duration>) {
    const STOCK: i64 = 1_500;
    const KILL_AFTER: usize = 300;
    let mut proxy = None;
    let timings = SentinelTimings {
        // With a proxy between replicas and master, the Sentinel sees the replicas replicate
        // from another address than the master's and, after failover-timeout, points them at
        // the master directly: longer than the test, so the lag stays.
        failover_timeout_ms: if lag.is_some() { 120_000 } else { 3_000 },
        ..SentinelTimings::default()
    };
    let Some(mut topology) = start(
        |master| match lag {
            Some(_) => proxy.insert(Proxy::start(master)).port,
            None => master,
        },
        // The nodes reach the master directly: only replication lags.
        false,
        timings,
    ) else {
        return;
    };
    let old_port = topology.watched;
    let node = node(&topology.sentinel.url());
    node.open_sale(SKU, STOCK as u64, 1);
    common::edge::wait_until_open(&[&node], SKU, BOUND);
    if let (Some(proxy), Some(lag)) = (&proxy, lag) {
        proxy.set_delay(lag);
    }

    let answers = Mutex::new(Vec::new());
    let (stop, sold_out) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut killed_at = None;
    let mut promoted_at = None;
    std::thread::scope(|scope| {
        shop(scope, &node, 0, 16, &stop, Some(&sold_out), &answers);
        let started = Instant::now();
        while acked(&answers) < KILL_AFTER && started.elapsed() < BOUND {
            std::thread::sleep(Duration::from_millis(5));
        }
        match &proxy {
            // The lagging replication stream dies with the master, as with a host or network
            // failure (a killed process alone leaves its socket buffers to be delivered).
            Some(proxy) => {
                proxy.set_blackhole(true);
                topology.master.kill9();
                proxy.cut();
                proxy.set_blackhole(false);
            }
            None => topology.master.kill9(),
        }
        killed_at = Some(Instant::now());
        promoted_at = wait_promoted(&topology.sentinel, old_port).map(|_| Instant::now());
        let deadline = Instant::now() + BOUND;
        while !sold_out.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let killed_at = killed_at.expect("killed");
    let answers = answers.into_inner().expect("answers");
    let new_port = topology.sentinel.master_port().expect("a master");
    assert_ne!(new_port, old_port, "no replica was promoted");
    assert!(
        topology.replicas.iter().any(|r| r.port == new_port),
        "the promoted master {new_port} is not one of the replicas"
    );
    let before = answers
        .iter()
        .filter(|a| a.at < killed_at && a.status == 201)
        .count();
    let after: Vec<&Answer> = answers.iter().filter(|a| a.at > killed_at).collect();
    let refused_after = after.iter().filter(|a| a.status == 503).count();
    let first_sale_after = resumed(&answers, 0, killed_at);
    let audit = audit(new_port, &answers, STOCK);
    eprintln!(
        "failover (lag {lag:?}, --redis-wait {REDIS_WAIT}): {before} sold before the kill, {} answers after \
         ({refused_after} x 503); promoted after {:?}; selling again after {:?}; {} acknowledged, {} missing, \
         remaining {} + held {} (stock {STOCK})",
        after.len(),
        promoted_at.map(|at| at - killed_at),
        first_sale_after,
        audit.acknowledged,
        audit.missing.len(),
        audit.remaining,
        audit.held_by_orders,
    );
    assert!(before > 0, "nothing was sold before the kill");
    assert!(!after.is_empty(), "no purchase was answered after the kill");
    assert!(
        first_sale_after.is_some(),
        "the node never sold again after the failover; last answers: {:?}",
        after
            .iter()
            .rev()
            .take(5)
            .map(|a| a.status)
            .collect::<Vec<_>>()
    );
    assert_promises_kept(&audit, STOCK);
    drop(node);
}

#[test]
fn acknowledged_orders_survive_a_master_killed_under_load() {
    kill_master_under_load(None);
}

#[test]
fn acknowledged_orders_survive_a_failover_with_replication_lag() {
    kill_master_under_load(Some(Duration::from_millis(25)));
}

/// The old master is cut off from the Sentinel, the replicas and node 1 (all of which reach it
/// through one proxy) but not from node 2, which keeps selling on it after the promotion. With
/// `--redis-wait 1` the old master has no replica left, so node 2 acknowledges nothing there.
#[test]
fn a_node_still_on_the_old_master_acknowledges_nothing_after_a_split() {
    const STOCK: i64 = 1_500;
    const SPLIT_AFTER: usize = 300;
    const SPLIT_BRAIN: Duration = Duration::from_secs(3);
    let mut proxy = None;
    let Some(topology) = start(
        |master| proxy.insert(Proxy::start(master)).port,
        true,
        SentinelTimings::default(),
    ) else {
        return;
    };
    let proxy_port = proxy.as_ref().expect("proxy").port;
    let via_sentinel = node(&topology.sentinel.url());
    let direct = node(&topology.master.url());
    via_sentinel.open_sale(SKU, STOCK as u64, 1);
    common::edge::wait_until_open(&[&via_sentinel, &direct], SKU, BOUND);

    let answers = Mutex::new(Vec::new());
    let (stop, stop_direct) = (AtomicBool::new(false), AtomicBool::new(false));
    let sold_out = AtomicBool::new(false);
    let mut split_at = None;
    let mut promoted_at = None;
    std::thread::scope(|scope| {
        shop(scope, &via_sentinel, 1, 8, &stop, Some(&sold_out), &answers);
        // Node 2 goes on until told: after the split, its sale is not the new master's.
        shop(scope, &direct, 2, 8, &stop_direct, None, &answers);
        let started = Instant::now();
        while acked(&answers) < SPLIT_AFTER && started.elapsed() < BOUND {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(proxy.take());
        split_at = Some(Instant::now());
        promoted_at = wait_promoted(&topology.sentinel, proxy_port).map(|_| Instant::now());
        std::thread::sleep(SPLIT_BRAIN);
        stop_direct.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + BOUND;
        while !sold_out.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let split_at = split_at.expect("split");
    let promoted_at = promoted_at.expect("the sentinel never promoted a replica");
    let answers = answers.into_inner().expect("answers");
    let new_port = topology.sentinel.master_port().expect("a master");
    let direct_after_promotion: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.node == 2 && a.at > promoted_at)
        .collect();
    let direct_acked_after = direct_after_promotion
        .iter()
        .filter(|a| a.status == 201)
        .count();
    let resumed = resumed(&answers, 1, split_at);
    let audit = audit(new_port, &answers, STOCK);
    eprintln!(
        "split brain (--redis-wait {REDIS_WAIT}): promoted after {:?}; node 2 answered {} purchases on the old \
         master after the promotion, {direct_acked_after} of them 201; node 1 selling again after {resumed:?}; \
         {} acknowledged in all, {} missing on the new master (stock {STOCK})",
        promoted_at - split_at,
        direct_after_promotion.len(),
        audit.acknowledged,
        audit.missing.len(),
    );
    assert!(
        !direct_after_promotion.is_empty(),
        "node 2 did not reach the old master after the promotion: no split brain happened"
    );
    assert!(resumed.is_some(), "node 1 never sold again after the split");
    assert_promises_kept(&audit, STOCK);
    drop((via_sentinel, direct));
}
