//! Redis losing acknowledged writes mid-sale (FLUSHALL, a restart without persistence, a restore
//! of an older RDB) is detected, never resold: two nodes on one Redis sell under load through the
//! event; every node then refuses the SKU with `503 store_regressed`, an admin re-PUT is refused,
//! the metric shows it, and only the operator's resume lets selling continue, with the remaining
//! stock its report states. Across the whole test no more units are acknowledged than the stock.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use serde_json::{json, Value};

/// Only a "gave up" bound: nodes sync with Redis every 100 ms.
const BOUND: Duration = Duration::from_secs(30);
const STOCK: u64 = 400;
const SKU: &str = "regress";

/// What Redis loses.
#[derive(Debug, Clone, Copy)]
enum Event {
    Flushall,
    RestartWithoutPersistence,
    RestoreOlderRdb,
}

/// Test phases, as the buyers see them.
const SELLING: u8 = 0;
const AFTER_EVENT: u8 = 1;
/// Every node has been seen refusing the SKU: no 201 may come until the resume.
const CONFIRMED: u8 = 2;
const RESUMED: u8 = 3;

/// What the buyers saw.
#[derive(Default)]
struct Ledger {
    /// Units acknowledged (201), by the phase in which the answer arrived.
    acked: [AtomicU64; 4],
    /// Answers other than 201, as `(phase, status, code)`, first 50 of each kind only.
    refusals: Mutex<Vec<(u8, u16, String)>>,
    users: AtomicU64,
}

impl Ledger {
    fn total(&self) -> u64 {
        self.acked.iter().map(|n| n.load(Ordering::SeqCst)).sum()
    }

    fn note(&self, phase: u8, status: u16, code: String) {
        let mut refusals = self.refusals.lock().expect("lock");
        let seen = refusals
            .iter()
            .filter(|(p, s, c)| *p == phase && *s == status && *c == code)
            .count();
        if seen < 50 {
            refusals.push((phase, status, code));
        }
    }

    fn count(&self, phase: u8, code: &str) -> usize {
        let refusals = self.refusals.lock().expect("lock");
        refusals
            .iter()
            .filter(|(p, _, c)| *p == phase && c == code)
            .count()
    }
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn sale_spec_opening(delay_ms: i64) -> Value {
    let now = now_ms();
    json!({
        "name": "Regression sale",
        "stock": STOCK,
        "starts_at": now + delay_ms,
        "ends_at": now + 3_600_000,
        "per_user_limit": 1,
    })
}

/// One buyer: a fresh user per purchase, until `stop`.
fn buyer(node: &Server, ledger: &Ledger, phase: &AtomicU8, stop: &AtomicBool) {
    let mut client = node.client();
    while !stop.load(Ordering::SeqCst) {
        let n = ledger.users.fetch_add(1, Ordering::SeqCst);
        let token = tok(&format!("buyer-{n}"));
        let r = match client.try_request(
            "POST",
            &format!("/v1/sales/{SKU}/purchase"),
            &[("Authorization", &format!("Bearer {token}"))],
            Some(""),
        ) {
            Ok(r) => r,
            Err(_) => {
                client = node.client();
                continue;
            }
        };
        let now = phase.load(Ordering::SeqCst);
        if r.status == 201 {
            ledger.acked[usize::from(now)].fetch_add(1, Ordering::SeqCst);
        } else {
            let code = r.error_code().unwrap_or_default();
            if code == "sold_out" || code == "unavailable" {
                // Sold out (or Redis down): do not spin the CPU the nodes need.
                std::thread::sleep(Duration::from_millis(20));
            }
            ledger.note(now, r.status, code);
        }
    }
}

/// Waits until every shard of every node answers a purchase with `503 store_regressed`.
fn wait_all_refuse(nodes: &[Server]) {
    for node in nodes {
        for shard in 0..node.shards {
            let mut client = node.client_on_shard(shard);
            let mut last = None;
            let refused = poll(BOUND, || {
                let r = client.purchase(SKU, &tok("probe"), Some(1), None);
                assert_ne!(r.status, 201, "a probe bought a unit after the event: {r}");
                let done = r.status == 503 && r.error_code().as_deref() == Some("store_regressed");
                last = Some(r);
                done.then_some(())
            });
            assert!(
                refused.is_some(),
                "node {} shard {shard} did not refuse with store_regressed within {BOUND:?}; last: {last:?}",
                node.port
            );
        }
    }
}

fn scrape(node: &Server) -> common::prometheus::Exposition {
    let r = node.client().get("/metrics");
    assert_eq!(r.status, 200, "{r}");
    common::prometheus::parse(&r.text()).expect("a valid exposition")
}

fn run(event: Event) {
    let mut redis = RedisServer::start(&[]);
    let url = redis.url();
    let nodes = [
        Server::start(2, &["--redis", &url]),
        Server::start(2, &["--redis", &url]),
    ];
    nodes[0]
        .client()
        .create_sale(SKU, &sale_spec_opening(1_500));
    common::edge::wait_until_open(&nodes.iter().collect::<Vec<_>>(), SKU, BOUND);

    let ledger = Ledger::default();
    let phase = AtomicU8::new(SELLING);
    let stop = AtomicBool::new(false);
    let old_rdb = redis.dir.join("old.rdb");
    let mut report = Value::Null;
    std::thread::scope(|scope| {
        // The buyers stop when this closure ends, panicking or not: a failed check must fail
        // the test, not leave it waiting for them.
        let _stop = StopOnDrop(&stop);
        for thread in 0..4 {
            let (node, ledger, phase, stop) = (&nodes[thread % 2], &ledger, &phase, &stop);
            scope.spawn(move || buyer(node, ledger, phase, stop));
        }
        let waited = poll(BOUND, || (ledger.total() >= 60).then_some(()));
        assert!(waited.is_some(), "the buyers sold nothing");
        if let Event::RestoreOlderRdb = event {
            let saved: String = redis.query(&["SAVE"]).expect("SAVE");
            assert_eq!(saved, "OK");
            std::fs::copy(redis.dir.join("dump.rdb"), &old_rdb).expect("keep the old RDB");
        }
        let at_save = ledger.total();
        let waited = poll(BOUND, || (ledger.total() >= at_save + 60).then_some(()));
        assert!(waited.is_some(), "the buyers stopped selling");
        // No false alarm under load: purchases answered while a sync is in flight are newer
        // than what the sync reads, and must not look like a regression.
        for node in &nodes {
            assert_eq!(
                scrape(node).count("seckill_store_regressions_total", &[]),
                0,
                "a regression seen before the event on node {}",
                node.port
            );
        }
        assert_eq!(ledger.count(SELLING, "store_regressed"), 0);
        let before = ledger.total();
        let event_at = Instant::now();
        match event {
            Event::Flushall => {
                let _: String = redis.query(&["FLUSHALL"]).expect("FLUSHALL");
            }
            Event::RestartWithoutPersistence => redis.restart(),
            Event::RestoreOlderRdb => {
                redis.kill9();
                std::fs::copy(&old_rdb, redis.dir.join("dump.rdb")).expect("restore the RDB");
                redis.restart();
            }
        }
        phase.store(AFTER_EVENT, Ordering::SeqCst);
        let in_flight = ledger.total() - before;
        println!(
            "{event:?}: {before} units acknowledged before the event ({at_save} at the snapshot), \
             {in_flight} answered while it happened"
        );
        // A hostile operator puts the sale back right away, on the other node.
        let reput = nodes[1].client().put_sale(SKU, &sale_spec_opening(-1_000));
        println!("re-PUT right after the event: {reput}");
        assert_ne!(
            reput.status, 201,
            "a re-PUT after the event replaced the sale: {reput}"
        );

        wait_all_refuse(&nodes);
        let detection = event_at.elapsed();
        phase.store(CONFIRMED, Ordering::SeqCst);
        println!("{event:?}: every shard of both nodes refused within {detection:?} of the event");

        // Refused on every node until the resume, the re-PUT too; the metric shows it.
        std::thread::sleep(Duration::from_millis(500));
        for node in &nodes {
            let reput = node.client().put_sale(SKU, &sale_spec_opening(-1_000));
            assert_error(&reput, 503, "store_regressed");
            let metrics = scrape(node);
            assert!(
                metrics.count("seckill_store_regressions_total", &[]) >= 1,
                "regressions metric on node {}",
                node.port
            );
            assert_eq!(
                metrics.count("seckill_store_regressed_skus", &[]),
                1,
                "regressed SKUs gauge on node {}",
                node.port
            );
        }
        assert!(
            nodes
                .iter()
                .any(|node| node.log().contains("lost acknowledged writes")),
            "an error is logged"
        );
        // A node started now refuses too: it learns the marker from Redis.
        let late = Server::start(2, &["--redis", &url]);
        wait_all_refuse(std::slice::from_ref(&late));
        let reput = late.client().put_sale(SKU, &sale_spec_opening(-1_000));
        assert_error(&reput, 503, "store_regressed");
        let marker: Option<String> = redis
            .query(&["GET", &format!("seckill:{{{SKU}}}:regressed")])
            .expect("GET marker");
        println!("marker in Redis: {marker:?}");
        assert!(marker.is_some(), "the marker is in Redis");
        wait_all_refuse(&nodes);

        // The operator resumes on node 0 (a resume where nothing regressed is refused: below).
        let acked_before_resume = ledger.total();
        // Set before the call: a purchase may be answered after the resume took effect and
        // before its answer reaches this thread. A unit sold before it took effect would show as
        // more sold after the resume than it stated.
        phase.store(RESUMED, Ordering::SeqCst);
        let r = nodes[0]
            .client()
            .admin("POST", &format!("/v1/sales/{SKU}/resume"), None);
        assert_eq!(r.status, 200, "resume: {r}");
        report = r.json();
        println!("resume report: {report}");
        let resumed = report["resumed"]["remaining"]
            .as_u64()
            .expect("resumed.remaining");
        assert!(
            acked_before_resume + resumed <= STOCK,
            "{acked_before_resume} units acknowledged before the resume and {resumed} resumed: \
             more than the stock of {STOCK}"
        );
        assert!(report["units_possibly_lost"].as_u64().is_some(), "{report}");
        assert!(report["last_seen"]["seq"].as_u64().is_some(), "{report}");
        assert!(
            report["regression"]["reason"].as_str().is_some(),
            "{report}"
        );

        // Selling continues on both nodes until sold out.
        let sold_out = poll(BOUND * 2, || {
            let remaining: Option<i64> = redis
                .query(&["GET", &format!("seckill:{{{SKU}}}:remaining")])
                .ok()
                .flatten();
            (remaining == Some(0)).then_some(())
        });
        assert!(sold_out.is_some(), "the resumed sale did not sell out");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });

    let acked = |p: u8| ledger.acked[usize::from(p)].load(Ordering::SeqCst);
    let total = ledger.total();
    let resumed = report["resumed"]["remaining"].as_u64().unwrap_or(0);
    println!(
        "{event:?}: acknowledged {} selling, {} after the event, {} while confirmed regressed, \
         {} after the resume (report said {resumed}); {total} of {STOCK} in all; \
         store_regressed answers after the event: {}",
        acked(SELLING),
        acked(AFTER_EVENT),
        acked(CONFIRMED),
        acked(RESUMED),
        ledger.count(AFTER_EVENT, "store_regressed") + ledger.count(CONFIRMED, "store_regressed"),
    );
    // The event really hit a running sale: the buyers were answered after it, and were refused.
    assert!(
        acked(SELLING) >= 120
            && ledger.count(AFTER_EVENT, "store_regressed")
                + ledger.count(CONFIRMED, "store_regressed")
                > 0,
        "the buyers were not running through the event"
    );
    assert!(
        total <= STOCK,
        "{total} units acknowledged for a stock of {STOCK}: units sold twice"
    );
    assert_eq!(acked(CONFIRMED), 0, "a unit sold while every node refused");
    assert_eq!(
        acked(RESUMED),
        resumed,
        "after the resume, exactly the stated remaining sells"
    );
    let both_resumed = nodes.iter().all(|node| {
        let r = node.client().purchase(SKU, &tok("after"), Some(1), None);
        r.error_code().as_deref() == Some("sold_out")
    });
    assert!(
        both_resumed,
        "both nodes sell (sold out now) after the resume"
    );
    let again = nodes[1]
        .client()
        .admin("POST", &format!("/v1/sales/{SKU}/resume"), None);
    assert_error(&again, 409, "not_regressed");
}

#[test]
fn flushall_mid_sale_is_detected_and_never_resold() {
    run(Event::Flushall);
}

#[test]
fn a_restart_without_persistence_is_detected_and_never_resold() {
    run(Event::RestartWithoutPersistence);
}

#[test]
fn a_restore_of_an_older_rdb_is_detected_and_never_resold() {
    run(Event::RestoreOlderRdb);
}

/// Single-node mode cannot regress (its journal does not lose writes behind its back): a resume
/// is refused there; and the endpoint checks its caller and body like every admin endpoint.
#[test]
fn resume_is_admin_only_and_refused_when_nothing_regressed() {
    let node = Server::start(1, &[]);
    let mut client = node.client();
    client.create_sale(SKU, &sale_spec_opening(-1_000));
    let path = format!("/v1/sales/{SKU}/resume");
    let r = client.authed("POST", &path, &tok("shopper"), None);
    assert_error(&r, 401, "unauthorized");
    let r = client.admin("POST", &path, Some(r#"{"remaining":"lots"}"#));
    assert_error(&r, 400, "bad_request");
    let r = client.admin("POST", &path, Some(r#"{"remaining":5}"#));
    assert_error(&r, 409, "not_regressed");
    let r = client.admin("GET", &path, None);
    assert_eq!(r.status, 405, "{r}");

    // In cluster mode, a SKU whose store did not regress is refused the same way.
    let redis = RedisServer::start(&[]);
    let clustered = Server::start(1, &["--redis", &redis.url()]);
    clustered
        .client()
        .create_sale(SKU, &sale_spec_opening(-1_000));
    let r = clustered.client().admin("POST", &path, None);
    assert_error(&r, 409, "not_regressed");
    let r = clustered
        .client()
        .admin("POST", "/v1/sales/nosuch/resume", None);
    assert_error(&r, 409, "not_regressed");
}
