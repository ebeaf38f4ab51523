//! The `GET /v1/orders` tests again, with every server in cluster mode on its own
//! `redis-server` (the harness switches on this binary's name); then what only cluster mode
//! has: several nodes on one Redis, a purchase whose caller got `503` while Redis made the
//! order anyway, and the per-user index being cleaned when Redis forgets old orders.

#[path = "my_orders.rs"]
mod my_orders;

use std::time::{Duration, Instant};

use my_orders::common::proxy::Proxy;
use my_orders::common::redis::RedisServer;
use my_orders::common::*;
use my_orders::{ids, list_orders};

/// Polls `node`'s list of `user`'s orders until `done` accepts it; panics after `bound`.
#[track_caller]
fn wait_for_list(
    node: &Server,
    user: &str,
    bound: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut c = node.client();
    let mut last = Vec::new();
    let found = poll(bound, || {
        last = list_orders(&mut c, &tok(user), "");
        done(&last).then_some(())
    });
    assert!(
        found.is_some(),
        "{user}'s list on node {} never matched within {bound:?}; last: {last:?}",
        node.port
    );
    last
}

#[test]
fn an_order_made_on_one_node_is_listed_on_another() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let a = Server::start(2, &["--redis", &url]);
    let b = Server::start(2, &["--redis", &url]);
    a.open_sale("shared-1", 10, 5);
    a.open_sale("shared-2", 10, 5);
    for sku in ["shared-1", "shared-2"] {
        edge::wait_until_open(&[&a, &b], sku, WAIT_BOUND);
    }
    let mut on_a = a.client();
    let first = order_id(&on_a.buy("shared-1", &tok("dora"), 1));
    std::thread::sleep(Duration::from_millis(3));
    let second = order_id(&on_a.buy("shared-2", &tok("dora"), 2));
    on_a.buy("shared-2", &tok("eve"), 1);

    let listed = wait_for_list(&b, "dora", WAIT_BOUND, |orders| orders.len() == 2);
    assert_eq!(ids(&listed), [second.clone(), first.clone()]);

    // A payment through B is what A lists next.
    let mut on_b = b.client();
    assert_status(&on_b.pay(&first), 200);
    let on_a_now = list_orders(&mut a.client(), &tok("dora"), "");
    assert_eq!(ids(&on_a_now), [second, first]);
    assert_eq!(on_a_now[1]["status"], "paid");
    assert_eq!(on_a_now[0]["status"], "pending");
}

#[test]
fn a_purchase_answered_503_is_listed_once_redis_has_it() {
    let redis = RedisServer::start(&[]);
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok())
        .expect("a redis port");
    let proxy = Proxy::start(port);
    let proxied = proxy.url();
    let direct = redis.url();
    // Node A reaches Redis through the proxy, node B directly.
    let a = Server::start(1, &["--redis", &proxied]);
    let b = Server::start(1, &["--redis", &direct]);
    b.open_sale("ghostly", 10, 5);
    edge::wait_until_open(&[&a, &b], "ghostly", WAIT_BOUND);
    // Redis learns the purchase script from a first purchase; otherwise the delayed call would
    // only earn a NOSCRIPT, whose reload died with the call that gave up.
    b.client().buy("ghostly", &tok("warm-up"), 1);

    // Every byte between A and Redis now waits far longer than A waits for a reply: A answers
    // 503 while its script is still on its way to Redis.
    proxy.set_delay(Duration::from_secs(30));
    let sent_before = proxy.bytes_up();
    let started = Instant::now();
    let r = a.client().purchase("ghostly", &tok("ghost"), Some(1), None);
    let answered_after = started.elapsed();
    assert_error(&r, 503, "unavailable");
    println!("node A answered 503 after {answered_after:?}");
    // Release what the proxy holds: the purchase script reaches Redis after its caller gave up.
    proxy.set_delay(Duration::ZERO);
    let released = Instant::now();
    let listed = wait_for_list(&b, "ghost", WAIT_BOUND, |orders| !orders.is_empty());
    println!(
        "the 503'd order was listed on node B {:?} after the proxy released it",
        released.elapsed()
    );
    assert!(
        proxy.bytes_up() > sent_before,
        "A's calls went through the proxy"
    );
    assert_eq!(
        listed.len(),
        1,
        "one order, however often A retried: {listed:?}"
    );
    let order = &listed[0];
    assert_eq!(order["user_id"], "ghost");
    assert_eq!(order["sku"], "ghostly");
    // The ghost-order cleanup may already have cancelled it; either way its buyer can see it.
    let status = order["status"].as_str().unwrap_or_default().to_owned();
    assert!(
        status == "pending" || status == "cancelled",
        "unexpected status {status}: {order}"
    );
    println!("the 503'd order is {status}");
    // Its own endpoint agrees.
    let single = b.client().get_order(&order_id(order), &tok("ghost"));
    assert_status(&single, 200);
}

#[test]
fn forgotten_orders_leave_the_redis_index() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let s = Server::start(1, &["--redis", &url, "--closed-orders-per-sale", "2"]);
    s.open_sale("forgetful", 100, 1);
    edge::wait_until_open(&[&s], "forgetful", WAIT_BOUND);
    let mut c = s.client();
    let fred = tok("fred");
    let mut made = Vec::new();
    for _ in 0..5 {
        // Orders made in the same millisecond have no defined order in a listing (created_at,
        // then the id's random part), and this one checks the order.
        std::thread::sleep(std::time::Duration::from_millis(3));
        let id = order_id(&c.buy("forgetful", &fred, 1));
        assert_status(&c.cancel(&id, &fred), 200);
        made.push(id);
    }
    // Orders made in the same millisecond have no defined order in a listing (created_at, then
    // the id's random part): `kept` must be newer than the last cancelled one.
    std::thread::sleep(std::time::Duration::from_millis(3));
    let kept = order_id(&c.buy("forgetful", &fred, 1));
    // Retention keeps the two newest cancelled orders; the index lists exactly what is kept.
    let listed = list_orders(&mut c, &fred, "");
    assert_eq!(
        ids(&listed),
        [kept.clone(), made[4].clone(), made[3].clone()]
    );
    let index: Option<String> = redis
        .query(&["HGET", "seckill:{forgetful}:held", "fred"])
        .expect("HGET held");
    let index = index.expect("fred has an entry");
    let indexed = my_orders::common::redis::held_list(&index);
    let ulid = |id: &String| id[..26].to_owned();
    assert_eq!(
        indexed,
        [ulid(&made[3]), ulid(&made[4]), ulid(&kept)],
        "oldest first in Redis, by ULID"
    );
}

#[test]
fn a_listing_that_can_read_no_sale_is_503() {
    let redis = RedisServer::start(&[]);
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok())
        .expect("a redis port");
    let proxy = Proxy::start(port);
    let s = Server::start(1, &["--redis", &proxy.url()]);
    s.open_sale("unreachable", 10, 5);
    edge::wait_until_open(&[&s], "unreachable", WAIT_BOUND);
    let order = order_id(&s.client().buy("unreachable", &tok("gus"), 1));
    assert_eq!(ids(&list_orders(&mut s.client(), &tok("gus"), "")), [order]);

    // A partition: the sale is known, but its store cannot be read.
    proxy.set_blackhole(true);
    let started = Instant::now();
    let r = s.client().authed("GET", "/v1/orders", &tok("gus"), None);
    println!(
        "listing during a partition answered {} after {:?}",
        r.status,
        started.elapsed()
    );
    assert_error(&r, 503, "unavailable");
}

/// A sale an older build sold from keeps working: its `held` entries are units alone and its
/// order lists are in `byuser`. The old list is still read and trimmed, a holding still comes
/// back on cancel, and a new order joins the shopper's one entry in `held`. An entry of the
/// build just before this one lists whole ids, where this one lists their ULIDs: it is read,
/// and written back in this build's form.
#[test]
fn an_older_builds_holdings_and_lists_carry_on() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let s = Server::start(1, &["--redis", &url, "--closed-orders-per-sale", "1"]);
    s.open_sale("legacy", 100, 2);
    edge::wait_until_open(&[&s], "legacy", WAIT_BOUND);
    let mut c = s.client();
    let ann = tok("ann");
    let old = order_id(&c.buy("legacy", &ann, 1));
    // What an older build would have written for that purchase.
    let held = "seckill:{legacy}:held";
    let byuser = "seckill:{legacy}:byuser";
    let _: i64 = redis.query(&["HSET", held, "ann", "1"]).expect("HSET held");
    let _: i64 = redis
        .query(&["HSET", byuser, "ann", &format!(" {old}")])
        .expect("HSET byuser");

    std::thread::sleep(Duration::from_millis(3));
    let new = order_id(&c.buy("legacy", &ann, 1));
    assert_eq!(
        ids(&list_orders(&mut c, &ann, "")),
        [new.clone(), old.clone()]
    );
    let ulid = |id: &String| id[..26].to_owned();
    let entry: String = redis.query(&["HGET", held, "ann"]).expect("HGET held");
    assert_eq!(
        entry,
        format!("2 {}", ulid(&new)),
        "units of both orders, the new one listed"
    );
    assert_error(
        &c.purchase("legacy", &ann, Some(1), None),
        403,
        "limit_exceeded",
    );

    // Cancelling the old order gives its unit back; retention (1 closed order kept) forgets it
    // once a second order closes, and takes it out of the old list.
    assert_status(&c.cancel(&old, &ann), 200);
    let entry: String = redis.query(&["HGET", held, "ann"]).expect("HGET held");
    assert_eq!(entry, format!("1 {}", ulid(&new)));
    assert_status(&c.cancel(&new, &ann), 200);
    let old_list: Option<String> = redis.query(&["HGET", byuser, "ann"]).expect("HGET byuser");
    assert_eq!(old_list, None, "the forgotten old order left the old list");
    assert_eq!(
        ids(&list_orders(&mut c, &ann, "")),
        std::slice::from_ref(&new)
    );
    let entry: String = redis.query(&["HGET", held, "ann"]).expect("HGET held");
    assert_eq!(
        entry,
        format!("0 {}", ulid(&new)),
        "nothing held, the kept order still listed"
    );
    c.buy("legacy", &ann, 2);

    // The build before this one: whole ids in the entry.
    let bea = tok("bea");
    let first = order_id(&c.buy("legacy", &bea, 1));
    let _: i64 = redis
        .query(&["HSET", held, "bea", &format!("1 {first}")])
        .expect("HSET held");
    assert_eq!(
        ids(&list_orders(&mut c, &bea, "")),
        std::slice::from_ref(&first)
    );
    std::thread::sleep(Duration::from_millis(3));
    let second = order_id(&c.buy("legacy", &bea, 1));
    assert_eq!(
        ids(&list_orders(&mut c, &bea, "")),
        [second.clone(), first.clone()]
    );
    let entry: String = redis.query(&["HGET", held, "bea"]).expect("HGET held");
    assert_eq!(
        entry,
        format!("2 {} {}", ulid(&first), ulid(&second)),
        "the entry written back with ULIDs"
    );
    assert_status(&c.cancel(&first, &bea), 200);
    let entry: String = redis.query(&["HGET", held, "bea"]).expect("HGET held");
    assert_eq!(entry, format!("1 {} {}", ulid(&first), ulid(&second)));
}
