//! The index of a SKU's orders in Redis (`PREFIX:{sku}:ids`, src/store/redis/scripts/index.rs)
//! keeps their pages (the milliseconds order ids begin with, record.rs) in order however the ids
//! arrive: each member is a chunk of at most 64 sorted pages, and the chunks in turn hold the
//! pages sorted. Ids arrive out of order in real life (nodes mint them with their own clocks,
//! and batches of many nodes interleave); here the purchase script runs by hand with batches of
//! shuffled ids, many sharing a page and some below every page stored, so every path of the
//! chunk merge runs. Then forgetting closed orders (retention) takes orders out of pages and
//! emptied pages out of chunks in the middle, and the admin's listing pages through it all over
//! HTTP.

mod common;

use common::redis::{script_keys, sku_key, RedisServer};
use common::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use seckill::sale::ids::OrderId;

const SKU: &str = "idx";
const ORDERS: usize = 1500;
const CHUNK: usize = 64;

/// The index's chunks, each split into its pages; fails unless each chunk is sorted and at most
/// [`CHUNK`] long.
#[track_caller]
fn chunks(redis: &RedisServer, sku: &str) -> Vec<Vec<String>> {
    let members: Vec<String> = redis
        .query(&["ZRANGE", &sku_key(sku, "ids"), "0", "-1"])
        .expect("ZRANGE ids");
    let chunks: Vec<Vec<String>> = members
        .iter()
        .map(|member| member.split(' ').map(str::to_owned).collect())
        .collect();
    for chunk in &chunks {
        assert!(chunk.len() <= CHUNK, "a chunk of {} pages", chunk.len());
        assert!(chunk.is_sorted(), "an unsorted chunk: {chunk:?}");
    }
    chunks
}

/// The distinct pages of sorted `ids`, in order.
fn pages(ids: &[String]) -> Vec<String> {
    let mut pages: Vec<String> = ids.iter().map(|id| id[..10].to_owned()).collect();
    pages.dedup();
    pages
}

/// Every order id of the admin's listing, `limit` a page.
fn listed(c: &mut Client, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = String::new();
    for _ in 0..ORDERS {
        let r = c.admin(
            "GET",
            &format!("/v1/sales/{SKU}/orders?limit={limit}{after}"),
            None,
        );
        if r.status == 429 {
            // Listing pages are rate limited per shard; this walk is not a race against it.
            std::thread::sleep(std::time::Duration::from_secs(1));
            continue;
        }
        assert_status(&r, 200);
        let body = r.json();
        for order in body["orders"].as_array().expect("orders") {
            ids.push(order["order_id"].as_str().expect("order_id").to_owned());
        }
        match body["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return ids,
        }
    }
    panic!("the listing never ended");
}

#[test]
fn the_id_index_stays_sorted_in_chunks_whatever_order_ids_arrive_in() {
    let redis = RedisServer::start(&[]);
    let node = Server::start(
        1,
        &["--redis", &redis.url(), "--closed-orders-per-sale", "3"],
    );
    node.open_sale(SKU, ORDERS as u64, ORDERS as u64);
    let mut rng = SmallRng::seed_from_u64(7);
    let now = seckill::clock::now_ms();
    let mut ids: Vec<String> = (0..ORDERS)
        .map(|_| OrderId::mint(SKU, now - rng.gen_range(0..2_000), &mut rng).to_string())
        .collect();
    // The first third arrives in id order (a chunk appended to), the rest shuffled (merged into
    // chunks in the middle, and below the first).
    ids[..ORDERS / 3].sort();
    ids[ORDERS / 3..].shuffle(&mut rng);
    let keys = script_keys(SKU);
    let key_count = keys.len().to_string();
    let mut sent = 0;
    while sent < ids.len() {
        let batch = &ids[sent..(sent + rng.gen_range(1..=80)).min(ids.len())];
        let n = batch.len().to_string();
        let mut command: Vec<&str> =
            vec!["EVAL", seckill::store::redis::scripts::PURCHASE, &key_count];
        command.extend(keys.iter().map(String::as_str));
        command.extend(["0", &n]);
        for id in batch {
            command.extend([id.as_str(), "shopper", "1", ""]);
        }
        command.extend(["", "", "", "", ""]);
        let reply: Vec<common::redis::Value> = redis.query(&command).expect("EVAL purchase");
        let made = reply[5..]
            .iter()
            .filter(|row| matches!(row, common::redis::Value::BulkString(ok) if ok == b"ok"))
            .count();
        assert_eq!(
            made,
            batch.len(),
            "every purchase makes an order: {reply:?}"
        );
        sent += batch.len();
    }
    let mut sorted = ids.clone();
    sorted.sort();
    let indexed = chunks(&redis, SKU);
    let all_pages = pages(&sorted);
    assert!(
        all_pages.len() < ORDERS * 9 / 10,
        "few pages hold several orders: {} pages",
        all_pages.len()
    );
    assert!(
        indexed.len() >= all_pages.len() / CHUNK,
        "{} chunks",
        indexed.len()
    );
    assert_eq!(
        indexed.concat(),
        all_pages,
        "the chunks hold every page, in order"
    );
    assert_eq!(
        redis.orders(SKU).len(),
        ORDERS,
        "the pages hold every order"
    );

    // Retention forgets all but 3 of the closed orders: their ids leave their chunks.
    let mut admin = node.client();
    let mut cancelled: Vec<String> = sorted.choose_multiple(&mut rng, 100).cloned().collect();
    for id in &cancelled {
        assert_status(&admin.cancel(id, ADMIN_TOKEN), 200);
    }
    // The three kept are the last three cancelled.
    cancelled.truncate(97);
    let retained: Vec<String> = sorted
        .iter()
        .filter(|id| !cancelled.contains(id))
        .cloned()
        .collect();
    assert_eq!(
        chunks(&redis, SKU).concat(),
        pages(&retained),
        "pages emptied leave the index, the others stay"
    );
    let mut stored: Vec<String> = redis.orders(SKU).into_keys().collect();
    stored.sort();
    assert_eq!(stored, retained, "forgotten orders leave their pages");
    assert_eq!(
        listed(&mut admin, 150),
        retained,
        "the listing walks the chunks, a page ending inside one"
    );
}

/// A sale an older build began, before pages: each order in a field of its own (its id), the
/// index listing ids, a deadline member naming the id. This build reads such an order (the
/// node's own read and the scripts'), pays it where it is stored, keeps indexing ids for that
/// sale, and lists old and new orders together in id order.
#[test]
fn a_sale_an_older_build_began_carries_on() {
    let sku = "before";
    let redis = RedisServer::start(&[]);
    let node = Server::start(
        1,
        &["--redis", &redis.url(), "--closed-orders-per-sale", "1"],
    );
    node.open_sale(sku, 10, 1);
    let now = seckill::clock::now_ms();
    let old = OrderId::mint(sku, now - 5, &mut SmallRng::seed_from_u64(3)).to_string();
    // What the older build's purchase wrote: one unit gone, the order, its listing.
    let writes: [&[&str]; 6] = [
        &["DECR", &sku_key(sku, "remaining")],
        &["INCR", &sku_key(sku, "seq")],
        &[
            "HSET",
            &sku_key(sku, "orders"),
            &old,
            &format!("p 1 {now} 900000 0 olduser"),
        ],
        &["ZADD", &sku_key(sku, "ids"), "0", &old],
        &[
            "ZADD",
            &sku_key(sku, "pending"),
            &(now + 900_000).to_string(),
            &old,
        ],
        &[
            "HSET",
            &sku_key(sku, "held"),
            "olduser",
            &format!("1 {old}"),
        ],
    ];
    for write in writes {
        redis
            .query::<i64>(write)
            .unwrap_or_else(|e| panic!("{write:?}: {e}"));
    }
    let mut c = node.client();
    let seen = c.get_order(&old, &tok("olduser"));
    assert_status(&seen, 200);
    assert_eq!(seen.json()["status"], "pending", "{seen}");

    std::thread::sleep(std::time::Duration::from_millis(3));
    let new = order_id(&c.buy(sku, &tok("newuser"), 1));
    let indexed = chunks(&redis, sku).concat();
    assert_eq!(
        indexed,
        [old.clone(), new.clone()],
        "the sale keeps indexing ids"
    );
    let mut listed_ids = Vec::new();
    let page = c.admin("GET", &format!("/v1/sales/{sku}/orders"), None);
    assert_status(&page, 200);
    for order in page.json()["orders"].as_array().expect("orders") {
        listed_ids.push(order["order_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        listed_ids,
        [old.clone(), new.clone()],
        "old and new, in id order"
    );

    assert_status(&c.pay(&old), 200);
    let own: Option<String> = redis
        .query(&["HGET", &sku_key(sku, "orders"), &old])
        .expect("HGET");
    let own = own.expect("the old order stays in its own field");
    assert!(own.contains("\"paid\"") || own.starts_with("y "), "{own}");
    let stored = redis.orders(sku);
    assert_eq!(
        stored.len(),
        2,
        "no copy of the old order in a page: {stored:?}"
    );
    assert_eq!(c.remaining(sku), 8);

    // Retention (one closed order kept) forgets the new order, alone in its page, once a later
    // one closes: its id leaves this sale's index of ids.
    assert_status(&c.cancel(&new, &tok("newuser")), 200);
    std::thread::sleep(std::time::Duration::from_millis(3));
    let later = order_id(&c.buy(sku, &tok("lateuser"), 1));
    assert_status(&c.cancel(&later, &tok("lateuser")), 200);
    assert_eq!(
        chunks(&redis, sku).concat(),
        [old.clone(), later.clone()],
        "a forgotten order leaves the index of ids"
    );
}
