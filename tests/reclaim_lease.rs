//! The reclaimer lease (`src/store/redis/reclaim.rs`): per SKU, one node sweeps due orders and
//! the others only watch; the holder's death or drain hands the sweep on, and due orders still
//! expire exactly once.
//!
//! Real `seckill` processes, real HTTP, one real `redis-server`. Time bounds are only "gave up"
//! limits; the assertions are on counts read from Redis (`INFO commandstats`, the SKU's keys).

mod common;

use common::redis::RedisServer;
use common::redis::{query_ok, sku_key};
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// "Gave up" bound for anything that should take a few owner ticks and one lease lifetime.
const WAIT: Duration = Duration::from_secs(60);

/// The lease's value (the holder's token: `host/pid N shard S #random`), if any.
fn lease(port: u16, sku: &str) -> Option<String> {
    query_ok(port, &["GET", &sku_key(sku, "reclaim:lease")])
}

/// The pid named in a lease token.
#[track_caller]
fn pid_of(token: &str) -> u32 {
    token
        .split("/pid ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("lease token without a pid: {token:?}"))
}

/// `calls` of each command in `INFO commandstats`.
fn command_calls(port: u16) -> HashMap<String, u64> {
    let info: String = query_ok(port, &["INFO", "commandstats"]);
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

fn sale_with_timeout(stock: u64, payment_timeout_ms: u64) -> Value {
    let mut spec = sale_spec(stock, 1);
    spec["payment_timeout_ms"] = json!(payment_timeout_ms);
    spec
}

/// Waits until `sku`'s lease is held, and answers the holder's token.
#[track_caller]
fn holder(port: u16, sku: &str, servers: &[&Server]) -> String {
    poll(WAIT, || lease(port, sku)).unwrap_or_else(|| {
        let logs: Vec<String> = servers.iter().map(|s| s.log()).collect();
        panic!("nobody took the lease of {sku} within {WAIT:?}; logs:\n{logs:#?}")
    })
}

/// Three nodes on one Redis, idle open sales: per SKU, only the lease's holder sweeps, and an
/// idle SKU costs no `SYNC` per node per tick. Measured over a few seconds against the owner
/// ticks that elapsed (10 per second; a loaded machine ticks less, never more, so the bounds
/// only get easier):
/// - sweeps (`ZRANGEBYSCORE`, run only by `SYNC`'s sweep): at most one per SKU per tick, three
///   when every node sweeps every tick;
/// - sweeps against the holder's renewals and takings of the lease (each sweep comes with one);
/// - script calls: at most half a tick's worth per SKU and node, one when every node runs
///   `SYNC` every tick. (Idle SKUs are polled in batches, so `MGET` calls are no clock.)
///
/// The absolute rates per SKU are printed.
#[test]
fn only_the_lease_holder_sweeps_among_three_nodes() {
    const SKUS: usize = 6;
    const WINDOW: Duration = Duration::from_secs(3);
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(1, &["--redis", &url]))
        .collect();
    let skus: Vec<String> = (0..SKUS).map(|i| format!("lease-{i}")).collect();
    for sku in &skus {
        nodes[0].client().create_sale(sku, &sale_spec(100, 1));
    }
    let all: Vec<&Server> = nodes.iter().collect();
    for sku in &skus {
        holder(redis.port, sku, &all);
    }
    // Every node has seen every SKU once (its first, full read) before the window opens.
    std::thread::sleep(Duration::from_secs(1));
    let _: String = query_ok(redis.port, &["CONFIG", "RESETSTAT"]);
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let calls = command_calls(redis.port);
    let secs = started.elapsed().as_secs_f64();
    let count = |name: &str| calls.get(name).copied().unwrap_or(0);
    let (evalsha, mget, sweeps) = (count("evalsha"), count("mget"), count("zrangebyscore"));
    let rate = |n: u64| n as f64 / secs / SKUS as f64;
    eprintln!(
        "{SKUS} idle SKUs, 3 nodes, {secs:.2} s, per SKU per second: sweeps {:.1}, EVALSHA {:.1}, \
         MGET {:.1}; all calls: {calls:?}",
        rate(sweeps),
        rate(evalsha),
        rate(mget)
    );
    assert!(mget > 0, "no sync at all in the window: {calls:?}");
    // Owner ticks in the window, per node.
    let ticks = secs * 10.0;
    assert!(
        sweeps as f64 <= ticks * SKUS as f64,
        "more than one node per SKU sweeps: {sweeps} sweeps in {ticks:.0} ticks of {SKUS} SKUs; \
         all calls: {calls:?}"
    );
    // Inside `SYNC`, a holder's renewal is a PEXPIRE and a taking is a SET (no other script
    // writes either on idle SKUs), and only those calls sweep.
    let (renewals, takings) = (count("pexpire"), count("set"));
    assert!(
        sweeps <= renewals + takings,
        "sweeps by callers that do not hold the lease: {sweeps} sweeps, {renewals} renewals, \
         {takings} takings; all calls: {calls:?}"
    );
    assert!(
        evalsha as f64 <= ticks * SKUS as f64 * 3.0 / 2.0,
        "idle SKUs still cost a SYNC per node per tick: {evalsha} EVALSHA in {ticks:.0} ticks of \
         {SKUS} SKUs on 3 nodes; all calls: {calls:?}"
    );
}

/// The holder is killed (-9) while orders are pending: another node takes the lease (a new
/// token, a higher fencing number) and expires every due order exactly once.
///
/// What each check catches: no takeover (a lease that never lapses, or watchers that never try
/// to take a free one); `remaining` not back at stock (nobody sweeps); more than one `expired`
/// entry per order or `remaining` above stock (an order expired twice).
#[test]
fn the_lease_passes_on_when_its_holder_dies_and_orders_expire_once() {
    const STOCK: u64 = 20;
    const N: usize = 8;
    /// Long enough that the purchases are all made, and checked pending, before any deadline.
    const TIMEOUT_MS: u64 = 4000;
    let sku = "handover";
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let mut nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(1, &["--redis", &url]))
        .collect();
    nodes[0]
        .client()
        .create_sale(sku, &sale_with_timeout(STOCK, TIMEOUT_MS));
    let first = {
        let all: Vec<&Server> = nodes.iter().collect();
        holder(redis.port, sku, &all)
    };
    let dead = nodes
        .iter()
        .position(|node| node.pid() == pid_of(&first))
        .unwrap_or_else(|| panic!("lease {first:?} names none of the three nodes"));
    let survivor = (dead + 1) % 3;
    let fence_before: i64 = query_ok(redis.port, &["GET", &sku_key(sku, "reclaim:fence")]);

    let mut client = nodes[survivor].client();
    for i in 0..N {
        let order = client.buy(sku, &tok(&format!("buyer-{i}")), 1);
        assert_eq!(order["status"], json!("pending"), "new order: {order}");
    }
    let pending = redis
        .orders(sku)
        .values()
        .filter(|raw| common::redis::stored_order(raw)["status"] == "pending")
        .count();
    assert_eq!(
        pending, N,
        "precondition: all {N} orders pending just before the holder is killed"
    );
    nodes[dead].kill9();

    let next = poll(WAIT, || {
        lease(redis.port, sku).filter(|token| pid_of(token) != pid_of(&first))
    });
    let Some(next) = next else {
        panic!(
            "no node took the lease over from the killed holder within {WAIT:?} (still {:?}); \
             survivor log:\n{}",
            lease(redis.port, sku),
            nodes[survivor].log()
        );
    };
    let fence_after: i64 = query_ok(redis.port, &["GET", &sku_key(sku, "reclaim:fence")]);
    assert!(
        fence_after > fence_before,
        "the new holder {next:?} did not take a higher fencing number ({fence_before} -> {fence_after})"
    );

    let back = poll(WAIT, || {
        let remaining: Option<i64> = query_ok(redis.port, &["GET", &sku_key(sku, "remaining")]);
        (remaining.unwrap_or(0) >= STOCK as i64).then_some(())
    });
    assert!(
        back.is_some(),
        "stock did not come back within {WAIT:?}; survivor log:\n{}",
        nodes[survivor].log()
    );
    // Room for a second sweeper to expire something again.
    std::thread::sleep(Duration::from_millis(600));
    let entries: Vec<(String, HashMap<String, String>)> =
        query_ok(redis.port, &["XRANGE", &sku_key(sku, "events"), "-", "+"]);
    let expired = entries
        .iter()
        .filter(|(_, fields)| fields.get("event").map(String::as_str) == Some("expired"))
        .count();
    assert_eq!(expired, N, "`expired` stream entries, one per order");
    let remaining: i64 = query_ok(redis.port, &["GET", &sku_key(sku, "remaining")]);
    assert_eq!(remaining, STOCK as i64, "stock returned once per order");
    assert_eq!(
        client.remaining(sku),
        STOCK as i64,
        "remaining via a survivor"
    );
}

/// A node that drains gives its leases up (compare-and-delete) before it exits, so the lease
/// no longer names it once it is gone: without the release it would, for the lease's lifetime.
#[test]
fn a_draining_node_releases_its_lease() {
    let sku = "release";
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let mut nodes: Vec<Server> = (0..2)
        .map(|_| Server::start(1, &["--redis", &url]))
        .collect();
    nodes[0].client().create_sale(sku, &sale_spec(10, 1));
    let first = {
        let all: Vec<&Server> = nodes.iter().collect();
        holder(redis.port, sku, &all)
    };
    let leaving = nodes
        .iter()
        .position(|node| node.pid() == pid_of(&first))
        .unwrap_or_else(|| panic!("lease {first:?} names neither node"));
    let status = nodes[leaving].terminate();
    assert!(status.success(), "drain exit status {status:?}");
    let after = lease(redis.port, sku);
    assert!(
        after
            .as_deref()
            .is_none_or(|token| pid_of(token) != pid_of(&first)),
        "the lease still names the drained node: {after:?}; its log:\n{}",
        nodes[leaving].log()
    );
    // And the other node takes it.
    let taken = poll(WAIT, || {
        lease(redis.port, sku).filter(|token| pid_of(token) != pid_of(&first))
    });
    assert!(taken.is_some(), "the remaining node never took the lease");
}
