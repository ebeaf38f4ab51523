//! The order feed in embedded mode: `--events nats://...` publishes every order and sale event
//! to a NATS JetStream stream, at least once from the journal, each SKU's in order, with a stable
//! id that JetStream deduplicates. Each test starts its own `nats-server -js` and reads the stream
//! back with `seckill events tail`. The cluster-mode feed is tested in `events_redis`.
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::{read_feed, NatsServer};
use common::*;
use serde_json::{json, Value};

const STREAM: &str = "SECKILL_EVENTS";
/// How long `events tail` waits for one more message before it stops reading.
const TAIL_IDLE: Duration = Duration::from_millis(1_500);
/// A "gave up" bound for the feed to catch up: never a timing claim.
const CATCH_UP: Duration = Duration::from_secs(60);

fn feed_args(nats: &NatsServer) -> Vec<String> {
    vec!["--events".into(), nats.url()]
}

fn start_with_feed(nats: &NatsServer, shards: usize, extra: &[&str]) -> Server {
    let mut args = feed_args(nats);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(shards, &args)
}

/// One scrape. Scrapes are rate-limited per shard, so a refused one is asked again.
fn scrape(server: &Server) -> common::prometheus::Exposition {
    let started = Instant::now();
    loop {
        let r = server.client().get("/metrics");
        if r.status == 200 {
            let text = r.text();
            return common::prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
        assert!(started.elapsed() < CATCH_UP, "no scrape answered: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pending(server: &Server) -> u64 {
    scrape(server).count("seckill_events_pending", &[])
}

/// Waits until the node has published at least `at_least` events and reports nothing left to
/// publish. Panics (with the node's log) if it never does.
#[track_caller]
fn wait_published(server: &Server, at_least: u64) {
    let started = Instant::now();
    loop {
        let metrics = scrape(server);
        if metrics.value("seckill_events_pending", &[]) == Some(0.0)
            && metrics.count("seckill_events_published_total", &[]) >= at_least
        {
            return;
        }
        assert!(
            started.elapsed() < CATCH_UP,
            "the feed did not catch up: {:?} pending; log:\n{}",
            metrics.value("seckill_events_pending", &[]),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn by_id(feed: &[Value]) -> HashMap<String, Vec<usize>> {
    let mut ids: HashMap<String, Vec<usize>> = HashMap::new();
    for (at, message) in feed.iter().enumerate() {
        ids.entry(message["id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(at);
    }
    ids
}

#[test]
fn every_order_change_is_one_message_with_a_stable_id_and_the_api_shapes() {
    let nats = NatsServer::start();
    let s = start_with_feed(&nats, 2, &[]);
    let mut c = s.client();
    let mut spec = sale_spec(10, 2);
    spec["price"] = json!(1_500);
    spec["currency"] = json!("EUR");
    c.create_sale("feed-basic", &spec);
    let paid = order_id(&c.buy("feed-basic", &tok("alice"), 2));
    let cancelled = order_id(&c.buy("feed-basic", &tok("bob"), 1));
    let left = order_id(&c.buy("feed-basic", &tok("carol"), 1));
    assert_status(&c.pay_as(&paid, PAYMENT_TOKEN, 3_000, "pi_feed_1"), 200);
    assert_status(&c.cancel(&cancelled, &tok("bob")), 200);
    wait_published(&s, 6);

    let feed = read_feed(&nats.url(), STREAM, TAIL_IDLE);
    let types: Vec<(&str, &str)> = feed
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap_or(""),
                m["id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let expected_ids = [
        format!("{paid}.created"),
        format!("{cancelled}.created"),
        format!("{left}.created"),
        format!("{paid}.paid"),
        format!("{cancelled}.cancelled"),
    ];
    assert_eq!(
        feed.len(),
        6,
        "one sale event and five order events: {types:?}"
    );
    assert_eq!(feed[0]["type"], "sale.upserted", "{types:?}");
    assert!(feed[0]["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("feed-basic.sale.")));
    assert_eq!(feed[0]["sale"]["price"], json!(1_500));
    assert_eq!(feed[0]["sale"]["currency"], "EUR");
    let ids: Vec<&str> = feed[1..]
        .iter()
        .map(|m| m["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        ids,
        expected_ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for message in &feed {
        assert_eq!(message["sku"], "feed-basic", "{message}");
        assert!(message["at"].as_u64().is_some(), "{message}");
    }
    let pay_event = &feed[4];
    assert_eq!(pay_event["type"], "order.paid");
    assert_eq!(pay_event["order"]["status"], "paid");
    assert_eq!(pay_event["order"]["amount"], json!(3_000));
    assert_eq!(pay_event["order"]["payment_ref"], "pi_feed_1");
    assert_eq!(pay_event["order"]["user_id"], "alice");
    assert_eq!(feed[5]["type"], "order.cancelled");
    assert_eq!(feed[5]["order"]["status"], "cancelled");
    // The body's order is the API's order.
    let api_order = c.get_order(&left, ADMIN_TOKEN).json();
    assert_eq!(feed[3]["order"], api_order);

    // The readiness note names the feed.
    let ready = c.get("/readyz");
    assert_status(&ready, 200);
    assert_eq!(ready.json()["events"]["broker"], "connected", "{ready}");
    assert_eq!(ready.json()["events"]["pending"], json!(0), "{ready}");
}

/// Buys one unit per user from several threads until `stop`, recording every order a shopper
/// was given (201) and how many purchases were answered while `outage` was set.
struct Shoppers {
    acknowledged: Arc<Mutex<Vec<String>>>,
    during_outage: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Shoppers {
    fn start(server: &Server, sku: &'static str, threads: usize, outage: &Arc<AtomicBool>) -> Self {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let during_outage = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|t| {
                let mut c = server.client();
                let (acknowledged, during, stop, outage) = (
                    Arc::clone(&acknowledged),
                    Arc::clone(&during_outage),
                    Arc::clone(&stop),
                    Arc::clone(outage),
                );
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let r = c.purchase(sku, &tok(&format!("u{t}-{n}")), Some(1), None);
                        if r.status == 201 {
                            let id = order_id(&r.json());
                            if outage.load(Ordering::Relaxed) {
                                during.fetch_add(1, Ordering::Relaxed);
                            }
                            acknowledged
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(id);
                        } else if r.error_code().as_deref() == Some("sold_out") {
                            return;
                        }
                    }
                })
            })
            .collect();
        Self {
            acknowledged,
            during_outage,
            stop,
            threads: handles,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("shopper thread");
        }
        let ids = self
            .acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (ids, self.during_outage.load(Ordering::Relaxed))
    }
}

#[track_caller]
fn wait_until(what: &str, server: &Server, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < CATCH_UP,
            "gave up waiting for {what}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks the feed against what shoppers were told: every acknowledged order's `created` event
/// exactly once, none for any other order, each SKU's events in the order they happened (an
/// order's close after its creation, creations in journal order).
#[track_caller]
fn assert_feed_matches(feed: &[Value], sku: &str, acknowledged: &[String]) {
    let ids = by_id(feed);
    for (id, at) in &ids {
        assert_eq!(at.len(), 1, "event {id} stored {} times", at.len());
    }
    let acknowledged: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let created: Vec<&Value> = feed
        .iter()
        .filter(|m| m["type"] == "order.created" && m["sku"] == sku)
        .collect();
    let created_ids: HashSet<&str> = created
        .iter()
        .filter_map(|m| m["order"]["order_id"].as_str())
        .collect();
    let missing: Vec<&&str> = acknowledged.difference(&created_ids).collect();
    let invented: Vec<&&str> = created_ids.difference(&acknowledged).collect();
    assert!(
        missing.is_empty(),
        "acknowledged orders without a created event: {missing:?}"
    );
    assert!(
        invented.is_empty(),
        "created events of orders no shopper got: {invented:?}"
    );
    // Within a shard the journal's order is creation order; a SKU lives on one shard.
    let times: Vec<u64> = created
        .iter()
        .filter_map(|m| m["order"]["created_at"].as_u64())
        .collect();
    if let Some(at) = times.windows(2).position(|w| w[0] > w[1]) {
        panic!(
            "created events out of order at {at} of {}: created_at {} then {}",
            times.len(),
            times[at],
            times[at + 1]
        );
    }
    for message in feed
        .iter()
        .filter(|m| m["sku"] == sku && m["type"] != "order.created")
    {
        if let Some(order) = message["order"]["order_id"].as_str() {
            let created_at = ids.get(&format!("{order}.created")).map(|at| at[0]);
            let closed_at = ids
                .get(message["id"].as_str().unwrap_or(""))
                .map(|at| at[0]);
            assert!(
                created_at.is_some() && created_at < closed_at,
                "{} before its order's creation",
                message["id"]
            );
        }
    }
}

#[test]
fn nats_killed_mid_sale_loses_nothing_and_repeats_nothing() {
    let mut nats = NatsServer::start();
    let s = start_with_feed(&nats, 2, &[]);
    s.client().create_sale("feed-kill", &sale_spec(100_000, 1));
    let outage = Arc::new(AtomicBool::new(false));
    let shoppers = Shoppers::start(&s, "feed-kill", 4, &outage);
    wait_until("orders before the outage", &s, || {
        shoppers.acknowledged() >= 100
    });

    nats.kill9();
    outage.store(true, Ordering::Relaxed);
    let before = shoppers.acknowledged();
    wait_until("orders during the outage", &s, || {
        shoppers.acknowledged() >= before + 300
    });
    // The race really happened: orders were acknowledged while their events could not leave,
    // and publishing failed (not merely waited) during the outage.
    let stuck = pending(&s);
    assert!(stuck > 0, "no event waited during the outage");
    wait_until("a failed publish during the outage", &s, || {
        scrape(&s).count("seckill_events_publish_failures_total", &[]) > 0
    });
    let ready = s.client().get("/readyz");
    assert_status(&ready, 200);
    assert_eq!(ready.json()["events"]["broker"], "disconnected", "{ready}");

    nats.restart();
    outage.store(false, Ordering::Relaxed);
    let back = shoppers.acknowledged();
    wait_until("orders after the restart", &s, || {
        shoppers.acknowledged() >= back + 100
    });
    let (acknowledged, during_outage) = shoppers.finish();
    assert!(
        during_outage > 0,
        "no purchase was acknowledged while NATS was down"
    );
    wait_published(&s, acknowledged.len() as u64 + 1);

    let feed = read_feed(&nats.url(), STREAM, TAIL_IDLE);
    assert_feed_matches(&feed, "feed-kill", &acknowledged);
    eprintln!(
        "{} orders, {during_outage} during the outage ({stuck} events waiting at one point)",
        acknowledged.len()
    );
}

#[test]
fn a_crashed_node_publishes_its_unpublished_events_after_restart_and_snapshots_keep_them() {
    let mut nats = NatsServer::start();
    let data = ScratchDir::new();
    let mut args = feed_args(&nats);
    // Small segments, so snapshots are taken while events wait, and must carry them.
    args.extend(["--segment-bytes".into(), "65536".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = Server::start_in(data.path(), 2, &args);
    let mut c = s.client();
    c.create_sale("feed-crash", &sale_spec(100_000, 1));
    let mut acknowledged = Vec::new();
    for n in 0..50 {
        acknowledged.push(order_id(&c.buy("feed-crash", &tok(&format!("a{n}")), 1)));
    }
    wait_published(&s, 51);
    nats.kill9();
    for n in 0..1_500 {
        acknowledged.push(order_id(&c.buy("feed-crash", &tok(&format!("b{n}")), 1)));
    }
    let paid = acknowledged[60].clone();
    assert_status(&c.pay(&paid), 200);
    assert!(pending(&s) > 1_000, "events should wait while NATS is down");
    // A snapshot was taken while the events waited (the first of each shard is recovery's).
    assert!(
        live_snapshots(data.path()) > 0,
        "no snapshot was taken while events waited; lower --segment-bytes"
    );

    s.kill9();
    let mut s = Server::start_in(data.path(), 2, &args);
    // The restarted node reports what it recovered unpublished (its feed task reports it as soon
    // as it runs).
    wait_until("the recovered outbox", &s, || pending(&s) > 1_000);
    nats.restart();
    wait_published(&s, 1_501);
    let feed = read_feed(&nats.url(), STREAM, TAIL_IDLE);
    assert_feed_matches(&feed, "feed-crash", &acknowledged);
    assert!(by_id(&feed).contains_key(&format!("{paid}.paid")));

    // Everything published before a clean restart is marked so in the journal: nothing is
    // sent again (not even for JetStream to drop).
    s.terminate();
    let s = Server::start_in(data.path(), 2, &args);
    wait_published(&s, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        scrape(&s).count("seckill_events_published_total", &[]),
        0,
        "a restart republished events already marked published"
    );
}

/// Snapshots the running node took (beyond the one recovery writes first in each shard).
fn live_snapshots(data_dir: &std::path::Path) -> usize {
    let mut found = 0;
    for generation in std::fs::read_dir(data_dir).into_iter().flatten().flatten() {
        for shard in std::fs::read_dir(generation.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found += std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|f| {
                    let name = f.file_name().to_string_lossy().into_owned();
                    name.starts_with("snap-") && name != "snap-000000000001.snap"
                })
                .count();
        }
    }
    found
}

#[test]
fn a_full_outbox_refuses_purchases_but_not_payments_until_the_broker_returns() {
    let mut nats = NatsServer::start();
    let s = start_with_feed(&nats, 1, &["--events-outbox-max", "100"]);
    let mut c = s.client();
    c.create_sale("feed-full", &sale_spec(10_000, 1));
    nats.kill9();
    let mut orders = Vec::new();
    let mut refused = None;
    for n in 0..200 {
        let r = c.purchase("feed-full", &tok(&format!("f{n}")), Some(1), None);
        if r.status == 201 {
            orders.push(order_id(&r.json()));
        } else {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("purchases past the outbox bound must be refused");
    assert_error(&refused, 503, "unavailable");
    assert!(
        orders.len() >= 99,
        "only {} orders before the bound",
        orders.len()
    );
    // Payments and cancellations still go through: they are bounded by the orders taken.
    assert_status(&c.pay(&orders[0]), 200);
    assert_status(&c.cancel(&orders[1], &tok("f1")), 200);

    nats.restart();
    wait_published(&s, orders.len() as u64 + 3);
    let order = c.buy("feed-full", &tok("after"), 1);
    orders.push(order_id(&order));
    wait_published(&s, orders.len() as u64 + 3);
    let feed = read_feed(&nats.url(), STREAM, TAIL_IDLE);
    assert_feed_matches(&feed, "feed-full", &orders);
}

#[test]
fn events_tail_filters_one_sku_and_refuses_a_missing_broker() {
    let nats = NatsServer::start();
    let s = start_with_feed(&nats, 2, &[]);
    let mut c = s.client();
    c.create_sale("tail-a", &sale_spec(10, 1));
    c.create_sale("tail-b", &sale_spec(10, 1));
    c.buy("tail-a", &tok("x"), 1);
    c.buy("tail-b", &tok("x"), 1);
    wait_published(&s, 4);
    let output = std::process::Command::new(BIN)
        .args([
            "events",
            "tail",
            "--from-start",
            "--sku",
            "tail-b",
            "--events",
        ])
        .arg(nats.url())
        .args(["--idle-exit-ms", "1000"])
        .output()
        .expect("run events tail");
    assert!(output.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|m| m["sku"] == "tail-b"));

    let closed = common::ports::pick_port();
    let output = std::process::Command::new(BIN)
        .args([
            "events",
            "tail",
            "--events",
            &format!("nats://127.0.0.1:{closed}"),
        ])
        .output()
        .expect("run events tail");
    assert!(
        !output.status.success(),
        "tail of a missing broker must fail"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}

#[test]
fn a_bad_events_url_is_refused_at_startup() {
    for bad in ["http://127.0.0.1:4222", "nats://", "127.0.0.1:4222"] {
        let ran = common::process::run_serve(common::process::seckill_cmd(), &["--events", bad]);
        assert!(!ran.output.status.success(), "--events {bad} was accepted");
        assert!(
            ran.stderr().contains("`events` must be nats://"),
            "--events {bad}: {}",
            ran.stderr()
        );
    }
    let ran = common::process::run_serve(
        common::process::seckill_cmd(),
        &["--events", "nats://127.0.0.1:1", "--events-stream", "a.b"],
    );
    assert!(ran.stderr().contains("`events_stream`"), "{}", ran.stderr());
}
