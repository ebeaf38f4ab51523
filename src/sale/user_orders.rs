//! Each user's most recent orders in one sale: the index `GET /v1/orders` reads in the embedded
//! store, and the order in which that endpoint lists orders.
//!
//! The index is bounded per user and sale ([`RECENT_PER_SALE`]), so a buy-then-cancel loop
//! cannot grow it; an order still retained but pushed out by newer ones of the same user is no
//! longer listed (it is still found by its id). The Redis store keeps the same bound in each
//! user's entry of its `held` hash.

use super::ids::Unique;
use super::model::Order;

/// Most orders of one user in one sale that the index keeps, newest kept.
pub const RECENT_PER_SALE: usize = 32;

/// One user's newest orders in one sale, as `(created_at, unique id)` in ascending order. The id
/// is kept as two words, so an entry is 24 bytes, not 32; most shoppers have one order, so the
/// list starts with room for exactly one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentOrders(Vec<(u64, Unique)>);

impl RecentOrders {
    /// Adds an order, dropping the oldest beyond [`RECENT_PER_SALE`]. Sorted insertion rather
    /// than a push, because a snapshot replays orders in an order that is not creation order.
    pub fn record(&mut self, created_at: u64, unique: u128) {
        let entry = (created_at, Unique::from(unique));
        if let Err(at) = self.0.binary_search(&entry) {
            if self.0.capacity() == 0 {
                self.0.reserve_exact(1);
            }
            self.0.insert(at, entry);
        }
        if self.0.len() > RECENT_PER_SALE {
            self.0.remove(0);
        }
    }

    /// Drops an order the book forgot (retention), so the index never points at nothing.
    pub fn forget(&mut self, unique: u128) {
        self.0.retain(|(_, listed)| u128::from(*listed) != unique);
    }

    /// Whether no order is indexed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The indexed orders' unique ids, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = u128> + '_ {
        self.0.iter().rev().map(|(_, unique)| u128::from(*unique))
    }
}

/// Sorts `orders` newest first: by creation time, then by id (both descending), so that orders
/// of the same millisecond still come in one stable order on every node.
pub fn sort_newest_first(orders: &mut [Order]) {
    orders.sort_unstable_by(|a, b| {
        (b.created_at, b.order_id.unique, &b.order_id.sku).cmp(&(
            a.created_at,
            a.order_id.unique,
            &a.order_id.sku,
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::book::{Book, BookLimits};
    use crate::sale::command::{Command, Outcome, PurchaseRequest, Requester};
    use crate::sale::Sale;

    const T0: u64 = 1_000_000;

    fn listed(book: &mut Book, user: &str) -> Vec<Order> {
        match book
            .execute(Command::ListOrders("s".into(), user.into()), T0)
            .0
        {
            Ok(Outcome::Orders(orders)) => orders,
            other => panic!("expected orders, got {other:?}"),
        }
    }

    #[test]
    fn the_book_lists_what_it_retains_and_rebuilds_the_index_from_a_snapshot() {
        let mut book = Book::new(BookLimits {
            closed_orders_per_sale: 2,
        });
        let sale = Sale {
            sku: "s".into(),
            name: "n".into(),
            stock: 100,
            starts_at: T0 - 10,
            ends_at: T0 + 60_000,
            per_user_limit: 1,
            payment_timeout_ms: 1_000,
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
        };
        book.execute(Command::UpsertSale(sale), T0 - 20)
            .0
            .expect("sale");
        let mut made = Vec::new();
        for n in 0..5 {
            let request = PurchaseRequest::new("s", "u", 1, None).expect("ids fit");
            let order = match book.execute(Command::Purchase(request), T0 + n).0 {
                Ok(Outcome::Order { order, .. }) => order,
                other => panic!("expected an order, got {other:?}"),
            };
            if n < 4 {
                let cancel = Command::Cancel(order.order_id.clone(), Requester::Admin);
                book.execute(cancel, T0 + n).0.expect("cancel");
            }
            made.push(order.order_id);
        }
        let want: Vec<_> = [4, 3, 2].iter().map(|n| made[*n].clone()).collect();
        let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.order_id).collect::<Vec<_>>();
        assert_eq!(
            ids(listed(&mut book, "u")),
            want,
            "forgotten orders are not listed"
        );
        assert!(listed(&mut book, "other").is_empty());
        book.audit().expect("the index leaves the accounting alone");
        let mut copy = Book::new(BookLimits {
            closed_orders_per_sale: 2,
        });
        for event in book.snapshot() {
            copy.apply(&event);
        }
        assert_eq!(ids(listed(&mut copy, "u")), want, "rebuilt from a snapshot");
    }

    #[test]
    fn keeps_the_newest_whatever_the_insertion_order() {
        let mut recent = RecentOrders::default();
        for n in (0..(RECENT_PER_SALE as u64 + 10)).rev() {
            recent.record(n, u128::from(n));
        }
        recent.record(5, 5);
        let listed: Vec<u128> = recent.newest_first().collect();
        assert_eq!(listed.len(), RECENT_PER_SALE);
        assert_eq!(listed.first(), Some(&(RECENT_PER_SALE as u128 + 9)));
        assert_eq!(listed.last(), Some(&10));
        recent.forget(20);
        assert_eq!(recent.newest_first().count(), RECENT_PER_SALE - 1);
        assert!(!recent.is_empty());
    }
}
