//! `GET /v1/orders`: a shopper lists their own orders of every sale, newest first, with their
//! current status; `?limit=<n>` caps the list, anything else is `400 invalid_query`; no token is
//! `401`; the admin must name the user. Runs again in cluster mode as `my_orders_redis`.
pub(crate) mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Sales spread over both shards' partitions (and, in cluster mode, different keys).
const SKUS: [&str; 3] = ["mine-a", "mine-b", "mine-c"];

/// `GET /v1/orders{query}` as `token`, expecting 200; a `429` from the per-shard limit is
/// retried (it is the limit working, not the answer under test). Returns the orders.
#[track_caller]
pub fn list_orders(c: &mut Client, token: &str, query: &str) -> Vec<Value> {
    let path = format!("/v1/orders{query}");
    let started = Instant::now();
    loop {
        let r = c.authed("GET", &path, token, None);
        if r.status == 429 && started.elapsed() < Duration::from_secs(30) {
            assert_error(&r, 429, "too_many_order_lists");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_status(&r, 200);
        let body = r.json();
        assert!(
            body.get("incomplete").is_none(),
            "every sale was readable: {body}"
        );
        return body["orders"]
            .as_array()
            .unwrap_or_else(|| panic!("\"orders\" must be an array: {body}"))
            .clone();
    }
}

/// The `order_id`s of a list, in list order.
pub fn ids(orders: &[Value]) -> Vec<String> {
    orders.iter().map(order_id).collect()
}

#[test]
fn lists_exactly_the_callers_orders_newest_first_with_their_current_status() {
    let s = Server::start(2, &[]);
    for sku in SKUS {
        s.open_sale(sku, 100, 10);
    }
    for sku in SKUS {
        common::edge::wait_until_open(&[&s], sku, WAIT_BOUND);
    }
    // Connected after the waits, which on a loaded machine may outlast the idle timeout.
    let mut c = s.client();
    let (alice, bob) = (tok("alice"), tok("bob"));
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    // Three sales, one of them twice; bob buys in between. A pause between purchases gives each
    // its own millisecond, so creation order is the order expected.
    for (n, sku) in ["mine-a", "mine-b", "mine-c", "mine-a"].iter().enumerate() {
        mine.push(order_id(&c.buy(sku, &alice, 1)));
        std::thread::sleep(Duration::from_millis(3));
        if n % 2 == 0 {
            theirs.push(order_id(&c.buy(sku, &bob, 2)));
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    assert_status(&c.pay(&mine[0]), 200);
    assert_status(&c.cancel(&mine[1], &alice), 200);

    let listed = list_orders(&mut c, &alice, "");
    let newest_first: Vec<String> = mine.iter().rev().cloned().collect();
    assert_eq!(ids(&listed), newest_first, "alice's orders, newest first");
    for order in &listed {
        // Each entry is the order exactly as its own endpoint shows it now.
        let single = c.get_order(&order_id(order), &alice);
        assert_status(&single, 200);
        assert_eq!(order, &single.json());
        assert_eq!(order["user_id"], "alice");
    }
    let status = |id: &str| {
        listed
            .iter()
            .find(|order| order_id(order) == id)
            .map(|order| order["status"].clone())
    };
    assert_eq!(status(&mine[0]), Some("paid".into()));
    assert_eq!(status(&mine[1]), Some("cancelled".into()));
    assert_eq!(status(&mine[2]), Some("pending".into()));
    let skus: BTreeSet<&str> = listed.iter().filter_map(|o| o["sku"].as_str()).collect();
    assert_eq!(skus.len(), 3, "orders of all three sales: {skus:?}");

    let bobs = list_orders(&mut c, &bob, "");
    let want: Vec<String> = theirs.iter().rev().cloned().collect();
    assert_eq!(ids(&bobs), want, "bob sees his own and nothing else");

    assert_eq!(
        ids(&list_orders(&mut c, &alice, "?limit=2")),
        newest_first[..2]
    );
    assert_eq!(
        ids(&list_orders(&mut c, &alice, "?limit=1")),
        newest_first[..1]
    );
    assert_eq!(
        ids(&list_orders(&mut c, &alice, "?limit=100")),
        newest_first
    );
    assert!(list_orders(&mut c, &tok("carol"), "").is_empty());

    // The admin lists a named user's orders, for support.
    let for_support = list_orders(&mut c, ADMIN_TOKEN, "?user=alice&limit=3");
    assert_eq!(ids(&for_support), newest_first[..3]);

    // Every shard of the node answers the same.
    for shard in 0..s.shards {
        let mut on_shard = s.client_on_shard(shard);
        assert_eq!(ids(&list_orders(&mut on_shard, &alice, "")), newest_first);
    }
}

#[test]
fn bad_queries_and_callers_are_refused() {
    let s = Server::start(2, &[]);
    s.open_sale("refusals", 10, 5);
    let mut c = s.client();
    let alice = tok("alice");

    assert_error(&c.get("/v1/orders"), 401, "unauthorized");
    assert_error(
        &c.authed("GET", "/v1/orders", "not-a-token", None),
        401,
        "unauthorized",
    );
    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=",
        "limit",
        "limit=1&limit=2",
        "after=x",
        "user=a%20b",
    ] {
        let r = c.authed("GET", &format!("/v1/orders?{query}"), &alice, None);
        assert_error(&r, 400, "invalid_query");
    }
    let r = c.authed("GET", "/v1/orders?user=bob", &alice, None);
    assert_error(&r, 403, "forbidden");
    let r = c.admin("GET", "/v1/orders", None);
    assert_error(&r, 400, "user_required");

    for method in ["POST", "PUT", "DELETE"] {
        let r = c.authed(method, "/v1/orders", &alice, Some(""));
        assert_error(&r, 405, "method_not_allowed");
        assert_eq!(
            r.header("allow"),
            Some("GET, HEAD, OPTIONS"),
            "{method}: {r}"
        );
    }

    // HEAD is GET without the body.
    let order = order_id(&c.buy("refusals", &alice, 1));
    let get = c.authed("GET", "/v1/orders", &alice, None);
    assert_status(&get, 200);
    assert!(get.text().contains(&order), "{get}");
    let mut raw = s.raw_connect();
    let auth = format!("Bearer {alice}");
    let head = raw.build_request(
        "HEAD",
        "/v1/orders",
        &[("Authorization", &auth), ("Connection", "close")],
        None,
    );
    raw.send_raw(&head);
    let bytes = raw.wait_closed(IO_TIMEOUT).expect("the server closes");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_lowercase()
            .contains(&format!("content-length: {}", get.body.len())),
        "HEAD announces GET's length: {text}"
    );
    assert!(text.ends_with("\r\n\r\n"), "HEAD sent a body: {text}");
}

#[test]
fn listings_are_rate_limited_per_shard() {
    let s = Server::start(1, &[]);
    s.open_sale("limited", 10, 5);
    let alice = tok("alice");
    let mut c = s.raw_connect();
    let auth = format!("Bearer {alice}");
    let request = c.build_request("GET", "/v1/orders", &[("Authorization", &auth)], None);
    const BURST: usize = 60;
    c.send_raw(&request.repeat(BURST));
    let mut statuses = Vec::new();
    for n in 0..BURST {
        let r = c.expect_response(&format!("pipelined GET /v1/orders #{n}"));
        if r.status == 429 {
            assert_error(&r, 429, "too_many_order_lists");
            assert!(r.header("retry-after").is_some(), "{r}");
        } else {
            assert_status(&r, 200);
        }
        statuses.push(r.status);
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    println!("{BURST} pipelined listings: {refused} refused with 429");
    assert!(refused > 0, "a burst of {BURST} listings was never refused");
    assert!(refused < BURST, "some listings were served");
}

#[test]
fn each_sale_lists_at_most_the_users_32_newest_orders() {
    let s = Server::start(1, &[]);
    s.open_sale("loop", 1_000, 1);
    common::edge::wait_until_open(&[&s], "loop", WAIT_BOUND);
    let mut c = s.client();
    let hal = tok("hal");
    // Buy-then-cancel in a loop: every order is retained, but the index keeps the newest 32.
    let mut made = Vec::new();
    for n in 0..40 {
        if n == 8 {
            // The 32 kept are then newer than the 8 pushed out by their time alone. Within one
            // millisecond "newest" has no single meaning: the embedded index ranks by id, the
            // Redis one by arrival.
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        let id = order_id(&c.buy("loop", &hal, 1));
        assert_status(&c.cancel(&id, &hal), 200);
        made.push(id);
    }
    let listed = list_orders(&mut c, &hal, "?limit=100");
    let newest: Vec<String> = made.iter().rev().take(32).cloned().collect();
    assert_eq!(listed.len(), 32);
    let mut listed_ids = ids(&listed);
    let mut want = newest.clone();
    // Orders of one millisecond are listed by id; compare the sets, then the time order.
    listed_ids.sort();
    want.sort();
    assert_eq!(listed_ids, want, "the 32 newest orders");
    let times: Vec<i64> = listed
        .iter()
        .filter_map(|o| o["created_at"].as_i64())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    // The oldest are still there by id.
    assert_status(&c.get_order(&made[0], &hal), 200);
}
