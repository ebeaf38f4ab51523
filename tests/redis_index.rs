//! The id index of a SKU in Redis (`PREFIX:{sku}:ids`, src/store/redis/scripts/index.rs) keeps
//! its orders in id order however the ids arrive: each member is a chunk of at most 64 sorted
//! ids, and the chunks in turn hold the ids sorted. Ids arrive out of order in real life (nodes
//! mint them with their own clocks, and batches of many nodes interleave); here the purchase
//! script runs by hand with batches of shuffled ids, some below every id stored, so every path
//! of the chunk merge runs. Then forgetting closed orders (retention) takes ids out of chunks in
//! the middle, and the admin's listing pages through it all over HTTP.

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

/// The index's chunks, each split into its ids; fails unless each chunk is sorted and at most
/// [`CHUNK`] long.
#[track_caller]
fn chunks(redis: &RedisServer) -> Vec<Vec<String>> {
    let members: Vec<String> = redis
        .query(&["ZRANGE", &sku_key(SKU, "ids"), "0", "-1"])
        .expect("ZRANGE ids");
    let chunks: Vec<Vec<String>> = members
        .iter()
        .map(|member| member.split(' ').map(str::to_owned).collect())
        .collect();
    for chunk in &chunks {
        assert!(chunk.len() <= CHUNK, "a chunk of {} ids", chunk.len());
        assert!(chunk.is_sorted(), "an unsorted chunk: {chunk:?}");
    }
    chunks
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
        .map(|_| OrderId::mint(SKU, now - rng.gen_range(0..60_000), &mut rng).to_string())
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
    let indexed = chunks(&redis);
    assert!(indexed.len() >= ORDERS / CHUNK, "{} chunks", indexed.len());
    assert_eq!(
        indexed.concat(),
        sorted,
        "the chunks hold every id, in order"
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
        chunks(&redis).concat(),
        retained,
        "forgotten ids leave the index"
    );
    assert_eq!(
        listed(&mut admin, 150),
        retained,
        "the listing walks the chunks, a page ending inside one"
    );
}
