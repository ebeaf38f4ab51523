//! The abandon script's rule, run directly against Redis where the node cannot be made to
//! produce the case on demand: a late copy of an abandoned purchase, the order of abandons of
//! an order and its replays, and an abandon Redis keeps refusing.

use super::*;

#[test]
fn a_late_copy_of_an_abandoned_purchase_creates_nothing() {
    let rig = Rig::start(1);
    rig.node.client().create_sale("late", &sale_spec(10, 1));
    // The purchase is sent into a partition, its caller answered 503, and the bytes then lost
    // with the connections: it made no order, and its abandon finds none.
    rig.proxy.set_blackhole(true);
    let r = rig
        .node
        .client()
        .purchase("late", &tok("late-buyer"), Some(1), Some("Z"));
    assert_error(&r, 503, "unavailable");
    rig.proxy.cut();
    rig.proxy.set_blackhole(false);
    settle(&rig.node, |g| g.outcome("absent") >= 1);
    let tombstones: Vec<String> = rig
        .redis
        .query(&["ZRANGE", "seckill:{late}:abandoned", "0", "-1"])
        .expect("ZRANGE");
    assert_eq!(tombstones.len(), 1, "{tombstones:?}");
    // A copy of that purchase arrives now, as from a proxy that buffered it.
    let keys = SkuKeys::new("seckill", "late").0;
    let count = keys.len().to_string();
    let mut args: Vec<&str> = vec!["EVAL", scripts::PURCHASE, &count];
    args.extend(keys.iter().map(String::as_str));
    // No view of the SKU: the last five arguments are the node's, for regression checks.
    let head = head(&tombstones[0], "late", "late-buyer", "Z");
    args.extend([
        "1000",
        "1",
        &tombstones[0],
        "late-buyer",
        "1",
        "Z",
        &head,
        "",
        "",
        "",
        "",
        "",
    ]);
    let reply: Vec<common::redis::Value> = rig.redis.query(&args).expect("EVAL purchase");
    assert_eq!(outcome(reply), "unavailable");
    assert!(orders_in_redis(&rig.redis, "late").is_empty());
    assert_eq!(
        rig.redis.integer(&["GET", "seckill:{late}:remaining"]),
        Some(10)
    );
}

/// The start of an order's JSON as a node sends it to the purchase script (one unit, with key).
fn head(id: &str, sku: &str, user: &str, key: &str) -> String {
    format!(
        r#"{{"order_id":"{id}","sku":"{sku}","user_id":"{user}","quantity":1,"idem":"{user}\u0000{key}""#
    )
}

/// The outcome of the one purchase of a purchase script's reply (`{remaining, seq, created_at,
/// expires_at, price, row}`): `ok`, a refusal code, or `retried`/`replay` for an earlier order.
fn outcome(reply: Vec<common::redis::Value>) -> String {
    use common::redis::Value;
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) => text.clone(),
        other => format!("{other:?}"),
    };
    match reply.get(5) {
        Some(Value::Array(parts)) if !parts.is_empty() => text(&parts[0]),
        Some(row) => text(row),
        None => format!("no row in {reply:?}"),
    }
}

/// Runs `script` on `sku`'s keys with `args`, as a node would.
fn eval<T: common::redis::FromRedisValue>(
    redis: &RedisServer,
    script: &str,
    sku: &str,
    args: &[&str],
) -> T {
    let keys = SkuKeys::new("seckill", sku).0;
    let count = keys.len().to_string();
    let mut command: Vec<&str> = vec!["EVAL", script, &count];
    command.extend(keys.iter().map(String::as_str));
    command.extend(args);
    redis.query(&command).expect("EVAL")
}

#[test]
fn an_order_is_cancelled_only_once_every_attempt_answered_with_it_is_abandoned() {
    let redis = RedisServer::start(&[]);
    let node = Server::start(1, &["--redis", &redis.url()]);
    node.client().create_sale("rule", &sale_spec(10, 1));
    let purchase = |id: &str| -> String {
        outcome(eval(
            &redis,
            scripts::PURCHASE,
            "rule",
            // No view of the SKU: the last five arguments are the node's, for regression checks.
            &[
                "1000",
                "1",
                id,
                "u",
                "1",
                "K",
                &head(id, "rule", "u", "K"),
                "",
                "",
                "",
                "",
                "",
            ],
        ))
    };
    let abandon = |id: &str| -> Vec<String> {
        eval(
            &redis,
            scripts::ABANDON,
            "rule",
            &["1000", "1", id, "u", "K"],
        )
    };
    let x = "01M8Y67NTD07C7P92B2AGC0J8Q.rule";
    let y = "01M8Y67NTD07C7P92B2AGC0J8R.rule";
    let z = "01M8Y67NTD07C7P92B2AGC0J8S.rule";
    assert_eq!(purchase(x), "ok");
    // Attempt y of the same key is answered with x: its caller may hold a 201 for x.
    assert_eq!(purchase(y), "replay");
    // Attempt z never ran when it is abandoned, so it has no say over x, and cannot run later.
    assert_eq!(abandon(z), ["absent"]);
    assert_eq!(purchase(z), "unavailable");
    // x's own caller saw 503, but y's may have seen 201: x stays.
    assert_eq!(abandon(x), ["claimed"]);
    assert_eq!(redis.integer(&["GET", "seckill:{rule}:remaining"]), Some(9));
    // y's caller saw 503 too: now nobody holds a 201 for x.
    assert_eq!(abandon(y), ["cancelled"]);
    assert_eq!(
        redis.integer(&["GET", "seckill:{rule}:remaining"]),
        Some(10)
    );
    assert_eq!(redis.integer(&["HGET", "seckill:{rule}:held", "u"]), None);
    // Abandoning again changes nothing (the retrier may repeat a call whose reply it lost):
    // x is settled, and y's key no longer leads anywhere.
    assert_eq!(abandon(y), ["absent"]);
    assert_eq!(abandon(x), ["settled"]);
    assert_eq!(
        redis.integer(&["GET", "seckill:{rule}:remaining"]),
        Some(10)
    );
    // The key is free again: a new attempt buys afresh.
    let fresh = "01M8Y67NTD07C7P92B2AGC0J8T.rule";
    assert_eq!(purchase(fresh), "ok");
    assert_eq!(redis.integer(&["GET", "seckill:{rule}:remaining"]), Some(9));
    // The other order: the replay's attempt abandoned first, then the order's own.
    let (a, b) = (
        "01M8Y67NTD07C7P92B2AGC0J8V.rule",
        "01M8Y67NTD07C7P92B2AGC0J8W.rule",
    );
    let other = |id: &str| -> String {
        outcome(eval(
            &redis,
            scripts::PURCHASE,
            "rule",
            &[
                "1000",
                "1",
                id,
                "v",
                "1",
                "V",
                &head(id, "rule", "v", "V"),
                "",
                "",
                "",
                "",
                "",
            ],
        ))
    };
    let abandon_v = |id: &str| -> Vec<String> {
        eval(
            &redis,
            scripts::ABANDON,
            "rule",
            &["1000", "1", id, "v", "V"],
        )
    };
    assert_eq!(other(a), "ok");
    assert_eq!(other(b), "replay");
    assert_eq!(abandon_v(b), ["claimed"]);
    assert_eq!(abandon_v(a), ["cancelled"]);
    assert_eq!(redis.integer(&["GET", "seckill:{rule}:remaining"]), Some(9));
}

#[test]
fn a_ghost_whose_abandon_redis_keeps_refusing_is_given_up_and_counted() {
    let rig = Rig::start(1);
    rig.node.client().create_sale("broken", &sale_spec(10, 1));
    // A key of the wrong type: every script over this SKU fails, the abandon included.
    rig.redis
        .query::<()>(&["SET", "seckill:{broken}:abandoned", "not a zset"])
        .expect("SET");
    let r = rig
        .node
        .client()
        .purchase("broken", &tok("b"), Some(1), None);
    assert_error(&r, 503, "unavailable");
    let figures = settle(&rig.node, |g| g.outcome("rejected") >= 1);
    assert_eq!(figures.outcome("rejected"), 1, "{figures:?}");
    assert!(
        figures.retries >= 4,
        "refusals are retried first: {figures:?}"
    );
    assert!(rig.node.log().contains("abandon script refused"));
}
