//! Connections heal: a Redis connection that goes silent without FIN or RST (a hung proxy, a
//! dead host behind a VIP) is torn down and replaced after `--redis-unresponsive-ms`, whatever
//! fred's own check does.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::redis::RedisServer;
use common::*;

/// Only a "gave up" bound; the issue wants the node serving again within 3 s, and the measured
/// figure is printed.
const HEAL_BOUND: Duration = Duration::from_secs(20);

/// node → proxy → Redis. The proxy freezes every connection the node has (new ones still work):
/// the node answers 503 for a while, then replaces its connection and sells again.
#[test]
fn a_frozen_connection_is_replaced() {
    let redis = RedisServer::start(&[]);
    let proxy = Proxy::start(redis.port);
    let server = Server::start(
        1,
        &[
            "--redis",
            &proxy.url(),
            "--redis-budget-ms",
            "300",
            "--redis-unresponsive-ms",
            "2000",
        ],
    );
    server.open_sale("frozen", 1_000_000, 1_000_000);
    common::edge::wait_until_open(&[&server], "frozen", HEAL_BOUND);
    let mut n = 0;
    let mut buy = || {
        n += 1;
        server
            .client()
            .purchase("frozen", &tok(&format!("shopper-{n}")), Some(1), None)
    };
    assert_status(&buy(), 201);
    let before = proxy.connections();

    proxy.freeze_existing();
    let frozen = Instant::now();
    let mut failed = 0;
    let healed = poll(HEAL_BOUND, || {
        let r = buy();
        match r.status {
            201 => Some(frozen.elapsed()),
            503 => {
                failed += 1;
                None
            }
            _ => panic!("unexpected answer while frozen: {r}"),
        }
    });
    let Some(healed) = healed else {
        panic!(
            "the node never sold again on a new connection ({failed} purchases got 503); \
             proxy connections: {before} before the freeze, {} now",
            proxy.connections()
        );
    };
    println!(
        "frozen connection: first 201 again {} ms after the freeze ({failed} purchases got 503 \
         meanwhile); proxy connections {before} before, {} after",
        healed.as_millis(),
        proxy.connections()
    );
    assert!(failed > 0, "the freeze must have hit purchases");
    assert!(
        proxy.connections() > before,
        "serving again means a new connection"
    );
    let text = poll(HEAL_BOUND, || {
        let r = server.client().get("/metrics");
        (r.status == 200).then(|| r.text())
    })
    .expect("a metrics scrape");
    let parsed = common::prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        parsed.sum("seckill_redis_connections_replaced_total", &[]) >= 1.0,
        "{text}"
    );
}
