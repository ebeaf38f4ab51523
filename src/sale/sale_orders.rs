//! A sale's orders in id order, for the admin's `GET /v1/sales/{sku}/orders` and
//! `seckill orders export`.
//!
//! Order ids are ULIDs (creation millisecond first), so id order is creation order and a cursor
//! (the last id seen) stays valid while new orders arrive: they sort after it, except one made
//! in the very millisecond of the cursor with a smaller random part. The index holds exactly the
//! orders the book retains ([`SaleOrderIds::forget`] follows retention), so it is bounded as the
//! book is. One page looks at most [`MAX_SCANNED`] ids, whatever the status filter leaves, so a
//! filter that matches nothing cannot make one request walk a million orders; such a page may be
//! short (even empty) and still carry `next`.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use super::book::Book;
use super::command::{Outcome, Reply, SaleOrdersQuery};
use super::ids::OrderId;
use super::SaleError;

/// Most ids one page looks at. The Redis store's `SALE_ORDERS` script uses the same bound.
pub const MAX_SCANNED: usize = 10_000;

/// The unique ids of one sale's retained orders, ascending.
#[derive(Debug, Clone, Default)]
pub struct SaleOrderIds(BTreeSet<u128>);

impl SaleOrderIds {
    /// Adds an order.
    pub fn record(&mut self, unique: u128) {
        self.0.insert(unique);
    }

    /// Drops an order the book forgot (retention).
    pub fn forget(&mut self, unique: u128) {
        self.0.remove(&unique);
    }
}

impl Book {
    /// A page of `query.sku`'s orders in id order; `unknown_sale` for a SKU without a sale.
    pub(super) fn sale_orders(&self, query: &SaleOrdersQuery) -> Reply {
        let ledger = self.sales.get(&query.sku).ok_or(SaleError::UnknownSale)?;
        let start = query
            .after
            .as_ref()
            .map_or(Bound::Unbounded, |after| Bound::Excluded(after.unique));
        let mut orders = Vec::new();
        let mut last = None;
        for (scanned, &unique) in ledger.ids.0.range((start, Bound::Unbounded)).enumerate() {
            if orders.len() >= query.limit || scanned >= MAX_SCANNED {
                // More follow: the next page starts after the last id looked at.
                let next = last.map(|unique| OrderId {
                    unique,
                    sku: Arc::from(&*query.sku),
                });
                return Ok(Outcome::OrderPage { orders, next });
            }
            last = Some(unique);
            let Some(order) = self.orders.get(unique) else {
                continue;
            };
            if query.status.is_none_or(|status| status == order.status()) {
                orders.push(order.to_order());
            }
        }
        Ok(Outcome::OrderPage { orders, next: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::book::BookLimits;
    use crate::sale::command::{Command, PurchaseRequest};
    use crate::sale::{OrderStatus, Sale};

    const T0: u64 = 1_000_000;

    fn page(book: &mut Book, status: Option<OrderStatus>, after: Option<OrderId>) -> Outcome {
        let query = SaleOrdersQuery {
            sku: "s".into(),
            status,
            after,
            limit: 1000,
        };
        book.execute(Command::ListSaleOrders(query), T0)
            .0
            .expect("a page")
    }

    fn sale() -> Sale {
        Sale {
            sku: "s".into(),
            name: "n".into(),
            stock: 1_000_000,
            starts_at: T0 - 10,
            ends_at: T0 + 60_000,
            per_user_limit: 1,
            payment_timeout_ms: 60_000,
            rate_limit_per_sec: 0,
            price: 0,
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

    fn buy(book: &mut Book, user: &str) -> OrderId {
        let request = PurchaseRequest::new("s", user, 1, None).expect("ids fit");
        match book.execute(Command::Purchase(request), T0).0 {
            Ok(Outcome::Order { order, .. }) => order.order_id,
            other => panic!("expected an order, got {other:?}"),
        }
    }

    #[test]
    fn forgotten_orders_leave_the_index() {
        let mut book = Book::new(BookLimits {
            closed_orders_per_sale: 2,
        });
        book.execute(Command::UpsertSale(sale()), T0 - 20)
            .0
            .expect("sale");
        for n in 0..5 {
            let id = buy(&mut book, &format!("u{n}"));
            let cancel = Command::Cancel(id, crate::sale::command::Requester::Admin);
            book.execute(cancel, T0).0.expect("cancel");
        }
        buy(&mut book, "kept");
        let indexed = book.sales.get("s").map(|ledger| ledger.ids.0.len());
        assert_eq!(indexed, Some(3), "two cancelled and one pending retained");
    }

    #[test]
    fn a_page_looks_at_a_bounded_number_of_orders() {
        let mut book = Book::new(BookLimits::default());
        book.execute(Command::UpsertSale(sale()), T0 - 20)
            .0
            .expect("sale");
        for n in 0..MAX_SCANNED + 5 {
            buy(&mut book, &format!("u{n}"));
        }
        // No order is paid: the first page looks at MAX_SCANNED ids, finds none, and says where
        // to go on; the second looks at the rest and ends.
        let Outcome::OrderPage { orders, next } = page(&mut book, Some(OrderStatus::Paid), None)
        else {
            panic!("not a page");
        };
        assert!(orders.is_empty());
        let next = next.expect("more follow");
        let Outcome::OrderPage { orders, next } =
            page(&mut book, Some(OrderStatus::Paid), Some(next))
        else {
            panic!("not a page");
        };
        assert!(orders.is_empty() && next.is_none());
        let Outcome::OrderPage { orders, next } = page(&mut book, None, None) else {
            panic!("not a page");
        };
        assert_eq!(orders.len(), 1000);
        assert!(orders
            .windows(2)
            .all(|w| w[0].order_id.unique < w[1].order_id.unique));
        assert_eq!(next.map(|id| id.unique), Some(orders[999].order_id.unique));
        assert_eq!(
            page(&mut book, Some(OrderStatus::Pending), None),
            page(&mut book, None, None)
        );
    }
}
