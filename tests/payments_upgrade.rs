//! A data directory written before prices (journal format 2) still starts: its sales are free in
//! the default currency, its orders cost 0, and they are paid the new way; the payment reference
//! then survives a restart in the current journal. One written before proof-of-work (format 4)
//! starts with its sales asking for none. Embedded mode only: cluster mode keeps no journal (its
//! old Redis sales and orders decode with the same defaults, see `decode_sale`/`Order`).
mod common;

use common::*;
use rand::rngs::mock::StepRng;
use seckill::sale::ids::OrderId;
use seckill::sale::Order;
use seckill::sale::OrderStatus;
use seckill::store::journal::format::{encode_record, snapshot_name, SNAPSHOT_MAGIC};
use seckill::store::journal::legacy::{EntryV4, EventV1, EventV4, OrderV1, SaleV1, SaleV4};
use serde_json::json;

/// Writes `events` as generation 1 of shard 0, the way a format 2 build wrote its snapshot.
fn write_format_2(dir: &std::path::Path, events: Vec<EventV1>) {
    write_snapshot(dir, 2, events.into_iter().map(EntryV4::EventV1).collect());
}

/// Writes `entries` as the snapshot of generation 1 of shard 0 in format `version`.
fn write_snapshot(dir: &std::path::Path, version: u32, entries: Vec<EntryV4>) {
    let shard = dir.join("gen-000001").join("shard-000");
    std::fs::create_dir_all(&shard).expect("mkdir");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    let count = entries.len() as u64;
    for (index, entry) in entries.into_iter().enumerate() {
        encode_record(&mut bytes, index as u64 + 1, &entry);
    }
    let end = EntryV4::SnapshotEnd {
        events: count,
        covers_lsn: 0,
    };
    encode_record(&mut bytes, count + 1, &end);
    std::fs::write(shard.join(snapshot_name(1)), bytes).expect("write snapshot");
    std::fs::write(dir.join("gen-000001").join("COMPLETE"), b"").expect("write COMPLETE");
}

#[test]
fn a_format_2_journal_loads_and_its_orders_are_paid_the_new_way() {
    let dir = ScratchDir::new();
    let now = now_ms() as u64;
    let id = OrderId::mint("old", now, &mut StepRng::new(42, 7));
    write_format_2(
        dir.path(),
        vec![
            EventV1::SaleUpserted(SaleV1 {
                sku: "old".into(),
                name: "before prices".into(),
                stock: 5,
                starts_at: now - 1_000,
                ends_at: now + 3_600_000,
                per_user_limit: 2,
                payment_timeout_ms: 600_000,
                rate_limit_per_sec: 0,
            }),
            EventV1::OrderCreated {
                order: OrderV1 {
                    order_id: id.clone(),
                    sku: "old".into(),
                    user_id: "olga".into(),
                    quantity: 2,
                    status: OrderStatus::Pending,
                    created_at: now,
                    expires_at: now + 600_000,
                },
                idempotency_key: None,
            },
        ],
    );
    let id = id.to_string();
    let paid = {
        let s = Server::start_in(dir.path(), 1, &[]);
        let mut c = s.client();
        let sale = c.get_sale("old");
        assert_eq!(
            (sale["price"].clone(), sale["currency"].clone()),
            (json!(0), json!("CNY"))
        );
        assert_eq!(sale["remaining"], json!(3), "{sale}");
        let order = c.get_order(&id, &tok("olga"));
        assert_status(&order, 200);
        assert_eq!(order.json()["amount"], json!(0), "{order}");
        assert_error(
            &c.pay_as(&id, PAYMENT_TOKEN, 1, "old-1"),
            409,
            "amount_mismatch",
        );
        let paid = c.pay_as(&id, PAYMENT_TOKEN, 0, "old-1");
        assert_status(&paid, 200);
        paid.json()
    };
    assert_eq!(paid["payment_ref"], json!("old-1"), "{paid}");
    // Restarted on the format 3 journal it wrote: the payment and its reference are still there.
    let s = Server::start_in(dir.path(), 2, &[]);
    let mut c = s.client();
    assert_eq!(c.get_order(&id, ADMIN_TOKEN).json(), paid);
    assert_eq!(c.pay_as(&id, PAYMENT_TOKEN, 0, "old-1").json(), paid);
    assert_error(&c.pay_as(&id, PAYMENT_TOKEN, 0, "old-2"), 409, "order_paid");
}

#[test]
fn a_format_4_journal_loads_with_sales_that_ask_for_no_work() {
    let dir = ScratchDir::new();
    let now = now_ms() as u64;
    let id = OrderId::mint("v4", now, &mut StepRng::new(42, 7));
    let order = Order {
        order_id: id.clone(),
        sku: "v4".into(),
        user_id: "vera".into(),
        quantity: 1,
        status: OrderStatus::Pending,
        created_at: now,
        expires_at: now + 600_000,
        amount: 250,
        payment_ref: None,
    };
    write_snapshot(
        dir.path(),
        4,
        vec![
            EntryV4::Event(EventV4::SaleUpserted(SaleV4 {
                sku: "v4".into(),
                name: "before proof-of-work".into(),
                stock: 5,
                starts_at: now - 1_000,
                ends_at: now + 3_600_000,
                per_user_limit: 2,
                payment_timeout_ms: 600_000,
                rate_limit_per_sec: 0,
                price: 250,
                currency: "EUR".into(),
                stock_buckets: 1,
            })),
            EntryV4::Event(EventV4::OrderCreated {
                order,
                idempotency_key: None,
            }),
        ],
    );
    {
        let s = Server::start_in(dir.path(), 1, &[]);
        let mut c = s.client();
        let sale = c.get_sale("v4");
        assert_eq!(
            (
                &sale["price"],
                &sale["currency"],
                &sale["pow_bits"],
                &sale["remaining"]
            ),
            (&json!(250), &json!("EUR"), &json!(0), &json!(4)),
            "{sale}"
        );
        // No work asked: a purchase without a proof goes through.
        assert_status(&c.purchase("v4", &tok("vera"), Some(1), None), 201);
    }
    // Restarted on the old snapshot plus the current journal written after it.
    let s = Server::start_in(dir.path(), 2, &[]);
    let mut c = s.client();
    assert_eq!(c.get_sale("v4")["remaining"], json!(3));
    assert_eq!(
        c.get_order(&id.to_string(), ADMIN_TOKEN).json()["amount"],
        json!(250)
    );
}
