//! Allocations on the request path, counted by a counting global allocator on the test's own
//! thread: in a flash sale nearly every request is a refusal, and an admitted purchase's body is
//! read on every one of them, so neither may allocate once warm.
//!
//! What is counted is seckill's own work on a request already read: parsing the head, checking
//! the shopper token, the edge's checks up to the sold-out refusal, reading the purchase body,
//! and the owner's step of a purchase (which may only grow its containers now and then).
//! glommio's own per-read bookkeeping (a reactor source per socket read) is outside this test;
//! the README's performance section reports it from a heaptrack run of the real server.

use std::time::Instant;

use seckill::api::parse_purchase;
use seckill::auth::{Auth, Principal};
use seckill::http::request::{parse, Parsed};
use seckill::sale::{Sale, SaleError};
use seckill::shard::edge::{Edge, Refusal};
use seckill::shard::message::Notice;

#[path = "support/counting_allocator.rs"]
mod counting_allocator;

use counting_allocator::{thread_allocations, CountingAllocator};

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

/// Allocations `step` makes on this thread.
fn allocations_of(step: impl FnOnce()) -> u64 {
    let before = thread_allocations();
    step();
    thread_allocations() - before
}

const NOW_MS: u64 = 1_767_225_600_000;
const SKU: &str = "moutai-2026";

fn purchase_request(auth: &Auth) -> Vec<u8> {
    let token = auth.mint("u-20250917-84213", NOW_MS / 1000 + 3600);
    let body = r#"{"quantity":1}"#;
    format!(
        "POST /v1/sales/{SKU}/purchase HTTP/1.1\r\nHost: shop.example.com\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn sold_out_edge_sale() -> Sale {
    Sale {
        sku: SKU.into(),
        name: "Kweichow Moutai".into(),
        stock: 1000,
        starts_at: NOW_MS - 60_000,
        ends_at: NOW_MS + 3_600_000,
        per_user_limit: 1,
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

fn sold_out_edge() -> Edge {
    let mut edge = Edge::new(0, 2);
    let sale = sold_out_edge_sale();
    let now = Instant::now();
    edge.apply(&Notice::SaleUpserted { sale, version: 1 }, now);
    let flag = Notice::StockFlag {
        sku: SKU.into(),
        sold_out: true,
        version: 2,
    };
    edge.apply(&flag, now);
    edge
}

/// The sold-out refusal, from the request bytes to the edge's answer.
fn refuse(auth: &Auth, edge: &mut Edge, bytes: &[u8]) {
    let Ok(Parsed::Complete(request, _)) = parse(bytes) else {
        panic!("the request must parse");
    };
    let Some(Principal::Shopper(user_id)) = auth.authenticate(request.authorization, NOW_MS / 1000)
    else {
        panic!("the token must verify");
    };
    let refused = edge.admit_purchase(SKU, user_id, false, NOW_MS, Instant::now(), |_| true);
    assert_eq!(refused, Err(Refusal::Sale(SaleError::SoldOut)));
}

#[test]
fn a_sold_out_refusal_allocates_nothing() {
    let auth = Auth::new("admin-token-0123456789", "secret-0123456789abcdef");
    let bytes = purchase_request(&auth);
    let mut edge = sold_out_edge();
    refuse(&auth, &mut edge, &bytes);
    let counted = allocations_of(|| {
        for _ in 0..100 {
            refuse(&auth, &mut edge, &bytes);
        }
    });
    assert_eq!(counted, 0, "allocations in 100 sold-out refusals");
}

#[test]
fn reading_a_purchase_body_allocates_nothing_once_warm() {
    let auth = Auth::new("admin-token-0123456789", "secret-0123456789abcdef");
    let bytes = purchase_request(&auth);
    let Ok(Parsed::Complete(request, _)) = parse(&bytes) else {
        panic!("the request must parse");
    };
    assert_eq!(parse_purchase(&request).ok(), Some(1));
    let counted = allocations_of(|| {
        for _ in 0..100 {
            assert_eq!(parse_purchase(&request).ok(), Some(1));
        }
    });
    assert_eq!(counted, 0, "allocations in reading 100 purchase bodies");
}

/// The owner's step of a purchase by a shopper who already holds units: the command carries both
/// ids in place, and the order, its id, its journal event and the reply share the sale's SKU and
/// the shopper's stored id instead of copying them, so only the growth of the book's containers
/// allocates, far less than once per order.
#[test]
fn the_owners_purchase_step_copies_no_string() {
    use seckill::sale::book::{Book, BookLimits};
    use seckill::sale::command::{Command, PurchaseRequest};

    let mut book = Book::new(BookLimits::default());
    let mut sale = sold_out_edge_sale();
    sale.stock = 1_000_000;
    sale.per_user_limit = 1_000_000;
    let (made, _) = book.execute(Command::UpsertSale(sale), NOW_MS - 120_000);
    assert!(made.is_ok(), "{made:?}");
    let user = "u-20250917-84213";
    let purchase =
        |user: &str| Command::Purchase(PurchaseRequest::new(SKU, user, 1, None).expect("ids fit"));
    // Warm: the holder exists and the maps have room.
    for _ in 0..10_000 {
        let (reply, _) = book.execute(purchase(user), NOW_MS);
        assert!(reply.is_ok(), "{reply:?}");
    }
    let mut results = Vec::with_capacity(100);
    // The command is made inside the count too: the edge hands the owner both ids in place.
    let counted = allocations_of(|| {
        for _ in 0..100 {
            results.push(book.execute(purchase(user), NOW_MS));
        }
    });
    assert!(results.iter().all(|(reply, _)| reply.is_ok()));
    // The maps and per-sale lists still grow now and then (amortised); a string copied per
    // order would be 100 or more on its own.
    assert!(
        counted < 100,
        "{counted} allocations in 100 purchases on the owner: a string is copied per order"
    );
}
