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
    let sha: String = ::redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(PURCHASE)
        .query(&mut conn)
        .map_err(failed)?;
    let mut sale = Sale::new(sha);
    for size in SIZES {
        let mut best = f64::INFINITY;
        for _ in 0..ROUNDS {
            sale.open(&mut conn, 1)?;
            ::redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .exec(&mut conn)
                .map_err(failed)?;
            for _ in 0..CALLS {
                sale.purchase(&mut conn, size, Shoppers::OnePerOrder)?;
            }
            sale.check_every_purchase_made_an_order(&mut conn)?;
            let (usec, calls) = redis.evalsha_usec()?;
            let usec = usec / calls.max(1.0);
            best = best.min(usec);
        }
        println!(
            "PURCHASE alone, {size:>2} purchases per call: {best:>7.1} us per call, {:>5.2} us per purchase (fastest of {ROUNDS} x {CALLS} calls, a different shopper per purchase)",
            best / size as f64
        );
    }
    for shoppers in [Shoppers::OnePerOrder, Shoppers::One] {
        sale.open(&mut conn, MEMORY_ORDERS as u64)?;
        let before = used_memory(&mut conn)?;
        for _ in 0..MEMORY_ORDERS / MEMORY_BATCH {
            sale.purchase(&mut conn, MEMORY_BATCH, shoppers)?;
        }
        sale.check_every_purchase_made_an_order(&mut conn)?;
        let after = used_memory(&mut conn)?;
        let mut per_key = Vec::new();
        for (name, key) in seckill::store::redis::keys::SKU_KEY_NAMES
            .iter()
            .zip(&sale.keys)
        {
            let bytes: Option<u64> = ::redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query(&mut conn)
                .map_err(failed)?;
            if let Some(bytes) = bytes.filter(|&b| b > 1000) {
                per_key.push(format!("{name} {:.0}", bytes as f64 / MEMORY_ORDERS as f64));
            }
        }
        println!(
            "Redis memory per order, {MEMORY_ORDERS} orders by {MEMORY_BATCH} per call, {}: {:.0} B (used_memory); by key: {}",
            shoppers.label(),
            after.saturating_sub(before) as f64 / MEMORY_ORDERS as f64,
            per_key.join(", ")
        );
    }
    Ok(())
}

/// Orders made for the memory figure: the "measured over 100k orders".
const MEMORY_ORDERS: usize = 100_000;
/// Purchases per call for the memory figure: about what a node batches under `wrk -c64`.
const MEMORY_BATCH: usize = 16;

/// Who buys.
#[derive(Clone, Copy)]
enum Shoppers {
    /// A different shopper per order, as in a real flash sale with a limit of one.
    OnePerOrder,
    /// One shopper for every order (the per-user limit lifted), as `wrk` with one token does.
    One,
}

impl Shoppers {
    fn label(self) -> &'static str {
        match self {
            Self::OnePerOrder => "a different shopper per order",
            Self::One => "one shopper",
        }
    }
}

/// One sale the bench buys from, and the node's view of it that every call carries.
struct Sale {
    sha: String,
    keys: Vec<String>,
    rng: rand::rngs::SmallRng,
    /// Shoppers used so far, so that every round's shoppers are new.
    shopper: u64,
    /// The node's view: the start, the stock, the seq it saw, the last id's millisecond.
    starts_at: u64,
    stock: u64,
    seq: u64,
    at: u64,
}

impl Sale {
    fn new(sha: String) -> Self {
        Self {
            sha,
            keys: redis_server::script_keys(SKU),
            rng: rand::rngs::SmallRng::seed_from_u64(1),
            shopper: 0,
            starts_at: 0,
            stock: 0,
            seq: 0,
            at: 0,
        }
    }

    /// Empties Redis and opens the sale as the node's UPSERT writes it, with a per-user limit of
    /// `limit`.
    fn open(&mut self, conn: &mut ::redis::Connection, limit: u64) -> Result<(), String> {
        let now = seckill::clock::now_ms();
        ::redis::cmd("FLUSHALL").exec(conn).map_err(failed)?;
        ::redis::cmd("HSET")
            .arg(&self.keys[0])
            .arg(&[
                ("starts_at", (now - 1000).to_string()),
                ("ends_at", (now + 3_600_000).to_string()),
                ("per_user_limit", limit.to_string()),
                ("payment_timeout_ms", "900000".to_owned()),
                ("price", "0".to_owned()),
                ("epoch", "1".to_owned()),
            ])
            .exec(conn)
            .map_err(failed)?;
        self.stock = 1_000_000_000;
        ::redis::cmd("MSET")
            .arg(&self.keys[1])
            .arg(self.stock)
            .arg(&self.keys[2])
            .arg(0)
            .exec(conn)
            .map_err(failed)?;
        (self.starts_at, self.seq, self.at) = (now - 1000, 0, now);
        Ok(())
    }

    /// One call of `size` purchases of one unit, as a node sends them under load: the ids of a
    /// call are minted in one millisecond, the next call's in the next.
    fn purchase(
        &mut self,
        conn: &mut ::redis::Connection,
        size: usize,
        shoppers: Shoppers,
    ) -> Result<(), String> {
        let mut call = ::redis::cmd("EVALSHA");
        call.arg(&self.sha).arg(self.keys.len()).arg(&self.keys);
        call.arg(1000).arg(size);
        self.at += 1;
        for _ in 0..size {
            if let Shoppers::OnePerOrder = shoppers {
                self.shopper += 1;
            }
            let id = OrderId::mint(SKU, self.at, &mut self.rng);
            call.arg(id.to_string())
                .arg(format!("shopper-{}", self.shopper))
                .arg(1)
                .arg("");
        }
        // The node's last view: this epoch, the seq it saw, the level, the start.
        call.arg(1)
            .arg(self.seq)
            .arg(self.stock - self.seq)
            .arg(self.starts_at)
            .arg("bench");
        let _: ::redis::Value = call.query(conn).map_err(failed)?;
        self.seq += size as u64;
        Ok(())
    }

    /// Every purchase must have made an order, or the figures are of refusals.
    fn check_every_purchase_made_an_order(
        &self,
        conn: &mut ::redis::Connection,
    ) -> Result<(), String> {
        let remaining: u64 = ::redis::cmd("GET")
            .arg(&self.keys[1])
            .query(conn)
            .map_err(failed)?;
        let orders = self.stock - remaining;
        if orders != self.seq {
            return Err(format!(
                "{orders} orders made by {} purchases: the script refused some",
                self.seq
            ));
        }
        Ok(())
    }
}

fn failed(error: ::redis::RedisError) -> String {
    error.to_string()
}

/// Redis' `used_memory`, in bytes.
fn used_memory(conn: &mut ::redis::Connection) -> Result<u64, String> {
    let info: String = ::redis::cmd("INFO")
        .arg("memory")
        .query(conn)
        .map_err(failed)?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| "INFO memory has no used_memory".to_owned())
}
