//! `cargo bench --bench map_growth`: the worst single insert while a map of orders grows to two
//! million entries, for one `HashMap` and for the [`SegmentedMap`] the owner shard uses.
//!
//! A `HashMap` doubles all at once, so one purchase can stall its shard while every entry is
//! rehashed into freshly faulted memory; segments grow one at a time. The figure that matters is
//! the worst insert (a stall every connection of the shard waits out), not the mean.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use seckill::sale::segmented::SegmentedMap;

/// Roughly the size of an order record.
#[derive(Clone)]
struct OrderLike {
    _fields: [u64; 12],
    _sku: Box<str>,
}

const ENTRIES: u128 = 2_000_000;

fn key(i: u128) -> u128 {
    // Spread like the random part of an order id.
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
}

fn value(i: u128) -> OrderLike {
    OrderLike {
        _fields: [i as u64; 12],
        _sku: "moutai-2026".into(),
    }
}

/// Inserts `ENTRIES` with `insert`; returns (total ms, worst single insert in µs).
fn measure(mut insert: impl FnMut(u128, OrderLike)) -> (u128, u128) {
    let started = Instant::now();
    let mut worst = 0;
    for i in 0..ENTRIES {
        let entry = value(i);
        let one = Instant::now();
        insert(key(i), entry);
        worst = worst.max(one.elapsed().as_micros());
    }
    (started.elapsed().as_millis(), worst)
}

fn main() {
    println!("inserting {ENTRIES} order-sized entries");
    for round in 1..=2 {
        let mut plain = HashMap::new();
        let (total, worst) = measure(|k, v| {
            plain.insert(k, v);
        });
        println!("round {round}  HashMap       total {total:>5} ms  worst insert {worst:>7} us");
        drop(black_box(plain));
        let mut segmented = SegmentedMap::new();
        let (total, worst) = measure(|k, v| {
            segmented.insert(k, v);
        });
        println!("round {round}  SegmentedMap  total {total:>5} ms  worst insert {worst:>7} us");
        drop(black_box(segmented));
    }
}
