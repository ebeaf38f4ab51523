//! What the fair modes' tests share: buying with a pass, waiting for a sale's start, a metrics
//! scrape, a store that outlives a restart, and two nodes on one Redis.

use std::time::Duration;

use super::redis::RedisServer;
use super::{poll, prometheus, redis_mode, tok, Client, Response, Server};

/// What a test that restarts its node must keep across the restart besides the data dir: in
/// cluster mode a `redis-server` of its own and the `--redis` flags naming it (the node restarts
/// on the same one); nothing in embedded mode.
pub fn restartable_store() -> (Option<RedisServer>, Vec<String>) {
    let redis = redis_mode().then(|| RedisServer::start(&[]));
    let args = redis
        .as_ref()
        .map(|redis| vec!["--redis".to_owned(), redis.url()])
        .unwrap_or_default();
    (redis, args)
}

/// One `redis-server` and two 2-shard nodes on it: one cluster.
pub fn two_nodes_on_one_redis() -> (RedisServer, Server, Server) {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let a = Server::start(2, &["--redis", &url]);
    let b = Server::start(2, &["--redis", &url]);
    (redis, a, b)
}

/// `POST /v1/sales/{sku}/purchase` as `user`, with `pass` as `X-Seckill-Pass` if given.
pub fn buy_with_pass(c: &mut Client, sku: &str, user: &str, pass: Option<&str>) -> Response {
    let auth = format!("Bearer {}", tok(user));
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(pass) = pass {
        headers.push(("X-Seckill-Pass", pass));
    }
    c.request(
        "POST",
        &format!("/v1/sales/{sku}/purchase"),
        &headers,
        Some(""),
    )
}

/// Sleeps until `at` (ms since the epoch) has passed.
pub fn sleep_until(at: i64) {
    let wait = at - super::now_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64 + 20));
    }
}

/// One scrape; scrapes are rate-limited per shard, so a refused one is asked again.
pub fn scrape(server: &Server) -> prometheus::Exposition {
    poll(Duration::from_secs(30), || {
        let r = server.client().get("/metrics");
        (r.status == 200).then(|| {
            let text = r.text();
            prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
        })
    })
    .expect("a scrape answered")
}
