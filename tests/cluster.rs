//! Cluster mode: several nodes on one Redis never oversell, and a Redis outage mid-sale costs
//! availability (fast 503s) but never correctness.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis::RedisServer;
use common::*;
use serde_json::json;

/// Bound for what nodes learn by polling Redis (every 100 ms): only a "gave up" limit.
const WAIT: Duration = Duration::from_secs(60);

/// A sale opening `delay_ms` from now, so every node has learned it (nodes poll Redis every
/// 100 ms) before the first purchase.
fn sale_opening_in(delay_ms: i64, stock: u64, per_user_limit: u64) -> serde_json::Value {
    let now = now_ms();
    json!({
        "name": "Cluster sale",
        "stock": stock,
        "starts_at": now + delay_ms,
        "ends_at": now + 3_600_000,
        "per_user_limit": per_user_limit,
    })
}

fn wait_until_open(nodes: &[&Server], sku: &str) {
    common::edge::wait_until_open(nodes, sku, WAIT);
}

#[test]
fn three_nodes_on_one_redis_sell_exactly_the_stock() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(2, &["--redis", &url]))
        .collect();
    const STOCK: u64 = 300;
    const LIMIT: u64 = 2;
    nodes[0]
        .client()
        .create_sale("hot", &sale_opening_in(1_500, STOCK, LIMIT));
    wait_until_open(&nodes.iter().collect::<Vec<_>>(), "hot");

    let created: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sold_out_seen = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for thread in 0..64 {
            let node = &nodes[thread % 3];
            let (created, sold_out_seen, attempts) = (
                Arc::clone(&created),
                Arc::clone(&sold_out_seen),
                Arc::clone(&attempts),
            );
            scope.spawn(move || {
                let mut client = node.client();
                // 64 threads × 8 users × 3 tries: 1,536 attempts, far more than stock.
                for n in 0..8 {
                    let user = format!("c-{thread}-{n}");
                    let token = tok(&user);
                    for _ in 0..3 {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let r = client.purchase("hot", &token, Some(1), None);
                        match r.status {
                            201 => created
                                .lock()
                                .expect("lock")
                                .push((user.clone(), order_id(&r.json()))),
                            409 | 403 => {
                                if r.error_code().as_deref() == Some("sold_out") {
                                    sold_out_seen.store(true, Ordering::Relaxed);
                                }
                            }
                            other => panic!("unexpected {other}: {r}"),
                        }
                    }
                }
            });
        }
    });
    let created = created.lock().expect("lock").clone();
    assert!(
        sold_out_seen.load(Ordering::Relaxed),
        "demand exceeded stock"
    );
    assert_eq!(created.len() as u64, STOCK, "201s across three nodes");
    let mut per_user: HashMap<&str, u64> = HashMap::new();
    for (user, _) in &created {
        *per_user.entry(user).or_default() += 1;
    }
    assert!(
        per_user.values().all(|n| *n <= LIMIT),
        "a user over the limit"
    );

    // Redis's own state agrees.
    assert_eq!(redis.integer(&["GET", "seckill:{hot}:remaining"]), Some(0));
    let orders = redis.orders("hot");
    assert_eq!(orders.len(), STOCK as usize);
    for (user, id) in &created {
        let stored = orders.get(id).cloned().unwrap_or_default();
        assert!(
            stored.contains(user.as_str()),
            "order {id} of {user} in redis: {stored}"
        );
    }
    let held: Vec<u64> = redis
        .query::<Vec<String>>(&["HVALS", "seckill:{hot}:held"])
        .expect("HVALS")
        .iter()
        .map(|raw| common::redis::held_units(raw) as u64)
        .collect();
    assert_eq!(held.iter().sum::<u64>(), STOCK, "held units in redis");
    assert!(held.iter().all(|units| *units <= LIMIT));
    // Every node answers sold out now, at its edge or from Redis.
    for node in &nodes {
        assert_error(
            &node
                .client()
                .purchase("hot", &tok("latecomer"), Some(1), None),
            409,
            "sold_out",
        );
    }
}

#[test]
fn a_redis_outage_mid_sale_gives_fast_503s_and_loses_nothing() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = redis.url();
    let node = Server::start(2, &["--redis", &url]);
    const STOCK: u64 = 60;
    node.client().create_sale("outage", &sale_spec(STOCK, 1));
    let mut client = node.client();
    let mut created: Vec<String> = Vec::new();
    for n in 0..20 {
        let order = client.buy("outage", &tok(&format!("o-{n}")), 1);
        created.push(order_id(&order));
    }

    redis.kill9();
    let mut outage_answers = Vec::new();
    for n in 0..30 {
        let r = client.purchase("outage", &tok(&format!("down-{n}")), Some(1), None);
        outage_answers.push(r.status);
        if r.status == 201 {
            created.push(order_id(&r.json()));
        } else {
            assert_error(&r, 503, "unavailable");
        }
    }
    assert!(
        outage_answers.iter().all(|status| *status == 503),
        "no 201 without Redis: {outage_answers:?}"
    );
    let ready = node.client().get("/readyz");
    assert_error(&ready, 503, "not_ready");
    let metrics = node.client().get("/metrics");
    assert_status(&metrics, 200);
    let text = metrics.text();
    let parsed = common::prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        parsed.sum("seckill_redis_breaker_opened_total", &[]) >= 1.0,
        "{text}"
    );
    let failed = parsed.sum("seckill_redis_errors_total", &[]);
    assert!(failed >= 1.0, "{text}");

    redis.restart();
    poll(WAIT, || {
        (node.client().get("/readyz").status == 200).then_some(())
    })
    .expect("the node recovers without a restart");
    // A fresh connection: the recovery can outlast the server's idle timeout on a loaded machine.
    let mut client = node.client();
    // Sell out what is left.
    let mut n = 0;
    loop {
        let r = client.purchase("outage", &tok(&format!("after-{n}")), Some(1), None);
        n += 1;
        match r.status {
            201 => created.push(order_id(&r.json())),
            409 => {
                assert_error(&r, 409, "sold_out");
                break;
            }
            503 => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("unexpected {other}: {r}"),
        }
        assert!(n < 1_000, "never sold out");
    }
    assert_eq!(
        created.len() as u64,
        STOCK,
        "exactly the stock across the outage"
    );
    assert_eq!(
        redis.integer(&["GET", "seckill:{outage}:remaining"]),
        Some(0)
    );
    let orders = redis.orders("outage");
    for id in &created {
        assert!(orders.contains_key(id), "201'd order {id} is in redis");
    }
}

#[test]
fn scripts_flushed_from_redis_are_reloaded() {
    let redis = RedisServer::start(&[]);
    let node = Server::start(1, &["--redis", &redis.url()]);
    let mut client = node.client();
    client.create_sale("flushed", &sale_spec(10, 1));
    client.buy("flushed", &tok("f-1"), 1);
    // As after a Redis restart without persistence of scripts, or a failover.
    redis
        .query::<()>(&["SCRIPT", "FLUSH"])
        .expect("SCRIPT FLUSH");
    client.buy("flushed", &tok("f-2"), 1);
    assert_eq!(client.remaining("flushed"), 8);
    assert_eq!(redis.orders("flushed").len(), 2);
}

#[test]
fn stock_returned_on_one_node_is_sold_again_through_another() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let a = Server::start(1, &["--redis", &url]);
    let b = Server::start(2, &["--redis", &url]);
    a.client()
        .create_sale("returns", &sale_opening_in(1_000, 1, 1));
    wait_until_open(&[&a, &b], "returns");
    let order = a.client().buy("returns", &tok("first"), 1);
    // B learns the sell-out from Redis and refuses at its edge.
    let mut b_client = b.client();
    poll(WAIT, || {
        let r = b_client.purchase("returns", &tok("second"), Some(1), None);
        assert_ne!(r.status, 201, "sold twice: {r}");
        (r.error_code().as_deref() == Some("sold_out")).then_some(())
    })
    .expect("B answers sold out");
    assert_status(&a.client().cancel(&order_id(&order), &tok("first")), 200);
    // The returned unit can be bought through B: B's view catches up by polling Redis.
    let bought = poll(WAIT, || {
        let r = b_client.purchase("returns", &tok("second"), Some(1), None);
        (r.status == 201).then_some(r)
    })
    .expect("B sells the returned unit");
    assert_eq!(bought.json()["user_id"], "second");
    assert_eq!(
        redis.integer(&["GET", "seckill:{returns}:remaining"]),
        Some(0)
    );
}

/// What a node logs when its Redis calls fail for want of Redis (`src/store/redis/calls.rs`).
const REDIS_UNREACHABLE: &str = "redis circuit breaker opened";

/// `seckill serve` on `port` with one shard and `redis_url`, spawned directly (not through
/// `Server::start`, which waits for a 200 from `/readyz` that cannot come before Redis does).
fn spawn_node(port: u16, redis_url: &str, data_dir: &std::path::Path) -> process::Spawned {
    let mut command = process::seckill_cmd();
    command
        .args(["serve", "--redis", redis_url, "--shards", "1"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir);
    process::Spawned::spawn(&mut command)
}

#[test]
fn a_node_started_before_redis_comes_up_by_itself() {
    let mut redis = RedisServer::start(&[]);
    redis.kill9();
    let port = pick_port();
    let data_dir = fresh_data_dir();
    let mut node = spawn_node(port, &redis.url(), &data_dir);
    // The node is up without Redis: it listens, says it is not ready, and has found Redis
    // unreachable (a 503 alone could be a node still starting). Only then does Redis start, so
    // the node must find it by itself.
    let mut last = String::from("no answer yet");
    let not_ready = poll(process::READY_BOUND, || {
        assert!(node.is_running(), "the node exited without Redis");
        let mut client = Client::from_stream(
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?,
            port,
        );
        let status = match client.try_request("GET", "/readyz", &[], None) {
            Ok(response) => {
                assert_ne!(response.status, 200, "ready without Redis: {response}");
                last = response.to_string();
                response.status
            }
            Err(error) => {
                last = error.to_string();
                return None;
            }
        };
        let output = format!("{}{}", node.stderr(), node.stdout());
        (status == 503 && output.contains(REDIS_UNREACHABLE)).then_some(())
    });
    if not_ready.is_none() {
        node.fail(&format!(
            "within {:?}, /readyz did not answer 503 with {REDIS_UNREACHABLE:?} in the log while \
             Redis was down (last /readyz: {last})",
            process::READY_BOUND
        ));
    }
    redis.restart();
    // The connection that comes up closes the breaker startup's failures opened: in the first
    // scrape that shows it connected, the breaker is closed and the node serves, not a pause
    // later (a node beside a cluster would otherwise be ready with one master still refused).
    let first_connected = poll(process::READY_BOUND, || {
        let mut client = Client::from_stream(
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?,
            port,
        );
        let text = client
            .try_request("GET", "/metrics", &[], None)
            .ok()?
            .text();
        let parsed = common::prometheus::parse(&text).ok()?;
        let connected = parsed.sum("seckill_redis_master_connected", &[]);
        if connected < 1.0 {
            std::thread::sleep(Duration::from_millis(5));
            return None;
        }
        Some((
            parsed.sum("seckill_redis_breaker_state", &[]),
            parsed.sum("seckill_redis_master_up", &[]),
            text,
        ))
    });
    let Some((breakers, up, text)) = first_connected else {
        node.fail("the node never reconnected to the restarted Redis");
    };
    if (breakers, up) != (0.0, 1.0) {
        node.fail(&format!(
            "connected again, but breaker state {breakers} and up {up}:\n{text}"
        ));
    }
    node.wait_ready(port);
    let mut client = Client::connect(port);
    client.create_sale("late", &sale_spec(3, 1));
    client.buy("late", &tok("late-1"), 1);
    assert_eq!(client.remaining("late"), 2);
    drop(node);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn a_block_and_an_unblock_made_on_other_nodes_are_seen_everywhere() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let a = Server::start(1, &["--redis", &url]);
    let b = Server::start(1, &["--redis", &url]);
    a.client()
        .create_sale("guarded", &sale_opening_in(1_000, 10, 5));
    wait_until_open(&[&a, &b], "guarded");
    let token = tok("mallory");
    // Blocked through A: A's edge refuses from now on, and B refuses by Redis or its edge.
    assert_status(&a.client().block("mallory"), 204);
    let mut a_client = a.client();
    assert_error(
        &a_client.purchase("guarded", &token, Some(1), None),
        403,
        "blocked",
    );
    assert_error(
        &b.client().purchase("guarded", &token, Some(1), None),
        403,
        "blocked",
    );
    // Unblocked through B.
    assert_status(&b.client().unblock("mallory"), 204);
    // A's edge hears of the unblock made on B, and lets the purchase through.
    poll(WAIT, || {
        let r = a_client.purchase("guarded", &token, Some(1), None);
        (r.status == 201).then_some(())
    })
    .expect("A sells to the unblocked user");
}
