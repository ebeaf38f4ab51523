//! Stock buckets (`"stock_buckets": K`, `src/store/redis/buckets.rs`): a sale's stock split over
//! K hash tags still sells exactly its stock, with the per-user limit exact; a node killed in
//! the middle of moving stock between buckets neither loses nor duplicates a unit.
//!
//! Real `seckill` processes, real HTTP, real `redis-server`s the test starts itself. The node is
//! killed mid-move by `SECKILL_TEST_KILL_AFTER_MOVE=take|give`, which makes it SIGKILL itself
//! right after that step's script answered (before the next script is sent). Time bounds are
//! only "gave up" limits.

mod common;

use std::time::Duration;

use common::process::{seckill_cmd, Spawned};
use common::redis::RedisServer;
use common::redis::{query_ok, sku_key};
use common::*;
use serde_json::json;

/// "Gave up" bound for what a node does at its next ticks.
const WAIT: Duration = Duration::from_secs(60);

/// `PREFIX:{part}:name`, the layout of `src/store/redis/keys.rs`: bucket 0 is `{sku}`, bucket
/// b is `{sku~b}`.
fn key(sku: &str, bucket: u64, name: &str) -> String {
    if bucket == 0 {
        sku_key(sku, name)
    } else {
        sku_key(&format!("{sku}~{bucket}"), name)
    }
}

/// What Redis holds of a split sale, summed over its buckets: units remaining, units held by
/// orders, orders, and move records not yet confirmed.
#[derive(Debug, PartialEq, Eq)]
struct Units {
    remaining: u64,
    held: u64,
    orders: u64,
    moves: u64,
}

fn units(port: u16, sku: &str, buckets: u64) -> Units {
    let mut units = Units {
        remaining: 0,
        held: 0,
        orders: 0,
        moves: 0,
    };
    for b in 0..buckets {
        let remaining: Option<u64> = query_ok(port, &["GET", &key(sku, b, "remaining")]);
        let held: Vec<u64> = query_ok::<Vec<String>>(port, &["HVALS", &key(sku, b, "held")])
            .iter()
            .map(|raw| common::redis::held_units(raw) as u64)
            .collect();
        let stored: Vec<(String, String)> = query_ok(port, &["HGETALL", &key(sku, b, "orders")]);
        let orders = common::redis::stored_orders(stored).len() as u64;
        let moves: u64 = query_ok(port, &["HLEN", &key(sku, b, "moves")]);
        units.remaining += remaining.unwrap_or(0);
        units.held += held.iter().sum::<u64>();
        units.orders += orders;
        units.moves += moves;
    }
    units
}

/// A node (`seckill serve`, one shard) on `url`; with `hook`, it kills itself after that step
/// of its first stock move.
fn node(url: &str, hook: Option<&str>, data: &ScratchDir) -> (Spawned, u16) {
    let port = pick_port();
    let mut cmd = seckill_cmd();
    if let Some(step) = hook {
        cmd.env("SECKILL_TEST_KILL_AFTER_MOVE", step);
    }
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--shards", "1", "--redis", url, "--data-dir"])
        .arg(data.path());
    let mut spawned = Spawned::spawn(&mut cmd);
    spawned.wait_ready(port);
    (spawned, port)
}

/// One purchase of one unit by `user` on a fresh connection: its status, or `None` when the
/// node did not answer (it died).
fn try_buy(port: u16, sku: &str, user: &str) -> Option<(u16, Option<String>)> {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    let mut client = Client::from_stream(stream, port);
    let auth = format!("Bearer {}", tok(user));
    let response = client
        .try_request(
            "POST",
            &format!("/v1/sales/{sku}/purchase"),
            &[("Authorization", &auth)],
            Some(r#"{"quantity":1}"#),
        )
        .ok()?;
    Some((response.status, response.error_code()))
}

/// A user's home bucket, as `src/store/redis/keys.rs` computes it (FNV-1a of the id, mod the
/// bucket count): written out again here, as the stable rule every node must agree on.
fn home_bucket(user: &str, buckets: u64) -> u64 {
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % buckets
}

fn split_sale(stock: u64, buckets: u64) -> serde_json::Value {
    let mut spec = sale_spec(stock, 1);
    spec["stock_buckets"] = json!(buckets);
    spec
}

/// The crash test, for a node killed right after `step` (`take` or `give`) of a move.
///
/// A sale of 12 units in 2 buckets (6 each); users of bucket 0 buy one unit each until it runs
/// dry, and the next one's purchase moves stock from bucket 1, where the node dies. A second node
/// then starts on the same Redis and must, by its sync alone, deliver the move: Redis ends with
/// no move record, and remaining + held == stock exactly (a lost move leaves units missing, a
/// move given twice leaves units extra). Then the rest sells: exactly the stock is sold in
/// all, and `sold_out` comes only once every bucket is empty.
///
/// Able to fail: with the re-drive removed (`RedisStore::redrive` returning at once), the `take`
/// case never loses its move record; with `GIVE`'s check of applied ids removed, the `give`
/// case counts the moved units twice.
fn crash_mid_move(step: &str) {
    const SKU: &str = "hot";
    const STOCK: u64 = 12;
    const BUCKETS: u64 = 2;
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let data = ScratchDir::new();
    let (mut first, port) = node(&url, Some(step), &data);
    let created = Client::connect(port).create_sale(SKU, &split_sale(STOCK, BUCKETS));
    assert_eq!(created["stock_buckets"], json!(BUCKETS), "{created}");
    assert_eq!(created["remaining"], json!(STOCK), "{created}");

    let mut sold = 0u64;
    let mut next_user = 0;
    let mut died = false;
    while next_user < 100 {
        let user = format!("u-{next_user}");
        next_user += 1;
        if home_bucket(&user, BUCKETS) != 0 {
            continue;
        }
        match try_buy(port, SKU, &user) {
            Some((201, _)) => sold += 1,
            Some(other) => first.fail(&format!("{user}: unexpected {other:?} with {sold} sold")),
            None => {
                died = true;
                break;
            }
        }
    }
    if !died {
        first.fail("no purchase ever needed a stock move: the node never died");
    }
    if first.try_wait_exit(WAIT).is_none() {
        first.fail("the node stopped answering but did not die");
    }
    assert!(
        first.stderr().contains("killing this node mid-move"),
        "the node died, but not by the hook:\n{}",
        first.report()
    );
    let at_kill = units(redis.port, SKU, BUCKETS);
    assert_eq!(
        at_kill.moves, 1,
        "one move recorded at the kill: {at_kill:?}"
    );
    eprintln!("{sold} sold when the node died after `{step}`; Redis: {at_kill:?}");

    let (mut second, port) = node(&url, None, &data);
    let delivered = poll(WAIT, || {
        let now = units(redis.port, SKU, BUCKETS);
        (now.moves == 0).then_some(now)
    });
    let Some(after) = delivered else {
        second.fail(&format!(
            "the move recorded before the kill was never delivered: {:?}",
            units(redis.port, SKU, BUCKETS)
        ))
    };
    assert_eq!(
        after.remaining + after.held,
        STOCK,
        "units lost or duplicated by the interrupted move: {after:?}"
    );
    assert_eq!(after.held, sold, "{after:?}");
    let mut client = Client::connect(port);
    wait_remaining(&mut client, SKU, (STOCK - sold) as i64);

    // The rest sells, every unit, with sold-out only at the end.
    let mut orders = Vec::new();
    loop {
        let user = format!("u-{next_user}");
        next_user += 1;
        assert!(next_user < 300, "the stock never sold out: {sold} sold");
        match try_buy(port, SKU, &user) {
            Some((201, _)) => {
                sold += 1;
                orders.push(user);
            }
            Some((409, Some(code))) if code == "sold_out" => {
                assert_eq!(
                    sold,
                    STOCK,
                    "sold out with units left: {:?}",
                    units(redis.port, SKU, BUCKETS)
                );
                break;
            }
            other => second.fail(&format!("{user}: unexpected {other:?} with {sold} sold")),
        }
    }
    let end = units(redis.port, SKU, BUCKETS);
    assert_eq!(
        end,
        Units {
            remaining: 0,
            held: STOCK,
            orders: STOCK,
            moves: 0
        }
    );
    wait_remaining(&mut client, SKU, 0);
}

#[test]
fn a_node_killed_after_take_loses_no_unit() {
    crash_mid_move("take");
}

#[test]
fn a_node_killed_after_give_duplicates_no_unit() {
    crash_mid_move("give");
}

/// Orders of a split sale are found from their id alone (pay by the payment side, cancel by the
/// buyer, read), each user stays within the limit across buckets, and `GET /v1/orders` finds a
/// user's orders in their home bucket.
#[test]
fn orders_of_every_bucket_are_found_by_id_and_the_limit_holds() {
    let redis = RedisServer::start(&[]);
    let data = ScratchDir::new();
    let (_node, port) = node(&redis.url(), None, &data);
    let mut client = Client::connect(port);
    let mut spec = split_sale(40, 4);
    spec["per_user_limit"] = json!(2);
    client.create_sale("multi", &spec);
    for n in 0..8 {
        let user = format!("m-{n}");
        let token = tok(&user);
        let a = order_id(&client.buy("multi", &token, 1));
        let b = order_id(&client.buy("multi", &token, 1));
        let over = client.purchase("multi", &token, Some(1), None);
        assert_error(&over, 403, "limit_exceeded");
        assert_status(&client.get_order(&a, &token), 200);
        assert_status(&client.pay(&a), 200);
        assert_status(&client.cancel(&b, &token), 200);
        // Listings are admitted a few per second per shard: retried on 429.
        let mine = poll(WAIT, || {
            let r = client.authed("GET", "/v1/orders", &token, None);
            if r.status == 429 {
                std::thread::sleep(Duration::from_millis(200));
                return None;
            }
            Some(r)
        })
        .expect("the order listing was refused throughout");
        assert_status(&mine, 200);
        assert!(mine.text().contains(&a), "{user}'s list lacks {a}: {mine}");
        // The cancelled unit came back: one more is within the limit.
        client.buy("multi", &token, 1);
    }
    wait_remaining(&mut client, "multi", 40 - 16);
    let page = client.admin("GET", "/v1/sales/multi/orders?limit=100", None);
    assert_status(&page, 200);
    let listed = page.json()["orders"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, 24, "the admin listing covers every bucket: {page}");
}

/// The field is validated like the sale's other fields, and shown, in both modes (the embedded
/// store keeps one book and has no use for it).
#[test]
fn stock_buckets_is_validated_and_shown() {
    let server = Server::start(1, &[]);
    let mut client = server.client();
    for bad in [json!(0), json!(65), json!("3"), json!(-1)] {
        let mut spec = sale_spec(10, 1);
        spec["stock_buckets"] = bad.clone();
        let r = client.put_sale("bad", &spec);
        assert_eq!(r.status, 400, "stock_buckets {bad}: {r}");
        assert!(r.text().contains("stock_buckets"), "{r}");
    }
    let view = client.create_sale("ok", &split_sale(10, 64));
    assert_eq!(view["stock_buckets"], json!(64), "{view}");
    let plain = client.create_sale("plain", &sale_spec(10, 1));
    assert_eq!(plain["stock_buckets"], json!(1), "{plain}");
    client.buy("ok", &tok("e-1"), 1);
    assert_eq!(client.remaining("ok"), 9);
}

/// On a three-master Redis Cluster, a sale in 3 buckets has a bucket on every master, and its
/// whole stock sells through them to users of every home bucket.
#[test]
fn three_buckets_on_three_masters_sell_the_whole_stock() {
    let cluster = common::redis_cluster::three_masters();
    let seed = format!("redis-cluster://127.0.0.1:{}", cluster[0].port);
    let data = ScratchDir::new();
    let (_node, port) = node(&seed, None, &data);
    let mut client = Client::connect(port);
    const STOCK: u64 = 30;
    // A SKU whose three buckets hash to three different masters (most do).
    let master_of = |sku: &str, b: u64| {
        let slot = common::redis_cluster::key_slot(cluster[0].port, &key(sku, b, "sale"));
        common::redis_cluster::slot_owner(cluster[0].port, slot)
    };
    let sku = (0..100)
        .map(|n| format!("spread-{n}"))
        .find(|sku| {
            let masters: std::collections::HashSet<u16> =
                (0..3).map(|b| master_of(sku, b)).collect();
            masters.len() == 3
        })
        .expect("no SKU among 100 with its buckets on three masters");
    let sku = sku.as_str();
    // `/readyz` is ready once one master serves; a master the node has not reached yet answers
    // 503 for its slots, which is not what this test is about: wait until all three are up.
    let every_master_up = poll(WAIT, || {
        let r = client.get("/metrics");
        let text = (r.status == 200).then(|| r.text())?;
        let parsed = common::prometheus::parse(&text).ok()?;
        let up = parsed
            .samples("seckill_redis_master_up")
            .into_iter()
            .filter(|sample| sample.value == 1.0)
            .count();
        (up == 3).then_some(())
    });
    assert!(
        every_master_up.is_some(),
        "the node never reached all three masters"
    );
    client.create_sale(sku, &split_sale(STOCK, 3));
    for b in 0..3 {
        let master = master_of(sku, b);
        let remaining: u64 = query_ok(master, &["GET", &key(sku, b, "remaining")]);
        assert_eq!(remaining, STOCK / 3, "bucket {b}'s share on its master");
    }
    let mut sold = 0;
    let mut user = 0;
    while sold < STOCK {
        user += 1;
        assert!(user < 500, "the stock never sold: {sold} sold");
        match try_buy(port, sku, &format!("s-{user}")) {
            Some((201, _)) => sold += 1,
            other => panic!("s-{user}: unexpected {other:?} with {sold} sold"),
        }
    }
    let r = client.purchase(sku, &tok("s-last"), Some(1), None);
    assert_error(&r, 409, "sold_out");
    wait_remaining(&mut client, sku, 0);
}

/// The order feed pumps every bucket's stream: each order of a split sale is announced once,
/// and the sale once (by bucket 0's stream, not by each bucket's).
#[test]
fn the_feed_announces_every_bucket_s_orders_once() {
    use common::nats::{read_feed, NatsServer};
    let nats = NatsServer::start();
    let redis = RedisServer::start(&[]);
    let node = Server::start(2, &["--redis", &redis.url(), "--events", &nats.url()]);
    let mut client = node.client();
    client.create_sale("fed", &split_sale(30, 3));
    let mut ids = Vec::new();
    for n in 0..9 {
        ids.push(order_id(&client.buy("fed", &tok(&format!("f-{n}")), 1)));
    }
    let buckets: std::collections::HashSet<u64> =
        (0..9).map(|n| home_bucket(&format!("f-{n}"), 3)).collect();
    assert_eq!(buckets.len(), 3, "the buyers cover every bucket");
    let mut last = Vec::new();
    let done = poll(Duration::from_secs(120), || {
        last = read_feed(&nats.url(), "SECKILL_EVENTS", Duration::from_millis(1_500))
            .into_iter()
            .filter(|message| message["sku"] == "fed")
            .collect();
        (last.len() > ids.len()).then_some(())
    });
    let got: Vec<String> = last
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(done.is_some(), "the feed never caught up: {got:?}");
    let sales = got.iter().filter(|id| id.starts_with("fed.sale.")).count();
    assert_eq!(sales, 1, "the sale announced once: {got:?}");
    for id in &ids {
        let created = format!("{id}.created");
        let times = got.iter().filter(|got| **got == created).count();
        assert_eq!(times, 1, "{id} announced {times} times: {got:?}");
    }
    assert_eq!(got.len(), ids.len() + 1, "nothing else: {got:?}");
}

/// One bucket of two, `lost`, loses its data (its master came back empty): its users are
/// refused `503 store_regressed` while the other bucket sells on, and `POST .../resume` resumes
/// that bucket from the node's last view of it. Every unit acknowledged before the loss stays
/// sold (never sold again), and the rest sells to exactly the stock. A re-created bucket 0
/// holds the bucket count again, which nodes read from it.
///
/// Able to fail: before resumes reached buckets past the first, the resume answered `409
/// not_regressed` (bucket 0 had not regressed) and bucket 1 stayed stopped.
fn lose_bucket(lost_bucket: u64) {
    let sku = format!("rb{lost_bucket}");
    let sku = sku.as_str();
    const STOCK: u64 = 20;
    const BUCKETS: u64 = 2;
    let redis = RedisServer::start(&[]);
    let data = ScratchDir::new();
    let (mut server, port) = node(&redis.url(), None, &data);
    let mut client = Client::connect(port);
    client.create_sale(sku, &split_sale(STOCK, BUCKETS));
    let mut users = (0..).map(|n| format!("r-{n}"));
    let mut user_of = |bucket: u64| {
        users
            .by_ref()
            .find(|user| home_bucket(user, BUCKETS) == bucket)
            .unwrap_or_default()
    };
    let mut sold = 0;
    let other_bucket = 1 - lost_bucket;
    for bucket in [
        lost_bucket,
        lost_bucket,
        lost_bucket,
        lost_bucket,
        other_bucket,
        other_bucket,
    ] {
        let user = user_of(bucket);
        match try_buy(port, sku, &user) {
            Some((201, _)) => sold += 1,
            other => server.fail(&format!("{user}: {other:?} before the loss")),
        }
    }
    // The node's view of each bucket is as of a sync after these purchases.
    wait_remaining(&mut client, sku, (STOCK - sold) as i64);

    let lost: Vec<String> = query_ok(redis.port, &["KEYS", &key(sku, lost_bucket, "*")]);
    assert!(lost.len() > 3, "bucket {lost_bucket}'s keys: {lost:?}");
    for name in &lost {
        let _: i64 = query_ok(redis.port, &["DEL", name]);
    }
    let refused = poll(WAIT, || {
        let user = user_of(lost_bucket);
        match try_buy(port, sku, &user) {
            Some((503, Some(code))) if code == "store_regressed" => Some(()),
            Some((201, _)) => {
                sold += 1;
                None
            }
            _ => None,
        }
    });
    if refused.is_none() {
        server.fail(&format!("bucket {lost_bucket}'s loss was never detected"));
    }
    match try_buy(port, sku, &user_of(other_bucket)) {
        Some((201, _)) => sold += 1,
        other => server.fail(&format!("the other bucket stopped too: {other:?}")),
    }

    let resumed = client.admin("POST", &format!("/v1/sales/{sku}/resume"), None);
    assert_status(&resumed, 200);
    let report = resumed.json();
    eprintln!("{sold} sold when resumed: {report}");
    let buckets = report["buckets"].as_array().cloned().unwrap_or_default();
    assert_eq!(buckets.len(), 1, "one bucket regressed: {report}");
    assert_eq!(buckets[0]["bucket"], json!(lost_bucket), "{report}");
    let bucket = &buckets[0]["report"];
    assert_eq!(
        bucket["resumed"]["remaining"], bucket["last_seen"]["remaining"],
        "the bucket resumes with what the node last saw it hold: {report}"
    );
    assert_eq!(bucket["redis_before"], json!(null), "{report}");
    assert_eq!(bucket["units_possibly_lost"], json!(null), "{report}");
    let count: Option<String> = query_ok(redis.port, &["HGET", &key(sku, 0, "sale"), "buckets"]);
    assert_eq!(
        count.as_deref(),
        Some("2"),
        "bucket 0 holds the bucket count"
    );
    let again = client.admin("POST", &format!("/v1/sales/{sku}/resume"), None);
    assert_error(&again, 409, "not_regressed");

    // The lost bucket's users buy again, and the rest sells out at exactly the stock.
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 200, "never sold out: {sold} sold");
        let user = user_of(attempts % 2);
        match try_buy(port, sku, &user) {
            Some((201, _)) => sold += 1,
            Some((409, Some(code))) if code == "sold_out" => break,
            // The other nodes' views (here: this node's other ticks) adopt the resume.
            Some((503, Some(code))) if code == "store_regressed" => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => server.fail(&format!("{user}: {other:?} with {sold} sold")),
        }
    }
    assert_eq!(
        sold, STOCK,
        "acknowledged units: none sold twice, none stranded"
    );
}

#[test]
fn a_regressed_bucket_is_resumed_on_its_own() {
    lose_bucket(1);
}

#[test]
fn a_regressed_first_bucket_is_resumed_with_the_bucket_count() {
    lose_bucket(0);
}
