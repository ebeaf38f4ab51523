//! Fail fast: a purchase waits on a stalled Redis for one attempt within `--redis-budget-ms`,
//! not for several attempts of a fixed timeout each.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::redis::{FromRedisValue, RedisServer, Value};
use common::*;

/// How long the proxy holds every chunk: longer than the budget, so every attempt times out,
/// and shorter than the gave-up bounds, so the held commands still reach Redis to be counted.
const STALL: Duration = Duration::from_millis(1500);

/// Scripts Redis ran whose arguments include `needle`, from the slow log (which logs every
/// command when `slowlog-log-slower-than` is 0).
/// Purchase-script calls naming `needle` in the slow log (other scripts, such as the abandon of
/// a purchase answered 503, name the user too).
fn commands_naming(redis: &RedisServer, needle: &str) -> usize {
    let purchase: String = redis
        .query(&["SCRIPT", "LOAD", seckill::store::redis::scripts::PURCHASE])
        .expect("SCRIPT LOAD");
    let entries: Vec<Value> = redis.query(&["SLOWLOG", "GET", "-1"]).expect("SLOWLOG GET");
    entries
        .iter()
        .filter(|entry| {
            let fields: Vec<Value> = FromRedisValue::from_redis_value(entry).expect("an entry");
            let args: Vec<String> = fields
                .get(3)
                .map(|args| FromRedisValue::from_redis_value(args).expect("its arguments"))
                .unwrap_or_default();
            args.first()
                .is_some_and(|name| name.eq_ignore_ascii_case("evalsha"))
                && args.get(1) == Some(&purchase)
                && args.iter().any(|arg| arg == needle)
        })
        .count()
}

/// With Redis stalled behind a proxy, a purchase is answered 503 after one attempt that used
/// the whole budget: exactly one purchase script reaches Redis for it. (A fixed per-attempt
/// timeout, as before, made three attempts and answered after 1.6 s.)
#[test]
fn a_stalled_redis_costs_one_attempt_within_the_budget() {
    let redis = RedisServer::start(&[
        "--slowlog-log-slower-than",
        "0",
        "--slowlog-max-len",
        "100000",
    ]);
    let proxy = Proxy::start(redis.port);
    // The watchdog would replace the stalled connection (dropping what the proxy holds) before
    // the held commands reach Redis; here only the attempts are counted.
    let server = Server::start(
        1,
        &[
            "--redis",
            &proxy.url(),
            "--redis-budget-ms",
            "300",
            "--redis-unresponsive-ms",
            "60000",
        ],
    );
    server.open_sale("stall", 100, 5);
    let mut client = server.client();
    // The first purchase loads the script (NOSCRIPT, then EVALSHA again); the second is what a
    // purchase costs.
    for user in ["loads-the-script", "warm-user"] {
        let warm = client.purchase("stall", &tok(user), Some(1), None);
        assert_status(&warm, 201);
    }
    assert_eq!(
        commands_naming(&redis, "warm-user"),
        1,
        "one script per purchase"
    );

    proxy.set_delay(STALL);
    let started = Instant::now();
    let stalled = client.purchase("stall", &tok("stalled-user"), Some(1), None);
    let answered_after = started.elapsed();
    assert_error(&stalled, 503, "unavailable");
    println!(
        "time to the first 503 with Redis stalled (budget 300 ms): {} ms",
        answered_after.as_millis()
    );
    proxy.set_delay(Duration::ZERO);
    // Everything the proxy held reaches Redis once its delay is over.
    let attempts = poll(Duration::from_secs(30), || {
        std::thread::sleep(STALL * 2);
        Some(commands_naming(&redis, "stalled-user"))
    })
    .unwrap_or_default();
    println!("purchase-script attempts that reached Redis: {attempts}");
    assert_eq!(
        attempts, 1,
        "the first attempt uses the whole budget, so no retry may follow it"
    );
}
