//! Cluster mode, checked against Redis itself: expiry survives the node that sold, a late payment
//! and the expiry never both win, and a Redis Cluster of three masters never oversells.
//!
//! Real `seckill` processes, real HTTP, real `redis-server`s. The only time bounds are generous
//! hang detectors; every assertion is on exact counts read back from Redis with the harness's
//! client (the `redis` crate), which follows Redis Cluster redirections.

mod common;

use common::redis::RedisServer;
use common::redis::{query_ok, sku_key, stored_order};
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Bound for anything that should happen within a few sweep ticks (100 ms each): only a "gave
/// up" limit, generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(60);
/// The payment timeout of the orders node A sells before it dies: long enough that the
/// purchases are all made, and checked pending, before any deadline even on a loaded machine.
const SURVIVOR_TIMEOUT_MS: u64 = 4000;

/// What Redis holds for one SKU.
struct Ledger {
    remaining: i64,
    /// user → units held (pending + paid).
    held: BTreeMap<String, i64>,
    /// Orders stored as pending.
    pending: i64,
    /// Members of the `pending` zset: each names the pages one purchase call wrote its orders to.
    pending_members: i64,
    /// order id → stored order JSON.
    orders: BTreeMap<String, Value>,
    events: Vec<StreamEvent>,
}

#[derive(Debug, Clone)]
struct StreamEvent {
    /// The entry's ID, `<ms>-<seq>`: Redis' clock when it was added (the scripts XADD with `*`).
    id: String,
    event: String,
    order_id: String,
    user_id: String,
    quantity: i64,
    status: String,
}

#[track_caller]
fn ledger(port: u16, sku: &str) -> Ledger {
    let remaining =
        query_ok::<Option<i64>>(port, &["GET", &sku_key(sku, "remaining")]).unwrap_or(0);
    let held: BTreeMap<String, i64> = common::redis::holdings(
        query_ok::<BTreeMap<String, String>>(port, &["HGETALL", &sku_key(sku, "held")]),
    );
    let pending_members = query_ok::<i64>(port, &["ZCARD", &sku_key(sku, "pending")]);
    let orders: BTreeMap<String, Value> =
        common::redis::stored_orders(query_ok::<Vec<(String, String)>>(
            port,
            &["HGETALL", &sku_key(sku, "orders")],
        ))
        .into_iter()
        .map(|(id, raw)| {
            let order = stored_order(&raw);
            (id, order)
        })
        .collect();
    let pending = orders
        .values()
        .filter(|order| order["status"] == "pending")
        .count() as i64;
    // XRANGE: [[entry id, [field, value, ...]], ...]
    let entries: Vec<(String, HashMap<String, String>)> =
        query_ok(port, &["XRANGE", &sku_key(sku, "events"), "-", "+"]);
    // Sale entries (the order feed's `sale.upserted`) carry no order.
    let mut events = Vec::new();
    for (entry, fields) in &entries {
        let field = |name: &str| -> String {
            fields
                .get(name)
                .cloned()
                .unwrap_or_else(|| panic!("stream entry {entry} without {name:?}: {fields:?}"))
        };
        match fields.get("event").map(String::as_str) {
            Some("sale") => continue,
            // A purchase call's `created` entry names its orders; each is read as stored.
            Some("created") => {
                for id in common::redis::created_ids(&field("pages")) {
                    let id = id.as_str();
                    let order = orders
                        .get(id)
                        .unwrap_or_else(|| panic!("entry {entry} names unknown order {id}"));
                    events.push(StreamEvent {
                        id: entry.clone(),
                        event: "created".into(),
                        order_id: id.to_owned(),
                        user_id: order["user_id"].as_str().unwrap_or_default().to_owned(),
                        quantity: order["quantity"].as_i64().unwrap_or_default(),
                        status: "pending".into(),
                    });
                }
                continue;
            }
            _ => {}
        }
        // Later changes carry the order and its fields.
        let order: Value = serde_json::from_str(&field("order"))
            .unwrap_or_else(|e| panic!("order of {entry} is not JSON ({e}): {fields:?}"));
        let of_order = |name: &str| -> String {
            fields
                .get(name)
                .cloned()
                .unwrap_or_else(|| match &order[name] {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
        };
        events.push(StreamEvent {
            id: entry.clone(),
            event: field("event"),
            order_id: field("order_id"),
            user_id: of_order("user_id"),
            quantity: of_order("quantity")
                .parse()
                .unwrap_or_else(|e| panic!("quantity of {entry} {fields:?}: {e}")),
            status: of_order("status"),
        });
    }
    Ledger {
        remaining,
        held,
        pending,
        pending_members,
        orders,
        events,
    }
}

/// The milliseconds part of a stream entry ID (`<ms>-<seq>`).
#[track_caller]
fn entry_ms(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("stream entry ID {id:?} is not <ms>-<seq>"))
}

/// order id → the `event` field of each of its stream entries, in stream order.
fn events_by_order(events: &[StreamEvent]) -> BTreeMap<String, Vec<String>> {
    let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        by_order
            .entry(e.order_id.clone())
            .or_default()
            .push(e.event.clone());
    }
    by_order
}

fn sale_with_timeout(stock: u64, per_user_limit: u64, payment_timeout_ms: u64) -> Value {
    let mut spec = sale_spec(stock, per_user_limit);
    spec["payment_timeout_ms"] = json!(payment_timeout_ms);
    spec
}

// ---------------------------------------------------------------------------
// 1. Expiry outlives the node that sold
// ---------------------------------------------------------------------------

/// Node A sells N orders and dies before their deadline; node B, which never saw them, must
/// expire each exactly once from Redis' own state.
///
/// What each check catches:
/// - `remaining` via B reaching stock: nobody sweeps for a dead node (expiry scheduled only in
///   the selling node's memory) or a sweep that does not return stock.
/// - exactly N `expired` entries, one per order and none for anything else: an order expired
///   twice (by two sweepers, or by a sweep that does not take it off `pending` and re-expires
///   it on every tick; we wait several more ticks before looking) or not at all.
/// - `remaining` key == stock (not more): stock returned twice.
/// - `held` empty: the per-user holding not given back, so the buyers could never buy again.
/// - `pending` empty: a due order left behind in the deadline index.
#[test]
fn expiry_survives_the_death_of_the_node_that_sold() {
    const STOCK: u64 = 20;
    const N: usize = 12;
    let sku = "phoenix";
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let mut a = Server::start(2, &["--redis", &url]);
    let b = Server::start(1, &["--redis", &url]);

    let mut ca = a.client();
    ca.create_sale(sku, &sale_with_timeout(STOCK, 1, SURVIVOR_TIMEOUT_MS));
    let mut bought = BTreeMap::new();
    for i in 0..N {
        let user = format!("buyer-{i}");
        let order = ca.buy(sku, &tok(&user), 1);
        assert_eq!(order["status"], json!("pending"), "new order: {order}");
        bought.insert(order_id(&order), user);
    }
    drop(ca);

    // The scenario needs A to die while all N are still pending.
    let before = ledger(redis.port, sku);
    assert_eq!(
        (before.pending, before.remaining),
        (N as i64, (STOCK as usize - N) as i64),
        "precondition: all {N} orders pending in redis just before A is killed \
         (is the machine so slow that {SURVIVOR_TIMEOUT_MS} ms passed during {N} purchases?)"
    );
    a.kill9();
    // A is reaped: anything it added to the stream has an entry ID at or before this.
    let killed_at = now_ms();

    let mut cb = b.client();
    let mut last = None;
    let back = poll(WAIT, || {
        let sale = cb.get_sale(sku);
        // At least: a sweep that returns stock twice must fail the exact checks below, not
        // this wait.
        let done = sale["remaining"].as_u64().is_some_and(|r| r >= STOCK);
        last = Some(sale);
        done.then_some(())
    });
    assert!(
        back.is_some(),
        "stock did not come back through the surviving node within {WAIT:?}; last seen via B: \
         {last:?}; node B log:\n{}",
        b.log()
    );
    // Give a sweeper that expires again (or returns stock again) several ticks to do it.
    std::thread::sleep(Duration::from_millis(600));

    let after = ledger(redis.port, sku);
    let by_order = events_by_order(&after.events);
    let expired: Vec<&StreamEvent> = after
        .events
        .iter()
        .filter(|e| e.event == "expired")
        .collect();
    assert_eq!(
        expired.len(),
        N,
        "expected exactly {N} `expired` events in {}, got {}; events by order: {by_order:?}",
        sku_key(sku, "events"),
        expired.len(),
    );
    // A deadline may pass between the precondition read and the kill, and A could expire an
    // order in that gap: then B proved nothing about it. Every expiry must be newer than A's
    // death (stream IDs come from Redis' clock, the same machine's clock as `killed_at`).
    let by_a: Vec<&StreamEvent> = expired
        .iter()
        .copied()
        .filter(|e| entry_ms(&e.id) <= killed_at)
        .collect();
    assert!(
        by_a.is_empty(),
        "expired at or before A was killed (ms {killed_at}), so not by the surviving node: {by_a:?}"
    );
    let expected_ids: BTreeSet<&String> = bought.keys().collect();
    let seen_ids: BTreeSet<&String> = by_order.keys().collect();
    assert_eq!(seen_ids, expected_ids, "orders named in the event stream");
    for (id, user) in &bought {
        assert_eq!(
            by_order[id],
            vec!["created".to_owned(), "expired".to_owned()],
            "events of order {id}"
        );
        let e = expired.iter().find(|e| &e.order_id == id).expect("event");
        assert_eq!(
            (e.user_id.as_str(), e.quantity, e.status.as_str()),
            (user.as_str(), 1, "expired"),
            "expired event of {id}: {e:?}"
        );
        assert_eq!(
            after.orders[id]["status"],
            json!("expired"),
            "stored order {id}"
        );
        let r = cb.get_order(id, &tok(user));
        assert_status(&r, 200);
        assert_eq!(r.json()["status"], json!("expired"), "GET order via B: {r}");
    }
    assert_eq!(after.remaining, STOCK as i64, "remaining key in redis");
    assert!(
        after.held.is_empty(),
        "held hash not empty: {:?}",
        after.held
    );
    assert_eq!(after.pending, 0, "orders still pending");
    assert_eq!(after.pending_members, 0, "pending zset not empty");
    assert_eq!(cb.remaining(sku), STOCK as i64, "remaining via B");
}

// ---------------------------------------------------------------------------
// 2. A late payment against the expiry
// ---------------------------------------------------------------------------

/// Orders bought on A are paid on B at moments swept across their deadline: well before it (the
/// payment wins even on a loaded machine), around it (the real race between the payment script
/// and the sweepers of both nodes) and after it (the expiry wins). Each payment either wins
/// (200 paid) or loses to the expiry (409 order_expired), never both; and both outcomes must
/// have happened at least once, so a run where the race never happened fails.
///
/// What each check catches: a 200 for an order Redis holds as expired (the payment answered
/// but lost), a 409 for one it holds as paid, an order with both `paid` and `expired` events (or
/// none, or two of one), and `remaining` off by the stock of orders expired after being paid or
/// paid after being expired.
#[test]
fn a_late_payment_and_the_expiry_never_both_win() {
    const STOCK: u64 = 1000;
    const THREADS: usize = 4;
    const ROUNDS_PER_THREAD: usize = 8;
    const ROUNDS: usize = THREADS * ROUNDS_PER_THREAD;
    /// Long enough that a purchase answered late on a loaded box still leaves room before the
    /// earliest payment.
    const TIMEOUT_MS: i64 = 1000;
    /// The sweep: from 800 ms before the deadline to 200 ms after it.
    const EARLIEST: i64 = -800;
    const LATEST: i64 = 200;
    let sku = "late-pay";
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let a = Server::start(1, &["--redis", &url]);
    let b = Server::start(2, &["--redis", &url]);
    a.client()
        .create_sale(sku, &sale_with_timeout(STOCK, 1000, TIMEOUT_MS as u64));

    // order id → (user, whether its payment answered 200, sent - expires_at in ms)
    let outcomes: BTreeMap<String, (String, bool, i64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (a, b) = (&a, &b);
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..ROUNDS_PER_THREAD {
                        let k = i * THREADS + t;
                        let user = format!("payer-{k}");
                        let token = tok(&user);
                        // Fresh connections: none waits idle through the sleep below.
                        let order = a.client().buy(sku, &token, 1);
                        let id = order_id(&order);
                        let expires = order["expires_at"].as_i64().expect("expires_at");
                        let offset = EARLIEST + (LATEST - EARLIEST) * k as i64 / (ROUNDS as i64 - 1);
                        let left = expires + offset - now_ms();
                        if left > 0 {
                            std::thread::sleep(Duration::from_millis(left as u64));
                        }
                        let mut cb = b.client();
                        let sent = now_ms();
                        let r = cb.pay(&id);
                        let got = now_ms();
                        // Same machine, same clock (the scripts read Redis' TIME): the deadline
                        // decides.
                        let paid = match r.status {
                            200 => {
                                assert_eq!(r.json()["status"], json!("paid"), "pay {id}: {r}");
                                assert!(
                                    sent < expires,
                                    "pay {id} sent at {sent}, after expires_at {expires}, won: {r}"
                                );
                                true
                            }
                            _ => {
                                assert_error(&r, 409, "order_expired");
                                assert!(
                                    got >= expires,
                                    "pay {id} at {sent}..{got} lost before expires_at {expires}: {r}"
                                );
                                false
                            }
                        };
                        mine.push((id, (user, paid, sent - expires)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("payer thread panicked"))
            .collect()
    });
    let paid_count = outcomes.values().filter(|(_, paid, _)| *paid).count();
    let near: Vec<(i64, bool)> = outcomes
        .values()
        .filter(|(_, _, offset)| offset.abs() <= 50)
        .map(|(_, paid, offset)| (*offset, *paid))
        .collect();
    eprintln!(
        "late payments: {paid_count} paid, {} expired; sent within 50 ms of the deadline \
         (offset ms, paid): {near:?}",
        ROUNDS - paid_count
    );
    let summary: Vec<(i64, bool)> = outcomes.values().map(|(_, paid, o)| (*o, *paid)).collect();
    assert!(
        paid_count > 0 && paid_count < ROUNDS,
        "the race never happened: {paid_count} of {ROUNDS} payments won, swept from {EARLIEST} \
         to {LATEST} ms around the deadline; (sent - expires_at ms, paid): {summary:?}"
    );

    let mut last = None;
    let swept = poll(WAIT, || {
        let pending: i64 = query_ok(redis.port, &["ZCARD", &sku_key(sku, "pending")]);
        last = Some(pending);
        (pending == 0).then_some(())
    });
    assert!(
        swept.is_some(),
        "pending orders left in redis after {WAIT:?}: {last:?}"
    );
    // Let a sweeper that wrongly touches paid or already expired orders act for a few ticks.
    std::thread::sleep(Duration::from_millis(400));
    // Fresh connections: the payments can outlast the server's idle timeout on a loaded machine.
    let (mut ca, mut cb) = (a.client(), b.client());

    let ledger = ledger(redis.port, sku);
    let by_order = events_by_order(&ledger.events);
    let mut stock_out = 0;
    for (id, (user, paid, _)) in &outcomes {
        let want = if *paid { "paid" } else { "expired" };
        let stored = &ledger
            .orders
            .get(id)
            .unwrap_or_else(|| panic!("order {id} missing from {}", sku_key(sku, "orders")))
            ["status"];
        assert_eq!(
            *stored,
            json!(want),
            "order {id}: pay answered {}, redis holds it as {stored}",
            if *paid { "200" } else { "409 order_expired" }
        );
        let events = by_order.get(id).cloned().unwrap_or_default();
        let terminal: Vec<&String> = events
            .iter()
            .filter(|e| ["paid", "expired", "cancelled"].contains(&e.as_str()))
            .collect();
        assert_eq!(
            terminal,
            vec![want],
            "order {id} must have exactly one terminal event, `{want}`; its events: {events:?}"
        );
        assert_eq!(
            events.iter().filter(|e| *e == "created").count(),
            1,
            "order {id} events: {events:?}"
        );
        if *paid {
            stock_out += 1;
            assert_eq!(ledger.held.get(user), Some(&1), "held[{user}] after paying");
        } else {
            assert_eq!(ledger.held.get(user), None, "held[{user}] after expiry");
        }
        // Either node answers the settled state the same way.
        let again = ca.pay(id);
        if *paid {
            assert_status(&again, 200);
        } else {
            assert_error(&again, 409, "order_expired");
        }
    }
    assert_eq!(
        ledger.events.len(),
        2 * ROUNDS,
        "stream holds something besides one created and one terminal event per order: {:?}",
        ledger.events
    );
    assert_eq!(ledger.held.len(), paid_count, "held: {:?}", ledger.held);
    let want_remaining = STOCK as i64 - stock_out;
    assert_eq!(ledger.remaining, want_remaining, "remaining key in redis");
    assert_eq!(ca.remaining(sku), want_remaining, "remaining via A");
    assert_eq!(cb.remaining(sku), want_remaining, "remaining via B");
}

// ---------------------------------------------------------------------------
// 3. Redis Cluster
// ---------------------------------------------------------------------------

/// Two nodes on a three-master Redis Cluster, SKUs spread over the masters, 16 shoppers. Per
/// SKU exactly `stock` purchases succeed, Redis ends with nothing left and `stock` orders, and
/// no shopper holds more than the limit of 1 although each also retries on the other node.
///
/// What each check catches: more 201s than stock or `remaining` below 0 (oversell across nodes
/// or a script not atomic in its slot), fewer (stock lost, or a node refusing a sale it should
/// know), a second 201 for the same shopper via the other node (the per-user limit not shared),
/// orders in Redis the clients never got (a 201 lost, or an order made twice on retry).
#[test]
fn a_redis_cluster_of_three_masters_never_oversells() {
    const STOCK: usize = 40;
    const THREADS: usize = 16;
    let nodes = common::redis_cluster::three_masters();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();

    // One SKU per master (at least two masters must be used).
    let mut skus: Vec<(String, u16)> = Vec::new();
    for i in 0..200 {
        let sku = format!("spread-{i}");
        let slot: i64 = query_ok(ports[0], &["CLUSTER", "KEYSLOT", &sku_key(&sku, "sale")]);
        let owner = common::redis_cluster::slot_owner(ports[0], slot);
        if !skus.iter().any(|(_, o)| *o == owner) {
            skus.push((sku, owner));
        }
        if skus.len() == nodes.len() {
            break;
        }
    }
    let masters: BTreeSet<u16> = skus.iter().map(|(_, o)| *o).collect();
    assert!(masters.len() >= 2, "SKUs landed on one master: {skus:?}");
    eprintln!("SKU -> master port: {skus:?}");

    let url = common::redis_cluster::url(&nodes);
    let a = Server::start(1, &["--redis", &url]);
    let b = Server::start(2, &["--redis", &url]);
    let servers = [&a, &b];

    let starts_at = now_ms() + 1_500;
    for (sku, _) in &skus {
        let mut spec = sale_spec(STOCK as u64, 1);
        spec["starts_at"] = json!(starts_at);
        a.client().create_sale(sku, &spec);
    }
    // Both nodes learn the sales from Redis (polled every 100 ms): wait until every shard of
    // both admits purchases, so a shopper's first answer is never "unknown sale".
    for (sku, _) in &skus {
        common::edge::wait_until_open(&servers, sku, WAIT);
    }

    // Retries through the other node refused 403 limit_exceeded.
    let mut limited_on_retry = 0;
    // (sku, user, order id) of every 201, including any on a shopper's retry via the other node.
    let sold: Vec<(String, String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let sku = skus[t % skus.len()].0.clone();
                let (home, other) = (servers[t % 2], servers[(t + 1) % 2]);
                scope.spawn(move || {
                    let mut ch = home.client();
                    let mut co = other.client();
                    let mut sold = Vec::new();
                    let mut limited = 0usize;
                    for j in 0.. {
                        assert!(j < 1000, "{sku}: thread {t} never saw sold_out");
                        let user = format!("shopper-{t}-{j}");
                        let token = tok(&user);
                        let r = ch.purchase(&sku, &token, Some(1), None);
                        match (r.status, r.error_code().as_deref()) {
                            (201, _) => sold.push((sku.clone(), user.clone(), order_id(&r.json()))),
                            (409, Some("sold_out")) => break,
                            _ => panic!("{sku}: purchase for {user} via port {}: {r}", home.port),
                        }
                        // The same shopper again, through the other node: the limit is 1.
                        let r = co.purchase(&sku, &token, Some(1), None);
                        match (r.status, r.error_code().as_deref()) {
                            (201, _) => sold.push((sku.clone(), user.clone(), order_id(&r.json()))),
                            (403, Some("limit_exceeded")) => limited += 1,
                            (409, Some("sold_out")) => {}
                            _ => panic!(
                                "{sku}: second purchase for {user} via port {}: {r}",
                                other.port
                            ),
                        }
                    }
                    (sold, limited)
                })
            })
            .collect();
        let mut sold = Vec::new();
        for handle in handles {
            let (mine, limited) = handle.join().expect("shopper thread panicked");
            sold.extend(mine);
            limited_on_retry += limited;
        }
        sold
    });
    // The retries through the other node met the per-user limit held in Redis: the shared limit
    // was exercised, not only stock running out.
    assert!(
        limited_on_retry > 0,
        "no retry through the other node was refused 403 limit_exceeded ({} sold)",
        sold.len()
    );

    for (sku, owner) in &skus {
        let mine: Vec<&(String, String, String)> =
            sold.iter().filter(|(s, _, _)| s == sku).collect();
        let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, user, _) in &mine {
            *per_user.entry(user).or_default() += 1;
        }
        let greedy: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            greedy.is_empty(),
            "{sku}: shoppers with two 201s: {greedy:?}"
        );
        assert_eq!(mine.len(), STOCK, "{sku}: 201s answered");

        let ledger = ledger(*owner, sku);
        assert_eq!(
            ledger.remaining, 0,
            "{sku}: remaining key on master {owner}"
        );
        assert_eq!(ledger.orders.len(), STOCK, "{sku}: HLEN of the orders hash");
        let answered: BTreeSet<&str> = mine.iter().map(|(_, _, id)| id.as_str()).collect();
        let stored: BTreeSet<&str> = ledger.orders.keys().map(String::as_str).collect();
        assert_eq!(
            stored, answered,
            "{sku}: orders in redis vs orders answered 201"
        );
        let mut buyers: BTreeMap<&str, usize> = BTreeMap::new();
        for order in ledger.orders.values() {
            assert_eq!(order["quantity"], json!(1), "{sku}: {order}");
            *buyers
                .entry(order["user_id"].as_str().expect("user_id"))
                .or_default() += 1;
        }
        assert!(
            buyers.values().all(|n| *n == 1),
            "{sku}: a user with several orders in redis: {buyers:?}"
        );
        assert_eq!(ledger.held.len(), STOCK, "{sku}: held: {:?}", ledger.held);
        assert!(
            ledger.held.values().all(|units| *units == 1),
            "{sku}: a user holds more than 1: {:?}",
            ledger.held
        );
        for server in servers {
            let sale = server.client().get_sale(sku);
            assert_eq!(
                (sale["remaining"].clone(), sale["state"].clone()),
                (json!(0), json!("sold_out")),
                "{sku} via port {}: {sale}",
                server.port
            );
        }
    }
}
