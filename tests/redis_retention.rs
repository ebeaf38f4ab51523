//! Settled sales in cluster mode (`src/store/redis/retention.rs`): their keys expire after
//! `--redis-retention-secs`, they leave the index of sales `PREFIX:sales`, a node started later
//! spends nothing on them, and the API then answers for them as for any unknown SKU, while live sales list as before.
//!
//! Real `seckill` processes, real HTTP, one real `redis-server`. Time bounds are only "gave up"
//! limits; the assertions are on what Redis and the API hold.

mod common;

use common::redis::RedisServer;
use common::redis::{query_ok, sku_key, PREFIX};
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// "Gave up" bound for what should take a few owner ticks and one retention.
const WAIT: Duration = Duration::from_secs(60);

fn indexed(port: u16, sku: &str) -> bool {
    query_ok::<i64>(port, &["SISMEMBER", &format!("{PREFIX}:sales"), sku]) == 1
}

/// A sale that ended long ago (past its payment deadline and the settling margin): settled as
/// soon as a node reads it.
fn over_spec(stock: u64) -> Value {
    let now = now_ms();
    json!({
        "name": "long over",
        "stock": stock,
        "starts_at": now - 400_000,
        "ends_at": now - 300_000,
        "per_user_limit": 1,
        "payment_timeout_ms": 1000,
    })
}

/// `GET /v1/sales` on `client`: SKU → remaining.
fn listing(client: &mut Client) -> HashMap<String, i64> {
    let r = client.get("/v1/sales?limit=1000");
    assert_status(&r, 200);
    let body = r.json();
    assert!(body.get("next").is_none(), "one page expected: {body}");
    body["sales"]
        .as_array()
        .unwrap_or_else(|| panic!("no sales array: {body}"))
        .iter()
        .map(|sale| {
            (
                sale["sku"].as_str().unwrap_or_default().to_owned(),
                sale["remaining"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// Whether both nodes come to list `sku` with `left` remaining within [`WAIT`].
fn both_list(a: &mut Client, b: &mut Client, sku: &str, left: i64) -> bool {
    let listed = poll(WAIT, || {
        let seen = [listing(a), listing(b)];
        seen.iter()
            .all(|page| page.get(sku) == Some(&left))
            .then_some(())
    });
    listed.is_some()
}

/// With a 2 s retention: the settled sale's keys get a TTL and vanish, it leaves the index, both
/// nodes then answer 404 for it and list only the live sale (with its right remaining), no node
/// mistakes the expiry for lost writes.
#[test]
fn settled_sales_expire_leave_the_index_and_answer_unknown() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let args = ["--redis", url.as_str(), "--redis-retention-secs", "2"];
    let nodes: Vec<Server> = (0..2).map(|_| Server::start(2, &args)).collect();
    let (mut a, mut b) = (nodes[0].client(), nodes[1].client());
    a.create_sale("live", &sale_spec(10, 5));
    a.create_sale("over", &over_spec(3));
    a.buy("live", &tok("buyer"), 2);

    let ttl = poll(WAIT, || {
        let ttl: i64 = query_ok(redis.port, &["PTTL", &sku_key("over", "sale")]);
        (ttl > 0 || ttl == -2).then_some(ttl)
    });
    assert!(
        ttl.is_some(),
        "the settled sale's keys never got a TTL; logs:\n{}\n{}",
        nodes[0].log(),
        nodes[1].log()
    );
    let gone = poll(WAIT, || {
        let left: i64 = query_ok(
            redis.port,
            &[
                "EXISTS",
                &sku_key("over", "sale"),
                &sku_key("over", "remaining"),
                &sku_key("over", "seq"),
                &sku_key("over", "events"),
                &sku_key("over", "reclaim:fence"),
            ],
        );
        (left == 0).then_some(())
    });
    assert!(gone.is_some(), "the settled sale's keys never expired");
    assert!(!indexed(redis.port, "over"), "a settled sale stays indexed");
    assert!(indexed(redis.port, "live"), "the live sale left the index");
    let live_ttl: i64 = query_ok(redis.port, &["PTTL", &sku_key("live", "sale")]);
    assert_eq!(live_ttl, -1, "a live sale's keys must not expire");

    for (name, client) in [("A", &mut a), ("B", &mut b)] {
        assert_error(&client.get("/v1/sales/over"), 404, "unknown_sale");
        let listed = listing(client);
        assert_eq!(
            listed,
            HashMap::from([("live".to_owned(), 8)]),
            "node {name} lists the live sale with its remaining, and not the expired one"
        );
    }
    let marker: i64 = query_ok(redis.port, &["EXISTS", &sku_key("over", "regressed")]);
    assert_eq!(
        marker, 0,
        "an expired settled sale was taken for lost writes"
    );

    // The SKU is free again, although both nodes once synced its old sale: node A, which made
    // it, makes a new one, and both nodes sell it.
    let again = a.put_sale("over", &sale_spec(4, 2));
    assert_eq!(
        again.status,
        201,
        "a new sale of an expired SKU was refused: {again}; logs:\n{}\n{}",
        nodes[0].log(),
        nodes[1].log()
    );
    a.buy("over", &tok("again-a"), 1);
    // Node B learns of the new sale as of any other sale made on another node.
    let sold = poll(WAIT, || {
        let r = b.purchase("over", &tok("again-b"), Some(1), None);
        (r.status == 201).then_some(())
    });
    assert!(
        sold.is_some(),
        "node B never sold the new sale; logs:\n{}\n{}",
        nodes[0].log(),
        nodes[1].log()
    );
    assert_eq!(b.get_sale("over")["remaining"], json!(2));
    assert_eq!(b.get_sale("over")["remaining"], json!(2));
}

/// With retention 0 the keys of a settled sale are kept for ever, but it still leaves the index:
/// a node started afterwards reads nothing of it (no `SYNC`, no `MGET`), though it still answers
/// for it on request.
#[test]
fn a_settled_sale_costs_a_node_started_later_nothing() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let args = ["--redis", url.as_str(), "--redis-retention-secs", "0"];
    let first = Server::start(1, &args);
    first.client().create_sale("kept", &over_spec(3));
    let left = poll(WAIT, || (!indexed(redis.port, "kept")).then_some(()));
    assert!(
        left.is_some(),
        "the settled sale never left the index; log:\n{}",
        first.log()
    );
    let ttl: i64 = query_ok(redis.port, &["PTTL", &sku_key("kept", "sale")]);
    assert_eq!(ttl, -1, "retention 0 keeps a settled sale's keys");
    drop(first);

    let _: String = query_ok(redis.port, &["CONFIG", "RESETSTAT"]);
    let later = Server::start(2, &args);
    // Long enough for many owner ticks and a read of the index.
    std::thread::sleep(Duration::from_secs(3));
    let info: String = query_ok(redis.port, &["INFO", "commandstats"]);
    let calls = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        (calls("evalsha"), calls("mget")),
        (0, 0),
        "a node started after the sale settled still reads it; commandstats:\n{info}"
    );
    let sale = later.client().get_sale("kept");
    assert_eq!(
        sale["remaining"],
        json!(3),
        "the kept sale still answers: {sale}"
    );
}

/// A SKU whose sale sold, settled and expired, made again: a node that synced the old sale (its
/// stock seq far ahead of the new sale's, one floor per stock bucket) takes the new definition's
/// level, sells it, and does not take the new, lower seqs for lost writes. Waits out the
/// settling margin (about a minute): the old sale must have sold while both nodes watched.
#[test]
fn a_sale_made_again_after_its_keys_expired_starts_afresh_on_every_node() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let args = ["--redis", url.as_str(), "--redis-retention-secs", "1"];
    let nodes: Vec<Server> = (0..2).map(|_| Server::start(2, &args)).collect();
    let (mut a, mut b) = (nodes[0].client(), nodes[1].client());
    let logs = || format!("A:\n{}\nB:\n{}", nodes[0].log(), nodes[1].log());
    let now = now_ms();
    let mut old = json!({
        "name": "short",
        "stock": 10,
        "starts_at": now - 1_000,
        "ends_at": now + 4_000,
        "per_user_limit": 1,
        "payment_timeout_ms": 1000,
        "stock_buckets": 2,
    });
    a.create_sale("again", &old);
    for shopper in 0..6 {
        b.buy("again", &tok(&format!("old-{shopper}")), 1);
    }
    assert!(
        both_list(&mut a, &mut b, "again", 4),
        "the nodes never listed 4 left; {}",
        logs()
    );

    // Over for good a minute after its last payment deadline, then gone a retention later.
    let gone = poll(Duration::from_secs(150), || {
        let left: i64 = query_ok(redis.port, &["EXISTS", &sku_key("again", "sale")]);
        (left == 0).then_some(())
    });
    assert!(
        gone.is_some(),
        "the settled sale's keys never expired; {}",
        logs()
    );

    // The old connections idled out while the sale settled.
    let (mut a, mut b) = (nodes[0].client(), nodes[1].client());
    let now = now_ms();
    old["stock"] = json!(7);
    old["starts_at"] = json!(now - 1_000);
    old["ends_at"] = json!(now + 3_600_000);
    let made = a.put_sale("again", &old);
    assert_eq!(
        made.status,
        201,
        "the new sale was refused: {made}; {}",
        logs()
    );
    let listed_new = poll(WAIT, || {
        (listing(&mut b).get("again") == Some(&7)).then_some(())
    });
    assert!(
        listed_new.is_some(),
        "node B lists {:?} instead of the new sale's 7; {}",
        listing(&mut b).get("again"),
        logs()
    );
    // Node B may still hold the old definition for a sync tick (its listing then reads Redis).
    let mut last = None;
    let sold = poll(WAIT, || {
        let r = b.purchase("again", &tok("new-b"), Some(1), None);
        let ok = r.status == 201;
        last = Some(r);
        ok.then_some(())
    });
    assert!(
        sold.is_some(),
        "node B never sold the new sale: {last:?}; {}",
        logs()
    );
    let r = a.purchase("again", &tok("new-a"), Some(1), None);
    assert_eq!(
        r.status,
        201,
        "node A did not sell the new sale: {r}; {}",
        logs()
    );
    assert!(
        both_list(&mut a, &mut b, "again", 5),
        "the nodes never listed 5 left; {}",
        logs()
    );
    let marker: i64 = query_ok(redis.port, &["EXISTS", &sku_key("again", "regressed")]);
    assert_eq!(
        marker,
        0,
        "the new sale was taken for lost writes; {}",
        logs()
    );
}
