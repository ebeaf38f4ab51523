//! `cargo bench --bench map_growth`: the worst single insert while a map of orders grows to two
//! million entries, for one `HashMap` and for the [`SegmentedMap`] the owner shard uses.
//!
//! A `HashMap` doubles all at once, so one purchase can stall its shard while every entry is
//! rehashed into freshly faulted memory; segments grow one at a time. The figure that matters is
//! the worst insert (a stall every connection of the shard waits out), not the mean.
//!
//! First it measures memory per order: the bytes a book of a million pending orders holds, and
//! the owner's expiry queue for them, counted by the allocator as live bytes. Then it times
//! `Book::snapshot` on that book: CPU the compaction thread and recovery spend (the shard itself
//! no longer builds snapshots). `MEMORY_ONLY=1` stops after the memory figures.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use seckill::sale::book::{Book, BookLimits};
use seckill::sale::command::{Command, PurchaseRequest};
use seckill::sale::expiry::ExpiryQueue;
use seckill::sale::segmented::SegmentedMap;
use seckill::sale::Sale;

#[path = "../tests/support/counting_allocator.rs"]
mod counting_allocator;
use counting_allocator::{live_bytes, CountingAllocator};

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

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

/// Orders in the book whose snapshot is timed.
const BOOK_ORDERS: u64 = 1_000_000;

/// A book of `BOOK_ORDERS` pending orders from `shoppers` shoppers (each with an equal share).
fn book_of_orders(shoppers: u64) -> Book {
    const NOW_MS: u64 = 1_767_225_600_000;
    let mut book = Book::new(BookLimits::default());
    let sale = Sale {
        sku: "moutai-2026".into(),
        name: "Kweichow Moutai".into(),
        stock: BOOK_ORDERS,
        starts_at: NOW_MS - 60_000,
        ends_at: NOW_MS + 3_600_000,
        per_user_limit: BOOK_ORDERS.div_ceil(shoppers) as u32,
        payment_timeout_ms: 900_000,
        rate_limit_per_sec: 0,
        price: 149_900,
        currency: "CNY".into(),
        stock_buckets: 1,
        pow_bits: 0,
        admission: Default::default(),
        queue_opens_at: 0,
        admission_rate: 0,
        register_from: 0,
        overbooking_percent: 0,
    };
    let (made, _) = book.execute(Command::UpsertSale(sale), NOW_MS - 120_000);
    assert!(made.is_ok(), "the sale: {made:?}");
    for n in 0..BOOK_ORDERS {
        let request = PurchaseRequest::new("moutai-2026", &format!("u-{}", n % shoppers), 1, None)
            .expect("ids fit");
        let (reply, _) = book.execute(Command::Purchase(request), NOW_MS);
        assert!(reply.is_ok(), "purchase {n}: {reply:?}");
    }
    book
}

/// Live bytes per order of a book of `BOOK_ORDERS` pending orders from `shoppers` shoppers, and
/// of the expiry queue holding their deadlines.
fn memory_per_order(shoppers: u64) -> Book {
    let before = live_bytes();
    let book = book_of_orders(shoppers);
    let book_bytes = live_bytes() - before;
    let before = live_bytes();
    let mut expiry = ExpiryQueue::new();
    for (order_id, deadline) in book.pending_deadlines() {
        expiry.schedule(order_id, deadline);
    }
    let expiry_bytes = live_bytes() - before;
    let per = |bytes: i64| bytes as f64 / BOOK_ORDERS as f64;
    println!(
        "{BOOK_ORDERS} pending orders from {shoppers} shopper(s): book {:.0} B/order, expiry queue {:.0} B/order, together {:.0} B/order",
        per(book_bytes),
        per(expiry_bytes),
        per(book_bytes + expiry_bytes)
    );
    drop(black_box(expiry));
    book
}

fn main() {
    drop(memory_per_order(BOOK_ORDERS));
    drop(memory_per_order(1));
    let book = memory_per_order(1_000);
    if std::env::var_os("MEMORY_ONLY").is_some() {
        return;
    }
    for round in 1..=3 {
        let started = Instant::now();
        let events = book.snapshot();
        let took = started.elapsed().as_millis();
        println!(
            "round {round}  Book::snapshot of {BOOK_ORDERS} orders: {took} ms ({} events)",
            events.len()
        );
        drop(black_box(events));
    }
    drop(book);
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
