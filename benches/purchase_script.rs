//! `cargo bench --bench purchase_script`: the Redis CPU of the purchase script alone, per call
//! and per purchase, at several batch sizes.
//!
//! Starts an idle `redis-server`, opens a sale the way the node stores one, then runs the real
//! `PURCHASE` script ([`seckill::store::redis::scripts::PURCHASE`]) with `EVALSHA`, 1,000 calls
//! per batch size, each purchase by a different shopper and ids in time order, as a node sends
//! them under load. Redis' own `usec_per_call` from `INFO commandstats` is the figure; the
//! fastest of three rounds is kept, since the box's other work only ever adds to it. No HTTP and
//! no node: what is left is the script's own cost, the part `cargo bench --bench
//! redis_throughput` cannot separate from Redis sharing the cores with wrk and seckill.

#[path = "../tests/common/ports.rs"]
mod ports;
/// The tests' Redis launcher and client (the `redis` crate), shared so there is one of each.
#[path = "../tests/common/redis.rs"]
mod redis_server;

use rand::SeedableRng;
use seckill::sale::ids::OrderId;
use seckill::store::redis::scripts::PURCHASE;

const SKU: &str = "bench";
/// Calls per round and batch size.
const CALLS: usize = 1000;
/// Rounds per batch size; the fastest is reported.
const ROUNDS: usize = 3;
/// Purchases per call measured.
const SIZES: [usize; 4] = [1, 12, 32, 64];

fn main() {
    if let Err(error) = run() {
        eprintln!("purchase_script: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let redis = redis_server::RedisServer::try_start(&["--appendonly", "no"])?;
    let mut conn = redis_server::connect(redis.port).map_err(|e| e.to_string())?;
    let failed = |e: ::redis::RedisError| e.to_string();
    let sha: String = ::redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(PURCHASE)
        .query(&mut conn)
        .map_err(failed)?;
    let keys = redis_server::script_keys(SKU);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let mut shopper = 0u64;
    for size in SIZES {
        let mut best = f64::INFINITY;
        for _ in 0..ROUNDS {
            let now = seckill::clock::now_ms();
            ::redis::cmd("FLUSHALL").exec(&mut conn).map_err(failed)?;
            // The fields the script reads, as the node's UPSERT writes them.
            ::redis::cmd("HSET")
                .arg(&keys[0])
                .arg(&[
                    ("starts_at", (now - 1000).to_string()),
                    ("ends_at", (now + 3_600_000).to_string()),
                    ("per_user_limit", "1".to_owned()),
                    ("payment_timeout_ms", "900000".to_owned()),
                    ("price", "0".to_owned()),
                    ("epoch", "1".to_owned()),
                ])
                .exec(&mut conn)
                .map_err(failed)?;
            let stock = 1_000_000_000u64;
            ::redis::cmd("MSET")
                .arg(&keys[1])
                .arg(stock)
                .arg(&keys[2])
                .arg(0)
                .exec(&mut conn)
                .map_err(failed)?;
            ::redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .exec(&mut conn)
                .map_err(failed)?;
            let mut seq = 0u64;
            let mut at = now;
            for _ in 0..CALLS {
                let mut call = ::redis::cmd("EVALSHA");
                call.arg(&sha).arg(keys.len()).arg(&keys);
                call.arg(1000).arg(size);
                for _ in 0..size {
                    at += 1;
                    shopper += 1;
                    let id = OrderId::mint(SKU, at, &mut rng);
                    call.arg(id.to_string())
                        .arg(format!("shopper-{shopper}"))
                        .arg(1)
                        .arg("");
                }
                // The node's last view: this epoch, the seq it saw, the level, the start.
                call.arg(1)
                    .arg(seq)
                    .arg(stock - seq)
                    .arg(now - 1000)
                    .arg("bench");
                let _: ::redis::Value = call.query(&mut conn).map_err(failed)?;
                seq += size as u64;
            }
            // Every purchase must have made an order, or the figure is of refusals.
            let orders: usize = ::redis::cmd("HLEN")
                .arg(&keys[5])
                .query(&mut conn)
                .map_err(failed)?;
            if orders != CALLS * size {
                return Err(format!(
                    "{orders} orders made by {} purchases: the script refused some",
                    CALLS * size
                ));
            }
            let (usec, calls) = redis.evalsha_usec()?;
            let usec = usec / calls.max(1.0);
            best = best.min(usec);
        }
        println!(
            "PURCHASE alone, {size:>2} purchases per call: {best:>7.1} us per call, {:>5.2} us per purchase (fastest of {ROUNDS} x {CALLS} calls, a different shopper per purchase)",
            best / size as f64
        );
    }
    Ok(())
}
