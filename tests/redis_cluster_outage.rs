//! Failures stay local: on a three-master Redis Cluster, killing the master that holds SKU A
//! stops only A. B and C, on the other masters, keep selling, `/readyz` stays 200, and the
//! per-master metric shows which master is down.

mod common;

use std::time::{Duration, Instant};

use common::redis::query_ok;
use common::*;

/// Only "gave up" bounds: a loaded machine may be slow, never this slow.
const BOUND: Duration = Duration::from_secs(30);
/// How long after the kill B and C may still see 503s before the test fails. The issue asks
/// for none after the first second; this bound is generous for a loaded machine, and the
/// measured figure is printed.
const SETTLE: Duration = Duration::from_secs(10);
/// How long the sale is watched after the kill.
const WATCH: Duration = Duration::from_secs(14);

/// One SKU per master: every SKU key carries the `{sku}` hash tag, so the SKU's slot is the
/// slot of its name.
fn one_sku_per_master(port: u16, masters: &[u16]) -> Vec<(String, u16)> {
    let mut chosen: Vec<(String, u16)> = Vec::new();
    for n in 0.. {
        let sku = format!("sku-{n}");
        let slot: i64 = query_ok(port, &["CLUSTER", "KEYSLOT", &sku]);
        let owner = common::redis_cluster::slot_owner(port, slot);
        if !chosen.iter().any(|(_, master)| *master == owner) {
            chosen.push((sku, owner));
        }
        if chosen.len() == masters.len() {
            break;
        }
        assert!(n < 10_000, "no SKU found for every master");
    }
    chosen
}

/// `seckill_redis_master_up` for `master`, from one scrape (retried while the node says it is
/// scraped too often).
fn master_up(server: &Server, master: u16) -> Option<f64> {
    let text = poll(BOUND, || {
        let r = server.client().get("/metrics");
        (r.status == 200).then(|| r.text())
    })
    .expect("a metrics scrape");
    let parsed = common::prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let label = format!("127.0.0.1:{master}");
    parsed
        .samples("seckill_redis_master_up")
        .into_iter()
        .find(|sample| sample.labels.get("master") == Some(&label))
        .map(|sample| sample.value)
}

#[test]
fn a_dead_master_stops_only_its_own_skus() {
    let mut redis = common::redis_cluster::start(&common::redis_cluster::ClusterSpec {
        // Serving whatever slots they still have when one dies, and marking a dead master
        // failed after 1 s.
        full_coverage: false,
        node_timeout_ms: 1000,
        ..Default::default()
    });
    let ports: Vec<u16> = redis.iter().map(|r| r.port).collect();
    let skus = one_sku_per_master(ports[0], &ports);
    let url = format!(
        "redis-cluster://{}",
        ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let server = Server::start(2, &["--redis", &url]);
    poll(BOUND, || {
        (server.client().get("/readyz").status == 200).then_some(())
    })
    .expect("the node gets ready on the cluster");
    for (sku, _) in &skus {
        server.open_sale(sku, 1_000_000, 1_000_000);
    }
    common::edge::wait_until_open(&[&server], &skus[0].0, BOUND);
    for (sku, _) in &skus {
        common::edge::wait_until_open(&[&server], sku, BOUND);
    }
    let mut client = server.client();
    let mut n = 0;
    let mut buy = |client: &mut Client, sku: &str| {
        n += 1;
        client.purchase(sku, &tok(&format!("shopper-{n}")), Some(1), None)
    };
    for (sku, _) in &skus {
        let r = buy(&mut client, sku);
        assert_status(&r, 201);
    }
    for (_, master) in &skus {
        assert_eq!(
            master_up(&server, *master),
            Some(1.0),
            "every master up at first"
        );
    }

    let (doomed_sku, doomed_master) = skus[0].clone();
    let survivors: Vec<&(String, u16)> = skus[1..].iter().collect();
    let victim = redis
        .iter()
        .position(|r| r.port == doomed_master)
        .expect("the doomed master");
    redis[victim].kill9();
    let killed = Instant::now();

    // (time since the kill, sku, status) of every purchase while watching.
    let mut answers: Vec<(Duration, String, u16)> = Vec::new();
    while killed.elapsed() < WATCH {
        for sku in std::iter::once(&doomed_sku).chain(survivors.iter().map(|(sku, _)| sku)) {
            let r = buy(&mut client, sku);
            assert!(
                r.status == 201 || r.status == 503,
                "unexpected answer for {sku}: {r}"
            );
            answers.push((killed.elapsed(), sku.clone(), r.status));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let survivor_503s: Vec<&(Duration, String, u16)> = answers
        .iter()
        .filter(|(_, sku, status)| *sku != doomed_sku && *status == 503)
        .collect();
    let survivor_total = answers
        .iter()
        .filter(|(_, sku, _)| *sku != doomed_sku)
        .count();
    let doomed: Vec<&(Duration, String, u16)> = answers
        .iter()
        .filter(|(_, sku, _)| *sku == doomed_sku)
        .collect();
    let last_503 = survivor_503s.last().map(|(at, _, _)| at.as_millis());
    println!(
        "after killing master {doomed_master}: {} of {survivor_total} purchases on the healthy \
         masters got 503 (last at {last_503:?} ms after the kill); {} of {} on the dead master's \
         SKU got 503, the first at {:?} ms",
        survivor_503s.len(),
        doomed.iter().filter(|(_, _, s)| *s == 503).count(),
        doomed.len(),
        doomed
            .iter()
            .find(|(_, _, s)| *s == 503)
            .map(|(at, _, _)| at.as_millis()),
    );
    println!(
        "calls queued in fred while it reconnected, dropped unsent: {}",
        server
            .log()
            .matches("redis call queued while reconnecting")
            .count()
    );
    assert!(
        survivor_503s.iter().all(|(at, _, _)| *at < SETTLE),
        "SKUs on healthy masters still got 503 after {SETTLE:?}: {survivor_503s:?}"
    );
    assert!(
        doomed.iter().all(|(_, _, status)| *status == 503),
        "the dead master's SKU can only fail: {doomed:?}"
    );
    assert!(
        survivor_total > 100 && answers.iter().any(|(at, _, _)| *at > SETTLE),
        "the watch must cover the time after the settle bound"
    );
    let ready = server.client().get("/readyz");
    assert_status(&ready, 200);
    assert_eq!(
        master_up(&server, doomed_master),
        Some(0.0),
        "the dead master is down"
    );
    for (_, master) in &survivors {
        assert_eq!(
            master_up(&server, *master),
            Some(1.0),
            "a live master is up"
        );
    }

    // The master comes back empty (no persistence here): the sale's acknowledged orders are
    // gone, so A is stopped as regressed (never resold) until the operator resumes it; then A
    // sells again without a restart of the node.
    redis[victim].restart();
    let back = Instant::now();
    let regressed = poll(BOUND, || {
        let r = buy(&mut server.client(), &doomed_sku);
        (r.error_code().as_deref() == Some("store_regressed")).then_some(())
    });
    assert!(
        regressed.is_some(),
        "A's master lost its data but A was not stopped as regressed"
    );
    let sold = poll(BOUND, || {
        let resume = format!("/v1/sales/{doomed_sku}/resume");
        let _ = server.client().admin("POST", &resume, None);
        (buy(&mut server.client(), &doomed_sku).status == 201).then_some(())
    });
    println!(
        "the dead master's SKU sold again {} ms after the master restarted (empty) and the operator resumed it",
        back.elapsed().as_millis()
    );
    assert!(
        sold.is_some(),
        "A never sold again after its master came back"
    );
    // Every shard reconnects on its own backoff (at most 1 s apart).
    let up = poll(BOUND, || {
        (master_up(&server, doomed_master) == Some(1.0)).then_some(())
    });
    assert!(up.is_some(), "the master is reported up again");
}
