//! A purchase script that fails halfway (an operator planted a key of the wrong type) must leave
//! a SKU consistent: no order without its unit taken from stock, no unit gone without an order,
//! no holding without its orders, and the shopper gets an error, never a 201 for an order that is
//! not stored. Each key a purchase writes is replaced, one at a time, by a key of another type.
//! Also: the purchases of one script call see each other (the script decides them all before
//! writing any).

mod common;

use std::collections::{HashMap, HashSet};

use common::redis::{sku_key as key, RedisServer};
use common::*;

const STOCK: u64 = 10;

/// The per-SKU keys a purchase writes, and whether each holds a string (planted as a hash) or
/// something else (planted as a string).
const WRITTEN: [(&str, bool); 8] = [
    ("remaining", true),
    ("seq", true),
    ("held", false),
    ("orders", false),
    ("idem", false),
    ("pending", false),
    ("ids", false),
    ("events", false),
];

/// Asserts stock, orders, holdings and the pending index of `sku` agree; `context` names the
/// step for the message.
#[track_caller]
fn assert_consistent(redis: &RedisServer, sku: &str, context: &str) {
    let remaining = redis
        .integer(&["GET", &key(sku, "remaining")])
        .unwrap_or_else(|| panic!("{context}: no remaining"));
    let orders = common::redis::stored_orders(
        redis
            .query::<Vec<(String, String)>>(&["HGETALL", &key(sku, "orders")])
            .unwrap_or_else(|e| panic!("{context}: HGETALL orders: {e}")),
    );
    let held: HashMap<String, i64> = common::redis::holdings(
        redis
            .query::<HashMap<String, String>>(&["HGETALL", &key(sku, "held")])
            .unwrap_or_else(|e| panic!("{context}: HGETALL held: {e}")),
    );
    let pending: Vec<String> = redis
        .query(&["ZRANGE", &key(sku, "pending"), "0", "-1"])
        .unwrap_or_else(|e| panic!("{context}: ZRANGE pending: {e}"));
    let mut live = 0;
    let mut by_user: HashMap<String, i64> = HashMap::new();
    let mut pending_orders = HashSet::new();
    for (id, raw) in &orders {
        let order = common::redis::stored_order(raw);
        let status = order["status"].as_str().unwrap_or_default();
        let quantity = order["quantity"].as_i64().unwrap_or_default();
        if status == "pending" || status == "paid" {
            live += quantity;
            let user = order["user_id"].as_str().unwrap_or_default().to_owned();
            *by_user.entry(user).or_default() += quantity;
        }
        if status == "pending" {
            pending_orders.insert(id.clone());
        }
    }
    assert_eq!(
        remaining + live,
        STOCK as i64,
        "{context}: remaining {remaining} + units in live orders {live} != stock {STOCK}; \
         orders {orders:?}"
    );
    assert_eq!(
        held, by_user,
        "{context}: held counts disagree with the live orders"
    );
    // A member names the pages one purchase call wrote its orders to; it stays until their
    // deadline, when the sweep passes over those no longer pending.
    let indexed_pages: HashSet<&str> = pending
        .iter()
        .flat_map(|member| member.split_whitespace())
        .collect();
    let indexed: HashSet<String> = orders
        .keys()
        .filter(|id| indexed_pages.contains(&id[..10]))
        .cloned()
        .collect();
    assert!(
        pending_orders.is_subset(&indexed),
        "{context}: a pending order is missing from the pending index: {pending_orders:?} vs {indexed:?}"
    );
}

#[test]
fn a_key_of_the_wrong_type_never_splits_an_order_from_its_unit() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let node = Server::start(1, &["--redis", &url]);
    for (name, is_string) in WRITTEN {
        let sku = format!("wt{name}");
        node.open_sale(&sku, STOCK, 5);
        let mut client = node.client();
        // State before the fault: one order with an idempotency key, so every key exists.
        let first = client.purchase(&sku, &tok("alice"), Some(1), Some("k-0"));
        assert_eq!(first.status, 201, "{name}: the first purchase: {first}");
        assert_consistent(&redis, &sku, &format!("{name}: before the fault"));

        let planted = key(&sku, name);
        let saved = key(&sku, &format!("{name}:saved"));
        redis
            .query::<()>(&["RENAME", &planted, &saved])
            .unwrap_or_else(|e| panic!("{name}: RENAME: {e}"));
        if is_string {
            redis.query::<()>(&["HSET", &planted, "x", "1"])
        } else {
            redis.query::<()>(&["SET", &planted, "planted"])
        }
        .unwrap_or_else(|e| panic!("{name}: plant: {e}"));

        let faulted = client.purchase(&sku, &tok("bob"), Some(2), Some("k-1"));
        assert!(
            faulted.status == 500 || faulted.status == 503,
            "{name}: a purchase against a key of the wrong type must fail, got: {faulted}"
        );
        assert!(
            faulted.error_code().is_some(),
            "{name}: the failure must be a JSON error: {faulted}"
        );

        redis
            .query::<()>(&["RENAME", &saved, &planted])
            .unwrap_or_else(|e| panic!("{name}: restore: {e}"));
        assert_consistent(&redis, &sku, &format!("{name}: after the fault"));

        // Selling goes on, and the failed attempt's key buys afresh or replays a stored order.
        let after = client.purchase(&sku, &tok("bob"), Some(2), Some("k-1"));
        assert_eq!(
            after.status, 201,
            "{name}: a purchase after the fault: {after}"
        );
        let id = after.json()["order_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let stored = redis.order(&sku, &id);
        assert!(stored.is_some(), "{name}: a 201 for order {id} not stored");
        assert_consistent(&redis, &sku, &format!("{name}: after selling again"));
    }
}

/// Purchases decided in one script call see each other as if run one by one: a second attempt
/// with the same idempotency key replays (and claims) the order the first just made, and the
/// per-user limit counts the units the batch already gave the user.
#[test]
fn purchases_of_one_batch_see_each_other() {
    let redis = RedisServer::start(&[]);
    let node = Server::start(1, &["--redis", &redis.url()]);
    node.open_sale("onebatch", STOCK, 1);
    let keys = common::redis::script_keys("onebatch");
    let (a, b, c) = (
        "01M8Y67NTD07C7P92B2AGC0J8Q.onebatch",
        "01M8Y67NTD07C7P92B2AGC0J8R.onebatch",
        "01M8Y67NTD07C7P92B2AGC0J8S.onebatch",
    );
    let count = keys.len().to_string();
    let mut command: Vec<&str> = vec!["EVAL", seckill::store::redis::scripts::PURCHASE, &count];
    command.extend(keys.iter().map(String::as_str));
    command.extend([
        "1000", "3", a, "u", "1", "K", b, "u", "1", "K", c, "u", "1", "", "", "", "", "", "",
    ]);
    // `{remaining, seq, created_at, expires_at, price, row*}`: `ok`, `{replay, order}`, a code.
    let reply: Vec<common::redis::Value> = redis.query(&command).expect("EVAL purchase");
    let text = |value: &common::redis::Value| -> String {
        match value {
            common::redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            common::redis::Value::SimpleString(text) => text.clone(),
            common::redis::Value::Array(parts) => format!("[{}]", text_of(&parts[0])),
            other => format!("{other:?}"),
        }
    };
    fn text_of(value: &common::redis::Value) -> String {
        match value {
            common::redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => format!("{other:?}"),
        }
    }
    assert_eq!(reply.len(), 8, "{reply:?}");
    assert_eq!(
        reply[0],
        common::redis::Value::Int(STOCK as i64),
        "{reply:?}"
    );
    let outcomes: Vec<String> = reply[5..].iter().map(text).collect();
    assert_eq!(outcomes, ["ok", "[replay]", "limit_exceeded"], "{reply:?}");
    let stored = redis
        .order("onebatch", a)
        .expect("the order made by the batch");
    let order: serde_json::Value = serde_json::from_str(&stored).expect("order JSON");
    assert_eq!(order["claims"], serde_json::json!([b]), "{order}");
    assert_eq!(order["idem"], "u\u{0}K", "{order}");
    assert_consistent(&redis, "onebatch", "one batch");
    let entry: String = redis
        .query(&["HGET", &key("onebatch", "held"), "u"])
        .expect("HGET held");
    assert_eq!(
        entry,
        format!("1 {}", &a[..26]),
        "one unit held, one order listed by its ULID"
    );
    // The node reads the order back as the API shows it.
    let mut client = node.client();
    let shown = client.authed("GET", &format!("/v1/orders/{a}"), &tok("u"), None);
    assert_eq!(shown.status, 200, "{shown}");
    assert_eq!(shown.json()["status"], "pending", "{shown}");
}
