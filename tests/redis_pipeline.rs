//! Pipelined purchase calls (`--redis-pipeline`): several script calls of one SKU in flight at
//! once must still sell exactly the stock, never a unit more, because each call runs atomically
//! in Redis and decides on the stock Redis holds then, not on the node's view of it. The test
//! also shows, from `/metrics`, that calls really overlapped: without that it would prove
//! nothing about pipelining.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::redis::RedisServer;
use common::*;

const STOCK: u64 = 300;
const SHOPPERS: usize = 24;
const TRIES_PER_SHOPPER: usize = 25;

#[test]
fn pipelined_calls_sell_exactly_the_stock() {
    let redis = RedisServer::start(&[]);
    // Small batches keep many calls queued, so the pipeline fills; a generous budget keeps a
    // slow machine from turning purchases into 503s (whose orders are abandoned), so every
    // purchase is a 201 or a refusal.
    let node = Server::start(
        2,
        &[
            "--redis",
            &redis.url(),
            "--redis-pipeline",
            "4",
            "--redis-batch",
            "2",
            "--redis-budget-ms",
            "10000",
        ],
    );
    let sku = "pipelined";
    node.open_sale(sku, STOCK, 1);

    let made = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..SHOPPERS)
        .map(|thread| {
            let mut client = node.client();
            let (made, refused) = (made.clone(), refused.clone());
            std::thread::spawn(move || {
                for attempt in 0..TRIES_PER_SHOPPER {
                    let user = format!("u{thread}-{attempt}");
                    let answer = client.purchase(sku, &tok(&user), Some(1), None);
                    match answer.status {
                        201 => {
                            let id = answer.json()["order_id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned();
                            made.lock().expect("made").push(id);
                        }
                        _ => refused
                            .lock()
                            .expect("refused")
                            .push((answer.status, answer.error_code())),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a shopper thread panicked");
    }
    let made = made.lock().expect("made").clone();
    let refused = refused.lock().expect("refused").clone();

    let distinct: HashSet<&String> = made.iter().collect();
    assert_eq!(distinct.len(), made.len(), "an order id was given twice");
    assert_eq!(
        made.len() as u64,
        STOCK,
        "201s must be exactly the stock ({} attempts); refusals: {:?}",
        SHOPPERS * TRIES_PER_SHOPPER,
        refused.iter().take(20).collect::<Vec<_>>()
    );
    assert!(
        refused
            .iter()
            .all(|(status, code)| *status == 409 && code.as_deref() == Some("sold_out")),
        "every other purchase is refused sold out: {:?}",
        refused.iter().take(20).collect::<Vec<_>>()
    );
    let key = |name: &str| format!("seckill:{{{sku}}}:{name}");
    let remaining = redis.integer(&["GET", &key("remaining")]);
    assert_eq!(remaining, Some(0), "Redis' stock after the sale");
    let stored = redis.orders(sku).len();
    assert_eq!(stored, STOCK as usize, "orders stored in Redis");
    assert_eq!(node.client().remaining(sku), 0);

    // The calls overlapped: more than one of the SKU's script calls was in flight at once.
    let metrics = node.client().get("/metrics");
    assert_status(&metrics, 200);
    let text = metrics.text();
    let parsed = common::prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let most = parsed
        .value("seckill_redis_purchase_inflight_max", &[])
        .unwrap_or(0.0);
    assert!(
        (2.0..=4.0).contains(&most),
        "calls in flight at once must have been 2 to 4 (--redis-pipeline 4), got {most}"
    );
}

/// Orders made by one call share one member of the deadline index, listing the pages they are
/// stored in: when it comes due, every order of those pages that is still pending and due
/// expires, once, and its unit returns; a paid one stays paid.
#[test]
fn orders_of_one_call_expire_together_and_each_once() {
    const UNITS: u64 = 60;
    let redis = RedisServer::start(&[]);
    let node = Server::start(1, &["--redis", &redis.url(), "--redis-budget-ms", "10000"]);
    let sku = "batchexpiry";
    let mut spec = sale_spec(UNITS, 1);
    spec["payment_timeout_ms"] = serde_json::json!(1500);
    node.client().create_sale(sku, &spec);
    let made = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..SHOPPERS)
        .map(|thread| {
            let mut client = node.client();
            let made = made.clone();
            std::thread::spawn(move || {
                for attempt in 0..4 {
                    let user = format!("e{thread}-{attempt}");
                    let answer = client.purchase(sku, &tok(&user), Some(1), None);
                    if answer.status == 201 {
                        let id = answer.json()["order_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        made.lock().expect("made").push(id);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a shopper thread panicked");
    }
    let made = made.lock().expect("made").clone();
    assert_eq!(made.len() as u64, UNITS, "the whole stock sells");
    let key = |name: &str| format!("seckill:{{{sku}}}:{name}");
    let members: Vec<String> = redis
        .query(&["ZRANGE", &key("pending"), "0", "-1"])
        .expect("ZRANGE pending");
    assert!(
        members.len() < made.len(),
        "some call made several orders (else this test proves nothing): {members:?}"
    );
    // One order of a shared member is paid before the deadline: it must stay paid.
    let stored = redis.orders(sku);
    let of_member = |member: &String| -> Vec<String> {
        let pages: Vec<&str> = member.split_whitespace().collect();
        stored
            .keys()
            .filter(|id| pages.contains(&&id[..10]))
            .cloned()
            .collect()
    };
    let paid = members
        .iter()
        .map(of_member)
        .find(|orders| orders.len() > 1)
        .and_then(|orders| orders.into_iter().next())
        .expect("a member with several orders");
    let payment = node.client().pay(&paid);
    assert_eq!(payment.status, 200, "{payment}");

    let back = poll(std::time::Duration::from_secs(30), || {
        let remaining = redis.integer(&["GET", &key("remaining")])?;
        (remaining == UNITS as i64 - 1).then_some(())
    });
    assert!(
        back.is_some(),
        "every unpaid order expired and gave its unit back: remaining {:?}",
        redis.integer(&["GET", &key("remaining")])
    );
    // Let a sweep that expires an order twice (or a paid one) act for a few ticks.
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(
        redis.integer(&["GET", &key("remaining")]),
        Some(UNITS as i64 - 1),
        "stock returned once per expired order"
    );
    let orders = redis.orders(sku);
    for id in &made {
        let order = common::redis::stored_order(&orders[id]);
        let want = if *id == paid { "paid" } else { "expired" };
        assert_eq!(order["status"], want, "{id}: {order}");
    }
    assert_eq!(redis.integer(&["ZCARD", &key("pending")]), Some(0));
}
