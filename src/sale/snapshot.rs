//! A book as the events that rebuild it: what a journal snapshot holds, and what recovery
//! writes as the first snapshot of a new generation.

use std::collections::{HashMap, HashSet};

use super::book::Book;
use super::command::Event;
use super::order_table::OrderRef;

impl Book {
    /// Every event needed to rebuild this book from nothing; what a snapshot holds. Orders are
    /// restored in their current status, so the stock they hold does not depend on the order
    /// they come in; closed ones come in the order they closed, which retention depends on.
    pub fn snapshot(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .sales
            .values()
            .map(|ledger| Event::SaleUpserted(ledger.sale.clone()))
            .collect();
        // Each sale's tickets in issue order, after every sale: replaying them repeats the
        // draw and the late tickets' slots exactly.
        for ledger in self.sales.values() {
            events.extend(ledger.room.issued().map(|(user_id, issued_at, score)| {
                Event::TicketIssued {
                    sku: ledger.sale.sku.clone(),
                    user_id: Box::from(&**user_id),
                    issued_at,
                    score,
                }
            }));
        }
        events.extend(
            self.blocked
                .iter()
                .map(|u| Event::UserBlocked(u.clone(), true)),
        );
        // One pass over the orders; idempotency keys are found through a reverse index, so the
        // cost is linear in live state, and orders whose holder entry is gone are not missed.
        let keys: HashMap<u128, &Box<str>> = self
            .sales
            .values()
            .flat_map(|ledger| ledger.holders.values())
            .flat_map(|holder| holder.keys.iter().map(|(key, unique)| (unique, key)))
            .collect();
        // Orders that hold stock first, in any order; then each sale's closed orders in the
        // order they closed, which is the order retention forgets them in, so a restart evicts
        // the same orders the live book would have. (Sorting by id is creation order at best,
        // and ids minted in the same millisecond are in random order.)
        let mut orders: Vec<OrderRef<'_>> = self
            .orders
            .iter()
            .filter(|order| order.status().holds_stock())
            .collect();
        orders.sort_by_key(OrderRef::unique);
        let mut listed: HashSet<u128> = HashSet::new();
        for ledger in self.sales.values() {
            for unique in &ledger.closed {
                if let Some(order) = self.orders.get(*unique) {
                    if listed.insert(*unique) {
                        orders.push(order);
                    }
                }
            }
        }
        // Closed orders no retention queue lists (none, unless older code left some): last.
        let mut unlisted: Vec<OrderRef<'_>> = self
            .orders
            .iter()
            .filter(|order| !order.status().holds_stock() && !listed.contains(&order.unique()))
            .collect();
        unlisted.sort_by_key(OrderRef::unique);
        orders.extend(unlisted);
        events.extend(orders.into_iter().map(|order| Event::OrderCreated {
            order: order.to_order(),
            idempotency_key: keys.get(&order.unique()).map(|key| (*key).clone()),
        }));
        events
    }
}
