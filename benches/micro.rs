//! Micro-benchmarks of the per-request hot path of a flash sale, one piece at a time.
//!
//! In a flash sale nearly every request arrives in the same few seconds and most of them are
//! refused, so what matters is the cost of each step a request takes before it is answered.
//! Each group below measures one step and reports throughput, so the figures read directly as
//! "requests (or bytes) per second one core could do if it did nothing else":
//!
//! - `admission/*`: the shard-local token bucket that sheds over-rate purchases before any
//!   cross-shard hop (`TokenBucket::try_take`, admitted and refused), and the max-min
//!   `fair_share` computation each shard runs every tick to split a sale's rate (2 and 16
//!   shards, with demand above the rate so the sort path runs).
//! - `routing/owner_of`: hashing a SKU to its owner shard (xxh3), done for every SKU-bound
//!   request; measured over a set of realistic SKUs.
//! - `reply/*`: the round trip of a routed call's answer: a `futures` oneshot (allocated per
//!   call) against a pooled slot (`seckill::shard::reply`, a `sharded_slab::Pool`), on one
//!   thread (the bookkeeping alone) and from an owner thread to a caller thread spinning on
//!   both sides (no futex in the way). Before the groups run, the allocations per round trip
//!   of each are counted by this binary's counting allocator
//!   (`tests/support/counting_allocator.rs`) and printed.
//! - `feed/*`: handing a batch of 256 order events (the embedded store's batch) from a shard to
//!   the order feed's publisher thread, which reads each and lets it go: cloning the events
//!   (`handoff_clone`, what the shards did) against copying them into pooled slots that the
//!   publisher gives back (`handoff_pooled`, `seckill::feed::handoff`, a `sharded_slab::Pool`).
//!   Each batch ends when the publisher has let it go, so both sides' costs count. Allocations
//!   per event are counted first and printed.
//! - `auth/verify_shopper_token`: checking the HMAC-signed bearer token every purchase carries,
//!   before anything else is looked at.
//! - `pow/*`: proof-of-work (`seckill::sale::pow`). `verify_16_bits` is what the edge does
//!   with a purchase's `X-Seckill-Pow` (one HMAC for the challenge, one SHA-256 of it and the
//!   nonce); `hash` is one attempt of a solver, so `2^bits` times it is a native client's
//!   expected cost to solve at `bits`.
//! - `http/*`: parsing a realistic purchase request (`POST /v1/sales/moutai-2026/purchase` with
//!   Host, User-Agent, Accept, a real signed bearer token, Content-Type, Idempotency-Key,
//!   Content-Length and a small JSON body), alone and as a pipelined batch of 16 walked the way
//!   the connection loop walks its read buffer.
//! - `json/*`: reading a purchase body (`{"quantity":1}`) the way the handler does
//!   (`purchase_body`: a tape in reused buffers, no allocation) and the way every other body is
//!   read (`purchase_body_tree`: `json_fields` copies the body, since simd-json parses in place,
//!   builds a value tree, then typed field reads and `finish` to reject unknown fields), and an
//!   admin sale definition the latter way.
//! - `owner/*`: one `Book::execute(Command::Purchase(..))` on the owner shard, the serialised
//!   step every successful purchase of a SKU goes through: by a user who holds nothing yet (new
//!   holder entry), by a user who already holds units (existing entry), and refused because the
//!   sale is sold out (the common answer once stock is gone).
//! - `journal/*`: the durable journal. `append` encodes an `OrderCreated` event into the pending
//!   buffer (postcard + crc32c), the cost paid per change on the owner; `group_commit_sync_64`
//!   appends 64 records and commits them with one DMA write and one `fdatasync`, as the journal
//!   does when a burst of purchases shares a commit; `group_commit_sync_1` is the same with a
//!   single record, to show what grouping saves.
//!
//! The journal benchmarks need a directory that supports O_DIRECT (not tmpfs): they use
//! `$SECKILL_BENCH_DIR` if set, else the system temporary directory, and remove what they create.

#[path = "../tests/support/counting_allocator.rs"]
mod counting_allocator;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use futures::channel::oneshot;
use glommio::{LocalExecutor, LocalExecutorBuilder};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use seckill::api::body::json_fields;
use seckill::api::{parse_purchase, parse_sale};
use seckill::auth::{Auth, Principal};
use seckill::feed::handoff;
use seckill::feed::outbox::Outbox;
use seckill::feed::FeedEvent;
use seckill::http::request::{parse, Parsed};
use seckill::http::{Method, Request};
use seckill::sale::admission::{fair_share, TokenBucket};
use seckill::sale::book::{Book, BookLimits};
use seckill::sale::command::{Command, Event, PurchaseRequest};
use seckill::sale::ids::OrderId;
use seckill::sale::pow;
use seckill::sale::{Order, OrderStatus, Sale, SaleError};
use seckill::shard::placement::owner_of;
use seckill::shard::reply::{self, Slots};
use seckill::store::embedded::FeedOptions;
use seckill::store::journal::compaction::Rebuild;
use seckill::store::journal::recovery::check_direct_io;
use seckill::store::journal::{Durability, Journal, JournalStart};
use seckill::store::{EmbeddedStore, Store};

use counting_allocator::{process_allocations, CountingAllocator};

/// A fixed "now" in the middle of the sale window, in milliseconds since the epoch.
const NOW_MS: u64 = 1_767_225_600_000;
/// The SKU every purchase targets.
const SKU: &str = "moutai-2026";
/// The shard count of this machine (2 cores).
const SHARDS: usize = 2;
/// Purchase body as a shopper app sends it.
const PURCHASE_BODY: &[u8] = br#"{"quantity":1}"#;
/// Sale definition as an admin sends it with `PUT /v1/sales/{sku}`.
const SALE_BODY: &[u8] = br#"{"name":"Kweichow Moutai 53% 500ml (2026 Year of the Horse)","stock":10000,"starts_at":1767225600000,"ends_at":1767229200000,"per_user_limit":2,"payment_timeout_ms":900000,"rate_limit_per_sec":50000}"#;
/// Requests in the pipelined batch.
const PIPELINED: usize = 16;
/// Journal segment size, the server's default.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Appends between commits in `journal/append`, so the pending buffer stays bounded.
const COMMIT_EVERY: u64 = 1024;
/// io_uring buffer memory for the bench executor: small enough to fit the default 8 MiB
/// RLIMIT_MEMLOCK, so glommio registers it instead of silently falling back.
const IO_MEMORY: usize = 4 << 20;

/// Short runs: the machine has 2 cores and the whole file should finish in about a minute.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

// ---------------------------------------------------------------------------------------------
// admission

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();

    // A rate so high the bucket never runs dry: every call takes the admit path.
    let mut open = TokenBucket::new(1e15, now);
    group.bench_function("token_bucket_admit", |b| {
        b.iter(|| black_box(open.try_take(black_box(now))))
    });

    // An empty bucket at a fixed instant: every call is refused with a retry-after.
    let mut dry = TokenBucket::new(100.0, now);
    while dry.try_take(now).is_ok() {}
    group.bench_function("token_bucket_refuse", |b| {
        b.iter(|| black_box(dry.try_take(black_box(now))))
    });

    // Demand above the rate, so the max-min sort runs (the flash-sale case).
    let two = [12_000.0, 45_000.0];
    group.bench_function("fair_share_2_shards", |b| {
        b.iter(|| {
            black_box(fair_share(
                black_box(50_000.0),
                black_box(&two),
                black_box(1),
            ))
        })
    });
    let sixteen: Vec<f64> = (0..16)
        .map(|n| 1_000.0 + 977.0 * ((n * 7) % 16) as f64)
        .collect();
    group.bench_function("fair_share_16_shards", |b| {
        b.iter(|| {
            black_box(fair_share(
                black_box(10_000.0),
                black_box(&sixteen),
                black_box(5),
            ))
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// routing

/// Realistic SKUs: brand, model and variant slugs as a retailer would name them.
fn skus() -> Vec<String> {
    let brands = [
        "moutai", "apple", "sony", "nintendo", "dyson", "lego", "nike", "xiaomi",
    ];
    let models = [
        "feitian-53-500ml",
        "iphone-17-pro-256gb",
        "ps5-slim-digital",
        "switch-2-mario-kart-bundle",
        "v15-detect-absolute",
        "technic-42171-mercedes-w14",
        "air-jordan-1-retro-high-og",
        "su7-ultra-die-cast",
    ];
    let variants = ["2026", "black", "eu", "limited-edition"];
    let mut skus = Vec::new();
    for brand in brands {
        for model in models {
            for variant in variants {
                skus.push(format!("{brand}-{model}-{variant}"));
            }
        }
    }
    skus
}

fn routing(c: &mut Criterion) {
    let skus = skus();
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(skus.len() as u64));
    group.bench_function("owner_of", |b| {
        b.iter(|| {
            let mut spread = 0usize;
            for sku in &skus {
                spread += owner_of(black_box(sku), black_box(SHARDS));
            }
            black_box(spread)
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// auth and http

fn shopper_token() -> (Auth, String) {
    let auth = Auth::new(
        "adm_9f3c2b7e4a1d8c6f5e0b2a9d7c4e1f83",
        "k4Jr9sV2xQ7mN1pL8wE3tY6uI0oP5aZbC2dF7gH",
    );
    let token = auth.mint("u-20250917-84213", NOW_MS / 1000 + 3600);
    (auth, token)
}

fn auth(c: &mut Criterion) {
    let (auth, token) = shopper_token();
    let header = format!("Bearer {token}").into_bytes();
    let now_secs = NOW_MS / 1000;
    assert!(
        matches!(
            auth.authenticate(Some(&header), now_secs),
            Some(Principal::Shopper(_))
        ),
        "the minted token must verify"
    );
    let mut group = c.benchmark_group("auth");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_shopper_token", |b| {
        b.iter(|| black_box(auth.authenticate(black_box(Some(&header)), black_box(now_secs))))
    });
    group.finish();
}

fn pow(c: &mut Criterion) {
    let (auth, _) = shopper_token();
    let (sku, user) = ("moutai-2026", "u-20250917-84213");
    let window = pow::window_of(NOW_MS);
    let challenge = auth.pow().challenge(sku, user, window);
    let bits = 16;
    let proof = Some(pow::Proof {
        window,
        nonce: pow::solve(&challenge, bits),
    });
    assert!(
        auth.pow().verify(sku, user, proof, bits, NOW_MS),
        "the solution must verify"
    );
    let mut group = c.benchmark_group("pow");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_16_bits", |b| {
        b.iter(|| black_box(auth.pow().verify(sku, user, black_box(proof), bits, NOW_MS)))
    });
    let mut nonce = 0u64;
    group.bench_function("hash", |b| {
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            black_box(pow::meets(&challenge, black_box(nonce), bits))
        })
    });
    group.finish();
}

/// A purchase request as a shopper app sends it.
fn purchase_request(idempotency_key: &str) -> Vec<u8> {
    let (_, token) = shopper_token();
    let body = std::str::from_utf8(PURCHASE_BODY).expect("the body is ASCII");
    format!(
        "POST /v1/sales/{SKU}/purchase HTTP/1.1\r\n\
         Host: shop.example.com\r\n\
         User-Agent: seckill-app/4.12.0 (iOS 19.1; iPhone16,2)\r\n\
         Accept: application/json\r\n\
         Authorization: Bearer {token}\r\n\
         Content-Type: application/json\r\n\
         Idempotency-Key: {idempotency_key}\r\n\
         Content-Length: {}\r\n\
         \r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

fn http(c: &mut Criterion) {
    let one = purchase_request("01K5A7Q2ZJ8W3X9V4N6M0R1T5Y");
    match parse(&one) {
        Ok(Parsed::Complete(request, used)) => {
            assert_eq!(used, one.len(), "the whole buffer is one request");
            assert_eq!(request.method, Method::Post);
            assert_eq!(request.body, PURCHASE_BODY);
        }
        other => panic!("the purchase request must parse, got {other:?}"),
    }
    let mut batch = Vec::new();
    for n in 0..PIPELINED {
        batch.extend_from_slice(&purchase_request(&format!(
            "01K5A7Q2ZJ8W3X9V4N6M0R1T{n:02}"
        )));
    }

    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Bytes(one.len() as u64));
    group.bench_function("parse_purchase", |b| {
        b.iter(|| match parse(black_box(&one)) {
            Ok(Parsed::Complete(request, used)) => {
                black_box(&request);
                used
            }
            _ => unreachable!("checked above"),
        })
    });

    // Elements: requests per second out of one read buffer holding a pipelined batch.
    group.throughput(Throughput::Elements(PIPELINED as u64));
    group.bench_function("parse_pipelined_16", |b| {
        b.iter(|| {
            let mut buf = black_box(&batch[..]);
            let mut requests = 0usize;
            while let Ok(Parsed::Complete(request, used)) = parse(buf) {
                black_box(&request);
                buf = &buf[used..];
                requests += 1;
            }
            assert_eq!(requests, PIPELINED);
            requests
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// json

fn json_request(path: &'static str, body: &'static [u8]) -> Request<'static> {
    Request {
        method: Method::Post,
        path,
        query: "",
        keep_alive: true,
        authorization: None,
        content_type: Some(b"application/json"),
        has_length: true,
        body,
        ..Request::default()
    }
}

/// Runs `commands` (all purchases that must succeed) on `book` and returns the time they took.
fn time_purchases(book: &mut Book, commands: Vec<Command>) -> Duration {
    let expected = commands.len() as u64;
    let start = Instant::now();
    let mut bought = 0u64;
    for command in commands {
        let (reply, event) = book.execute(command, black_box(NOW_MS));
        bought += u64::from(reply.is_ok());
        black_box(event);
    }
    let elapsed = start.elapsed();
    assert_eq!(bought, expected, "every purchase must succeed");
    elapsed
}

/// The purchase body as the handler reads it: from a reused tape, no value tree.
fn read_quantity(request: &Request<'_>) -> Result<u32, seckill::api::error::ApiError> {
    parse_purchase(request)
}

/// The same body read into a value tree, as every other body is (and purchases were before).
fn read_quantity_tree(request: &Request<'_>) -> Result<u64, seckill::api::error::ApiError> {
    let mut fields = json_fields(request)?;
    let quantity = fields.u64("quantity", 1..=100)?.unwrap_or(1);
    fields.finish()?;
    Ok(quantity)
}

fn json(c: &mut Criterion) {
    let purchase = json_request("/v1/sales/moutai-2026/purchase", PURCHASE_BODY);
    assert_eq!(read_quantity(&purchase).ok(), Some(1), "purchase body");
    let sale = json_request("/v1/sales/moutai-2026", SALE_BODY);
    assert_eq!(
        parse_sale(&sale, SKU).ok().map(|s| s.stock),
        Some(10_000),
        "sale body"
    );

    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Bytes(PURCHASE_BODY.len() as u64));
    group.bench_function("purchase_body", |b| {
        b.iter(|| black_box(read_quantity(black_box(&purchase)).is_ok()))
    });
    group.bench_function("purchase_body_tree", |b| {
        b.iter(|| black_box(read_quantity_tree(black_box(&purchase)).is_ok()))
    });
    group.throughput(Throughput::Bytes(SALE_BODY.len() as u64));
    group.bench_function("sale_body", |b| {
        b.iter(|| black_box(parse_sale(black_box(&sale), SKU).is_ok()))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// owner

fn sale(stock: u64, per_user_limit: u32) -> Sale {
    Sale {
        sku: SKU.into(),
        name: "Kweichow Moutai 53% 500ml".into(),
        stock,
        starts_at: NOW_MS - 60_000,
        ends_at: NOW_MS + 3_600_000,
        per_user_limit,
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
    }
}

fn book_with(sale: Sale) -> Book {
    let mut book = Book::new(BookLimits::default());
    let (reply, _) = book.execute(Command::UpsertSale(sale), NOW_MS - 120_000);
    reply.expect("a sale that has not started can be created");
    book
}

fn purchase(user_id: &str) -> Command {
    Command::Purchase(PurchaseRequest::new(SKU, user_id, 1, None).expect("ids fit"))
}

/// Users who already hold units in `owner/purchase_existing_holder`.
const HOLDERS: usize = 4096;

fn owner(c: &mut Criterion) {
    let mut group = c.benchmark_group("owner");
    group.throughput(Throughput::Elements(1));

    // Each purchase by a user the book has not seen: a new holder entry and a new order. The
    // book is fresh for each sample and already holds HOLDERS buyers, like a sale under way;
    // commands are built before the clock starts (the edge builds them, not the owner).
    let mut sample = 0u64;
    group.bench_function("purchase_new_holder", |b| {
        b.iter_custom(|iters| {
            sample += 1;
            let mut book = book_with(sale(1 << 40, 2));
            for n in 0..HOLDERS {
                let _ = book.execute(purchase(&format!("u-holder-{n:06}")), NOW_MS);
            }
            let commands: Vec<Command> = (0..iters)
                .map(|n| purchase(&format!("u-{sample:04}-{n:08}")))
                .collect();
            time_purchases(&mut book, commands)
        })
    });

    // Each purchase by a user who already holds units (high per-user limit): the existing
    // holder entry is updated and a new order is created.
    group.bench_function("purchase_existing_holder", |b| {
        let users: Vec<String> = (0..HOLDERS).map(|n| format!("u-holder-{n:06}")).collect();
        b.iter_custom(|iters| {
            let mut book = book_with(sale(1 << 40, u32::MAX));
            for user in &users {
                let _ = book.execute(purchase(user), NOW_MS);
            }
            let commands: Vec<Command> = (0..iters as usize)
                .map(|n| purchase(&users[n % HOLDERS]))
                .collect();
            time_purchases(&mut book, commands)
        })
    });

    // Sold out: one unit, already bought. Every later purchase is refused without a change.
    let mut sold_out = book_with(sale(1, 1));
    let (first, _) = sold_out.execute(purchase("u-first"), NOW_MS);
    first.expect("the only unit can be bought");
    let (refused, _) = sold_out.execute(purchase("u-late"), NOW_MS);
    assert_eq!(refused.err(), Some(SaleError::SoldOut));
    let late = purchase("u-20250917-84213");
    group.bench_function("purchase_refused_sold_out", |b| {
        b.iter_batched(
            || late.clone(),
            |command| black_box(sold_out.execute(command, black_box(NOW_MS))),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// journal

/// The event a successful purchase leaves for the journal.
fn order_created() -> Event {
    let mut rng = SmallRng::seed_from_u64(7);
    Event::OrderCreated {
        order: Order {
            order_id: OrderId::mint(SKU, NOW_MS, &mut rng),
            sku: SKU.into(),
            user_id: "u-20250917-84213".into(),
            quantity: 1,
            status: OrderStatus::Pending,
            created_at: NOW_MS,
            expires_at: NOW_MS + 900_000,
            amount: 149_900,
            payment_ref: None,
        },
        idempotency_key: Some("01K5A7Q2ZJ8W3X9V4N6M0R1T5Y".into()),
    }
}

/// A scratch directory for journals; removed (with everything in it) on drop.
struct ScratchDir {
    root: PathBuf,
    next: u64,
}

impl ScratchDir {
    fn new() -> Self {
        let base = std::env::var_os("SECKILL_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let root = base.join(format!("seckill-micro-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("create the bench scratch directory");
        if let Err(error) = check_direct_io(&root) {
            let _ = std::fs::remove_dir_all(&root);
            panic!("the journal benches need O_DIRECT (set SECKILL_BENCH_DIR to a disk): {error}");
        }
        Self { root, next: 0 }
    }

    /// A fresh, empty journal directory.
    fn fresh(&mut self) -> PathBuf {
        self.next += 1;
        let dir = self.root.join(format!("journal-{}", self.next));
        std::fs::create_dir_all(&dir).expect("create a journal directory");
        dir
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn open(dir: &Path, durability: Durability) -> Rc<Journal> {
    let rebuild = Rebuild {
        limits: BookLimits::default(),
        feed: false,
    };
    Journal::create(
        dir,
        JournalStart::fresh(0),
        durability,
        SEGMENT_BYTES,
        rebuild,
    )
    .await
    .expect("create the journal (needs O_DIRECT)")
}

async fn close(journal: Rc<Journal>, dir: &Path) {
    journal.close().await.expect("close the journal");
    drop(journal);
    std::fs::remove_dir_all(dir).expect("remove the journal directory");
}

/// `iters` appends, timed; every COMMIT_EVERY appends, with the clock stopped, a commit hands
/// the pending bytes to a background flusher (`Durability::None`), which then gets to run.
async fn append_sample(dir: PathBuf, event: &Event, iters: u64) -> Duration {
    let journal = open(&dir, Durability::None).await;
    let mut measured = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(COMMIT_EVERY);
        let start = Instant::now();
        for _ in 0..batch {
            journal.append(black_box(event));
        }
        measured += start.elapsed();
        left -= batch;
        journal.commit().await.expect("commit");
        glommio::executor().yield_now().await;
    }
    close(journal, &dir).await;
    measured
}

/// `iters` group commits of `records` appends each, with `Durability::Sync`: every commit is
/// one write and one `fdatasync`.
async fn group_commit_sample(dir: PathBuf, event: &Event, records: u64, iters: u64) -> Duration {
    let journal = open(&dir, Durability::Sync).await;
    let start = Instant::now();
    for _ in 0..iters {
        for _ in 0..records {
            journal.append(black_box(event));
        }
        journal.commit().await.expect("commit with fdatasync");
    }
    let measured = start.elapsed();
    close(journal, &dir).await;
    measured
}

/// Allocations per purchase through the embedded store (`Durability::None`), as a batch of one
/// (`execute`, two vectors) and as one command (`execute_one`, what the owner sends).
async fn store_allocations(dir: PathBuf) -> (f64, f64) {
    const PURCHASES: u64 = 10_000;
    let journal = open(&dir, Durability::None).await;
    let now = seckill::clock::now_ms();
    let mut open_sale = sale(u64::MAX / 2, u32::MAX);
    open_sale.starts_at = now - 60_000;
    open_sale.ends_at = now + 3_600_000;
    let mut book = Book::new(BookLimits::default());
    let (made, _) = book.execute(Command::UpsertSale(open_sale), now - 120_000);
    made.expect("an open sale");
    let feed = FeedOptions {
        record: false,
        outbox_max: 0,
    };
    let store = EmbeddedStore::new(book, Outbox::default(), Rc::clone(&journal), feed);
    let user: std::sync::Arc<str> = "store-shopper".into();
    let command = || Command::Purchase(PurchaseRequest::new(SKU, &user, 1, None).expect("ids fit"));
    let mut per_purchase = [0.0; 2];
    for (round, one) in [false, true].into_iter().enumerate() {
        // The first half warms the maps and buffers up; the second is counted.
        let mut before = 0;
        for n in 0..2 * PURCHASES {
            if n == PURCHASES {
                before = process_allocations();
            }
            let reply = if one {
                store.execute_one(command()).await
            } else {
                store.execute(vec![command()]).await.remove(0)
            };
            reply.expect("a purchase");
        }
        per_purchase[round] = (process_allocations() - before) as f64 / PURCHASES as f64;
    }
    drop(store);
    close(journal, &dir).await;
    (per_purchase[0], per_purchase[1])
}

fn journal(c: &mut Criterion) {
    let executor: LocalExecutor = LocalExecutorBuilder::default()
        .io_memory(IO_MEMORY)
        .make()
        .expect("start a glommio executor (io_uring)");
    let mut scratch = ScratchDir::new();
    let event = order_created();
    let (batch, one) = executor.run(store_allocations(scratch.fresh()));
    println!(
        "embedded store allocations per purchase (whole process, durability none): \
         execute(vec![command]) {batch:.2}, execute_one(command) {one:.2}"
    );

    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append", |b| {
        b.iter_custom(|iters| executor.run(append_sample(scratch.fresh(), &event, iters)))
    });

    // Each iteration waits for the disk, so keep the sample count at criterion's minimum.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    for records in [64u64, 1] {
        group.throughput(Throughput::Elements(records));
        group.bench_function(format!("group_commit_sync_{records}"), |b| {
            b.iter_custom(|iters| {
                executor.run(group_commit_sample(scratch.fresh(), &event, records, iters))
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// reply

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

/// The answer every call in the `reply` group carries.
const ANSWER: u64 = 42;

/// The pool the `reply` group's slots come from.
static SLOTS: LazyLock<Slots<u64>> = LazyLock::new(Slots::new);

/// A call as the owner thread receives it.
enum Call {
    Oneshot(oneshot::Sender<u64>),
    Slot(reply::ReplyTo<u64>),
}

/// Polls `answer` on this thread until it resolves, without parking: the owner thread spins
/// too, so the round trip measures the hand-off, not futex wake-ups.
fn spin_on<F: std::future::Future>(answer: F) -> F::Output {
    let mut answer = std::pin::pin!(answer);
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    loop {
        if let std::task::Poll::Ready(value) = answer.as_mut().poll(&mut cx) {
            return value;
        }
        std::hint::spin_loop();
    }
}

/// An owner thread answering calls, spinning on a preallocated channel while idle.
struct Owner {
    calls: Option<SyncSender<Call>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Owner {
    fn start() -> Self {
        let (calls, incoming) = sync_channel::<Call>(1);
        let thread = std::thread::spawn(move || loop {
            match incoming.try_recv() {
                Ok(Call::Oneshot(reply)) => {
                    let _ = reply.send(ANSWER);
                }
                Ok(Call::Slot(reply)) => reply.send(ANSWER),
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(TryRecvError::Disconnected) => return,
            }
        });
        Self {
            calls: Some(calls),
            thread: Some(thread),
        }
    }

    fn oneshot_round_trip(&self) -> u64 {
        let (reply, answer) = oneshot::channel();
        self.send(Call::Oneshot(reply));
        spin_on(answer).unwrap_or(0)
    }

    fn slot_round_trip(&self) -> u64 {
        let (reply, answer) = reply::slot(&SLOTS).expect("a free slot");
        self.send(Call::Slot(reply));
        spin_on(answer).unwrap_or(0)
    }

    fn send(&self, call: Call) {
        if let Some(calls) = &self.calls {
            calls.send(call).expect("the owner thread runs");
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.calls = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn oneshot_local() -> u64 {
    let (reply, answer) = oneshot::channel();
    let _ = reply.send(ANSWER);
    spin_on(answer).unwrap_or(0)
}

fn slot_local() -> u64 {
    let (reply, answer) = reply::slot(&SLOTS).expect("a free slot");
    reply.send(ANSWER);
    spin_on(answer).unwrap_or(0)
}

/// Allocations per call of `round_trip`, after a warm-up that fills any pool.
fn allocations_per_call(mut round_trip: impl FnMut() -> u64) -> f64 {
    const CALLS: u64 = 10_000;
    for _ in 0..CALLS {
        assert_eq!(round_trip(), ANSWER);
    }
    let before = process_allocations();
    for _ in 0..CALLS {
        black_box(round_trip());
    }
    (process_allocations() - before) as f64 / CALLS as f64
}

fn replies(c: &mut Criterion) {
    let owner = Owner::start();
    println!(
        "reply allocations per call: oneshot {:.2} (one thread) {:.2} (across threads); \
         pooled slot {:.2} (one thread) {:.2} (across threads)",
        allocations_per_call(oneshot_local),
        allocations_per_call(|| owner.oneshot_round_trip()),
        allocations_per_call(slot_local),
        allocations_per_call(|| owner.slot_round_trip()),
    );
    let mut group = c.benchmark_group("reply");
    group.throughput(Throughput::Elements(1));
    group.bench_function("oneshot_local", |b| b.iter(oneshot_local));
    group.bench_function("slot_local", |b| b.iter(slot_local));
    group.bench_function("oneshot_cross_thread", |b| {
        b.iter(|| owner.oneshot_round_trip())
    });
    group.bench_function("slot_cross_thread", |b| b.iter(|| owner.slot_round_trip()));
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// feed

/// Events per hand-off, as the embedded store batches them for the publisher.
const FEED_EVENTS: usize = 256;

/// What the stand-in publisher thread receives.
enum FeedBatch {
    /// Events cloned for it, freed on its side.
    Cloned(Vec<FeedEvent>),
    /// Keys of events staged in the pool, given back on its side.
    Staged(Vec<usize>),
    /// Answer once everything before is handled.
    Flush(SyncSender<()>),
}

/// A thread that reads every event it is handed and lets it go, as the feed's publisher does
/// (without the broker).
struct FeedPublisher {
    batches: Option<SyncSender<FeedBatch>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FeedPublisher {
    fn start() -> Self {
        let (batches, incoming) = sync_channel::<FeedBatch>(4);
        let thread = std::thread::spawn(move || {
            while let Ok(batch) = incoming.recv() {
                match batch {
                    FeedBatch::Cloned(events) => {
                        for event in &events {
                            black_box(event.body.len());
                        }
                    }
                    FeedBatch::Staged(keys) => {
                        for key in &keys {
                            black_box(handoff::with_staged(*key, |event| event.body.len()));
                        }
                        handoff::release(&keys);
                    }
                    FeedBatch::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self {
            batches: Some(batches),
            thread: Some(thread),
        }
    }

    fn send(&self, batch: FeedBatch) {
        if let Some(batches) = &self.batches {
            batches.send(batch).expect("the publisher thread runs");
        }
    }

    /// Hands `iterations` batches made by `batch` over and waits until all are let go.
    fn hand_off(&self, iterations: u64, batch: impl Fn() -> FeedBatch) -> Duration {
        let started = Instant::now();
        for _ in 0..iterations {
            self.send(batch());
        }
        let (done, flushed) = sync_channel(1);
        self.send(FeedBatch::Flush(done));
        let _ = flushed.recv();
        started.elapsed()
    }
}

impl Drop for FeedPublisher {
    fn drop(&mut self) {
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A batch of order events as an outbox holds them.
fn feed_batch() -> Vec<FeedEvent> {
    let Event::OrderCreated { order, .. } = order_created() else {
        unreachable!("order_created makes an OrderCreated event");
    };
    (0..FEED_EVENTS as u64)
        .map(|n| FeedEvent::order(&order, NOW_MS + n))
        .collect()
}

fn feed(c: &mut Criterion) {
    let publisher = FeedPublisher::start();
    let events = feed_batch();
    let cloned = || FeedBatch::Cloned(events.clone());
    let staged = || FeedBatch::Staged(handoff::stage(&events).expect("room in the pool"));
    let per_event = |batch: &dyn Fn() -> FeedBatch| {
        const BATCHES: u64 = 200;
        publisher.hand_off(BATCHES, batch);
        let before = process_allocations();
        publisher.hand_off(BATCHES, batch);
        (process_allocations() - before) as f64 / (BATCHES as usize * FEED_EVENTS) as f64
    };
    println!(
        "feed hand-off allocations per event: clone {:.2}, pooled {:.2}",
        per_event(&cloned),
        per_event(&staged)
    );
    let mut group = c.benchmark_group("feed");
    group.throughput(Throughput::Elements(FEED_EVENTS as u64));
    group.bench_function("handoff_clone", |b| {
        b.iter_custom(|iterations| publisher.hand_off(iterations, cloned))
    });
    group.bench_function("handoff_pooled", |b| {
        b.iter_custom(|iterations| publisher.hand_off(iterations, staged))
    });
    group.finish();
}

criterion_group! {
    name = micro;
    config = config();
    targets = admission, routing, replies, feed, auth, pow, http, json, owner, journal
}
criterion_main!(micro);
