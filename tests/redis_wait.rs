//! `--redis-wait` without a failover: a 201 or 200 means a replica already has the write, no
//! replica means 503 for purchases, payments and cancellations, and `seckill doctor` says when the
//! setting does not fit the master's replicas. (The failovers themselves: `redis_failover.rs`.)

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::sentinel::{Sentinel, SentinelTimings};
use common::*;

/// Only a "gave up" bound.
const BOUND: Duration = Duration::from_secs(60);

/// A master and `n` replicas, each done with its initial sync.
fn replicated(n: usize) -> (RedisServer, Vec<RedisServer>) {
    let master = RedisServer::start(&[]);
    let port = master.port.to_string();
    let replicas: Vec<RedisServer> = (0..n)
        .map(|_| RedisServer::start(&["--replicaof", "127.0.0.1", &port]))
        .collect();
    let linked = poll(BOUND, || {
        let up = master
            .query::<String>(&["INFO", "replication"])
            .is_ok_and(|info| info.matches("state=online").count() == n);
        up.then_some(())
    });
    assert!(linked.is_some(), "replicas never connected");
    (master, replicas)
}

fn order_on(redis: &RedisServer, sku: &str, id: &str) -> Option<serde_json::Value> {
    redis
        .order(sku, id)
        .map(|raw| common::redis::stored_order(&raw))
}

#[test]
fn a_replica_has_every_acknowledged_write_and_without_one_nothing_is_acknowledged() {
    let (master, mut replicas) = replicated(1);
    let node = Server::start(
        2,
        &[
            "--redis",
            &master.url(),
            "--redis-wait",
            "1",
            // Generous: a sale PUT waits for the replica too, on a loaded machine.
            "--redis-wait-timeout-ms",
            "300",
        ],
    );
    node.open_sale("w", 100, 1);
    common::edge::wait_until_open(&[&node], "w", BOUND);
    let mut client = node.client();
    // Read from the replica the moment the answer arrives: WAIT returned only once the replica
    // had processed the write.
    let paid = order_id(&client.buy("w", &tok("payer"), 1));
    assert!(
        order_on(&replicas[0], "w", &paid).is_some(),
        "201 before the replica had the order"
    );
    let r = client.pay(&paid);
    assert_eq!(r.status, 200, "{r}");
    let on_replica = order_on(&replicas[0], "w", &paid).expect("the paid order");
    assert_eq!(
        on_replica["status"], "paid",
        "200 before the replica had the payment"
    );
    // A master without the scripts (restarted, failed over) gets them loaded again.
    let flushed: String = master.query(&["SCRIPT", "FLUSH"]).expect("SCRIPT FLUSH");
    assert_eq!(flushed, "OK");
    let pending = order_id(&client.buy("w", &tok("canceller"), 1));
    assert!(order_on(&replicas[0], "w", &pending).is_some());

    replicas[0].kill9();
    let orders_before = master.orders("w").len();
    let r = client.purchase("w", &tok("unconfirmed"), Some(1), None);
    assert_error(&r, 503, "unavailable");
    let orders_after = master.orders("w").len();
    assert_eq!(
        orders_after,
        orders_before + 1,
        "the unacknowledged order stays on the master"
    );
    let r = client.cancel(&pending, &tok("canceller"));
    assert_error(&r, 503, "unavailable");
}

/// `seckill doctor` output for `--redis url` plus `args`.
fn doctor(url: &str, args: &[&str]) -> String {
    let out = common::process::run(
        std::process::Command::new(BIN)
            .arg("doctor")
            .args(["--redis", url])
            .args(args)
            .env_remove("SECKILL_REDIS")
            .env_remove("SECKILL_REDIS_WAIT")
            .env_remove("SECKILL_CONFIG"),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `replication` check's line and its fix.
fn replication_check(text: &str) -> String {
    let mut lines = text
        .lines()
        .skip_while(|line| !line.contains("replication"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no replication check in:\n{text}"));
    let fix = lines
        .next()
        .filter(|line| line.contains("fix:"))
        .unwrap_or("");
    format!("{first}\n{fix}")
}

#[test]
fn doctor_warns_when_redis_wait_is_0_and_the_master_has_replicas() {
    let (master, _replicas) = replicated(2);
    let sentinel = match Sentinel::start(master.port, SentinelTimings::default()) {
        Ok(sentinel) => sentinel,
        Err(why) => return skip_unless_required("SECKILL_REQUIRE_SENTINEL", &why),
    };
    for url in [master.url(), sentinel.url()] {
        let zero = replication_check(&doctor(&url, &[]));
        assert!(
            zero.starts_with("WARN") && zero.contains("2 replica(s)") && zero.contains("lose"),
            "{url} with --redis-wait 0: {zero}"
        );
        let one = replication_check(&doctor(&url, &["--redis-wait", "1"]));
        assert!(one.starts_with("pass"), "{url} with --redis-wait 1: {one}");
        let three = replication_check(&doctor(&url, &["--redis-wait", "3"]));
        assert!(
            three.starts_with("FAIL") && three.contains("503"),
            "{url} with --redis-wait 3: {three}"
        );
    }
    let alone = RedisServer::start(&[]);
    let none = replication_check(&doctor(&alone.url(), &[]));
    assert!(
        none.starts_with("pass"),
        "no replicas, --redis-wait 0: {none}"
    );
}

/// Three masters with a replica each; `None` (skipped) without redis-cli.
fn cluster_with_replicas() -> Option<Vec<RedisServer>> {
    use common::redis_cluster::{try_start, ClusterError, ClusterSpec};
    let spec = ClusterSpec {
        replicas: 1,
        extra: vec!["--enable-debug-command", "yes"],
        ..ClusterSpec::default()
    };
    match try_start(&spec) {
        Ok(nodes) => Some(nodes),
        Err(ClusterError::NoRedisCli(e)) => {
            skip(&format!("redis-cli cannot run: {e}"));
            None
        }
        Err(ClusterError::Failed(e)) => panic!("{e}"),
    }
}

/// `INFO replication` field `name` of `node`.
fn info_field(node: &RedisServer, name: &str) -> Option<String> {
    let info: String = node.query(&["INFO", "replication"]).ok()?;
    info.lines().find_map(|line| {
        line.trim()
            .strip_prefix(&format!("{name}:"))
            .map(str::to_owned)
    })
}

/// On Redis Cluster, `WAIT` goes to the master that ran the script: with the replica of one
/// SKU's master asleep, that SKU answers 503 while SKUs on the other masters sell. A `WAIT` sent
/// to any other node would count that node's replica and answer 201.
#[test]
fn on_redis_cluster_the_wait_goes_to_the_skus_master() {
    let Some(nodes) = cluster_with_replicas() else {
        return;
    };
    let masters: Vec<&RedisServer> = nodes
        .iter()
        .filter(|node| info_field(node, "role").as_deref() == Some("master"))
        .collect();
    assert_eq!(masters.len(), 3, "three masters");
    // One SKU per master: the slot owner of each SKU's hash tag.
    let mut sku_of_master: Vec<Option<String>> = vec![None; 3];
    for n in 0..200 {
        let sku = format!("sku{n}");
        let slot: i64 = masters[0]
            .query(&["CLUSTER", "KEYSLOT", &sku])
            .expect("KEYSLOT");
        let owner_port = common::redis_cluster::slot_owner(masters[0].port, slot);
        let owner = masters.iter().position(|master| master.port == owner_port);
        if let Some(owner) = owner {
            sku_of_master[owner].get_or_insert(sku);
        }
        if sku_of_master.iter().all(Option::is_some) {
            break;
        }
    }
    let skus: Vec<String> = sku_of_master
        .into_iter()
        .map(|s| s.expect("a SKU per master"))
        .collect();
    let url = format!(
        "redis-cluster://{}",
        masters
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let node = Server::start(
        2,
        &[
            "--redis",
            &url,
            "--redis-wait",
            "1",
            // Generous: a sale PUT waits for the replica too, on a loaded machine.
            "--redis-wait-timeout-ms",
            "300",
        ],
    );
    for sku in &skus {
        node.open_sale(sku, 100, 1);
    }
    for sku in &skus {
        common::edge::wait_until_open(&[&node], sku, BOUND);
    }
    let mut client = node.client();
    for sku in &skus {
        client.buy(sku, &tok("before"), 1);
    }
    // Put master 0's replica to sleep; its master's WAIT cannot be answered meanwhile.
    let sleeper = nodes
        .iter()
        .find(|node| {
            info_field(node, "master_port").as_deref() == Some(&masters[0].port.to_string())
        })
        .expect("the replica of master 0");
    let sleeper_port = sleeper.port;
    let sleeping = std::thread::spawn(move || {
        let _: Result<String, _> = common::redis::query(sleeper_port, &["DEBUG", "SLEEP", "3"]);
    });
    std::thread::sleep(Duration::from_millis(200));
    let r = client.purchase(&skus[0], &tok("during"), Some(1), None);
    assert_error(&r, 503, "unavailable");
    for sku in &skus[1..] {
        let r = client.purchase(sku, &tok("during"), Some(1), None);
        assert_eq!(
            r.status, 201,
            "{sku} on a master whose replica is awake: {r}"
        );
    }
    sleeping.join().expect("DEBUG SLEEP");
}

/// A sale PUT whose `WAIT` timed out took effect on the master all the same, and the node runs
/// the script again (within its retry budget). That run must answer as the first did: the sale
/// it made has started, and without the PUT's id the run refused it as `sale_exists`, so the
/// operator was told 409 for their own new sale (seen in CI, on a loaded machine). Another PUT
/// of a started sale is still refused. The script is run by hand: which attempt's `WAIT` times
/// out is not something a test can choose.
#[test]
fn a_sale_put_run_again_answers_as_its_first_run_did() {
    let redis = RedisServer::start(&[]);
    let keys = common::redis::script_keys("again");
    let count = keys.len().to_string();
    let now = now_ms();
    let (starts, ends) = ((now - 1000).to_string(), (now + 3_600_000).to_string());
    let upsert = |put_id: &str| -> Vec<common::redis::Value> {
        let mut argv = vec!["EVAL", seckill::store::redis::scripts::UPSERT, &count];
        argv.extend(keys.iter().map(String::as_str));
        argv.extend([
            "sale",
            "10",
            &starts,
            &ends,
            "1",
            "900000",
            "0",
            "0",
            "CNY",
            "{}",
            "1",
            "10",
            put_id,
            "blocked-user",
        ]);
        redis.query(&argv).expect("EVAL UPSERT")
    };
    let ok = common::redis::Value::BulkString(b"ok".to_vec());
    let first = upsert("put-1");
    assert_eq!(first[0], ok, "{first:?}");
    let again = upsert("put-1");
    assert_eq!(
        again, first,
        "the same PUT run again answers as its first run"
    );
    let other = upsert("put-2");
    assert_eq!(
        other[1],
        common::redis::Value::BulkString(b"sale_exists".to_vec()),
        "another PUT of the started sale: {other:?}"
    );
    assert_eq!(
        redis.integer(&["SISMEMBER", &keys[7], "blocked-user"]),
        Some(1),
        "the blocklist argument follows the PUT's id"
    );
}
