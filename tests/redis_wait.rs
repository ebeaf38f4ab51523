//! `--redis-wait` without a failover: a 201 or 200 means a replica already has the write, no
//! replica means 503 for purchases, payments and cancellations, and `seckill doctor` says when the
//! setting does not fit the master's replicas. (The failovers themselves: `redis_failover.rs`.)

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::sentinel::{Sentinel, SentinelTimings};
use common::*;

/// Only a "gave up" bound.
const BOUND: Duration = Duration::from_secs(60);

/// A master and `n` replicas, each done with its initial sync.
fn replicated(n: usize) -> (RedisServer, Vec<RedisServer>) {
    let master = RedisServer::start(&[]);
    let port = master.port.to_string();
    let replicas: Vec<RedisServer> = (0..n)
        .map(|_| RedisServer::start(&["--replicaof", "127.0.0.1", &port]))
        .collect();
    let linked = poll(BOUND, || {
        let up = master
            .query::<String>(&["INFO", "replication"])
            .is_ok_and(|info| info.matches("state=online").count() == n);
        up.then_some(())
    });
    assert!(linked.is_some(), "replicas never connected");
    (master, replicas)
}

fn order_on(redis: &RedisServer, sku: &str, id: &str) -> Option<serde_json::Value> {
    let raw: Option<String> = redis
        .query(&["HGET", &format!("seckill:{{{sku}}}:orders"), id])
        .expect("HGET");
    raw.map(|json| serde_json::from_str(&json).expect("order json"))
}

#[test]
fn a_replica_has_every_acknowledged_write_and_without_one_nothing_is_acknowledged() {
    let (master, mut replicas) = replicated(1);
    let node = Server::start(
        2,
        &[
            "--redis",
            &master.url(),
            "--redis-wait",
            "1",
            "--redis-wait-timeout-ms",
            "100",
        ],
    );
    node.open_sale("w", 100, 1);
    common::edge::wait_until_open(&[&node], "w", BOUND);
    let mut client = node.client();
    // Read from the replica the moment the answer arrives: WAIT returned only once the replica
    // had processed the write.
    let paid = order_id(&client.buy("w", &tok("payer"), 1));
    assert!(
        order_on(&replicas[0], "w", &paid).is_some(),
        "201 before the replica had the order"
    );
    let r = client.pay(&paid, &tok("payer"));
    assert_eq!(r.status, 200, "{r}");
    let on_replica = order_on(&replicas[0], "w", &paid).expect("the paid order");
    assert_eq!(
        on_replica["status"], "paid",
        "200 before the replica had the payment"
    );
    let pending = order_id(&client.buy("w", &tok("canceller"), 1));

    replicas[0].kill9();
    let orders_before: i64 = master.query(&["HLEN", "seckill:{w}:orders"]).expect("HLEN");
    let r = client.purchase("w", &tok("unconfirmed"), Some(1), None);
    assert_error(&r, 503, "unavailable");
    let orders_after: i64 = master.query(&["HLEN", "seckill:{w}:orders"]).expect("HLEN");
    assert_eq!(
        orders_after,
        orders_before + 1,
        "the unacknowledged order stays on the master"
    );
    let r = client.cancel(&pending, &tok("canceller"));
    assert_error(&r, 503, "unavailable");
}

/// `seckill doctor` output for `--redis url` plus `args`.
fn doctor(url: &str, args: &[&str]) -> String {
    let out = common::process::run(
        std::process::Command::new(BIN)
            .arg("doctor")
            .args(["--redis", url])
            .args(args)
            .env_remove("SECKILL_REDIS")
            .env_remove("SECKILL_REDIS_WAIT")
            .env_remove("SECKILL_CONFIG"),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `replication` check's line and its fix.
fn replication_check(text: &str) -> String {
    let mut lines = text
        .lines()
        .skip_while(|line| !line.contains("replication"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no replication check in:\n{text}"));
    let fix = lines
        .next()
        .filter(|line| line.contains("fix:"))
        .unwrap_or("");
    format!("{first}\n{fix}")
}

#[test]
fn doctor_warns_when_redis_wait_is_0_and_the_master_has_replicas() {
    let (master, _replicas) = replicated(2);
    let sentinel = match Sentinel::start(master.port, SentinelTimings::default()) {
        Ok(sentinel) => sentinel,
        Err(why) => return skip_unless_required("SECKILL_REQUIRE_SENTINEL", &why),
    };
    for url in [master.url(), sentinel.url()] {
        let zero = replication_check(&doctor(&url, &[]));
        assert!(
            zero.starts_with("WARN") && zero.contains("2 replica(s)") && zero.contains("lose"),
            "{url} with --redis-wait 0: {zero}"
        );
        let one = replication_check(&doctor(&url, &["--redis-wait", "1"]));
        assert!(one.starts_with("pass"), "{url} with --redis-wait 1: {one}");
        let three = replication_check(&doctor(&url, &["--redis-wait", "3"]));
        assert!(
            three.starts_with("FAIL") && three.contains("503"),
            "{url} with --redis-wait 3: {three}"
        );
    }
    let alone = RedisServer::start(&[]);
    let none = replication_check(&doctor(&alone.url(), &[]));
    assert!(
        none.starts_with("pass"),
        "no replicas, --redis-wait 0: {none}"
    );
}
