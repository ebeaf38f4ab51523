//! The owner shard's ledger for the SKUs it owns: sales, remaining stock, per-user holdings,
//! idempotency keys and orders.
//!
//! Every change is expressed as an [`Event`] and applied by [`Book::apply`], both on the live path
//! and when a durable store replays its log, so the two can never disagree.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::command::{
    Command, Event, Outcome, Payment, PurchaseRequest, Reply, Requester, StockLevel,
};
use super::holder::Holder;
use super::ids::OrderId;
use super::model::{Order, OrderCounts, OrderStatus, Sale, SaleView};
use super::order_table::{fits, OrderRef, OrderTable, MAX_PAYMENT_WINDOW_MS};
use super::sale_orders::SaleOrderIds;
use super::segmented::SegmentedMap;
use super::waiting_room::WaitingRoom;
use super::SaleError;

/// How much closed history the book keeps; everything else it holds is bounded by live stock.
#[derive(Debug, Clone, Copy)]
pub struct BookLimits {
    /// Cancelled and expired orders kept per sale (for lookups and idempotent replays) before the
    /// oldest are forgotten. Without a cap, buy-then-cancel loops would grow memory forever.
    pub closed_orders_per_sale: usize,
}

impl Default for BookLimits {
    fn default() -> Self {
        Self {
            closed_orders_per_sale: 1_000_000,
        }
    }
}

/// One sale and its live state.
#[derive(Debug, Clone)]
pub(crate) struct SaleLedger {
    pub(super) sale: Sale,
    /// The SKU once, shared by every order of the sale (and its id) instead of copied into each.
    pub(super) sku: Arc<str>,
    pub(super) remaining: u64,
    /// Counts stock changes; see [`StockLevel::seq`].
    pub(super) stock_seq: u64,
    pub(super) holders: SegmentedMap<Arc<str>, Holder>,
    /// Closed (cancelled or expired) orders, oldest first, for bounded retention.
    pub(super) closed: VecDeque<u128>,
    /// Retained orders in id order, for the admin's listing.
    pub(super) ids: SaleOrderIds,
    /// The waiting room's tickets; empty for a first-come-first-served sale.
    pub(super) room: WaitingRoom,
}

impl SaleLedger {
    fn stock(&self) -> StockLevel {
        StockLevel {
            remaining: self.remaining,
            seq: self.stock_seq,
        }
    }

    fn view(&self, now_ms: u64) -> SaleView {
        SaleView::new(&self.sale, self.remaining, self.stock_seq, now_ms)
    }

    /// Whether any order of this sale is still known: one holding stock has a holder, a closed
    /// one sits in the retention queue.
    fn has_orders(&self) -> bool {
        !self.holders.is_empty() || !self.closed.is_empty()
    }

    fn new(sale: Sale, sku: Arc<str>) -> Self {
        Self {
            remaining: sale.stock,
            stock_seq: 0,
            sku,
            sale,
            holders: SegmentedMap::new(),
            closed: VecDeque::new(),
            ids: SaleOrderIds::default(),
            room: WaitingRoom::default(),
        }
    }
}

/// The state one owner shard keeps. Single-threaded by design: it lives inside one shard.
/// Cloning copies the whole ledger (for tests and model checks; the server never clones it).
#[derive(Debug, Clone)]
pub struct Book {
    pub(super) sales: HashMap<Box<str>, SaleLedger>,
    pub(super) orders: OrderTable,
    pub(super) blocked: HashSet<Box<str>>,
    /// Orders in `orders` by status, kept in step with every change for metrics.
    pub(super) order_counts: OrderCounts,
    rng: SmallRng,
    pub(super) limits: BookLimits,
}

/// A journal record that is well formed but contradicts the state replayed before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InconsistentEvent {
    /// A pending or paid order for more units than the sale had left.
    #[error("order {order_id} takes {quantity} units with only {remaining} left")]
    TakesMissingStock {
        /// The order.
        order_id: String,
        /// Units it holds.
        quantity: u32,
        /// Units the sale had left.
        remaining: u64,
    },
    /// An order created a second time: applying it would take its stock twice.
    #[error("order {order_id} is created twice")]
    DuplicateOrder {
        /// The order.
        order_id: String,
    },
    /// An order whose deadline is before its creation, or further after it than any payment
    /// window (see [`crate::sale::order_table::fits`]).
    #[error("order {order_id} has a deadline outside any payment window")]
    DeadlineOutOfRange {
        /// The order.
        order_id: String,
    },
    /// A cancellation or expiry that would return more units than the sale's stock.
    #[error("closing order {order_id} returns {quantity} units to {remaining} left of a stock of {stock}")]
    ReturnsTooMuch {
        /// The order.
        order_id: String,
        /// Units it returns.
        quantity: u32,
        /// Units the sale had left.
        remaining: u64,
        /// The sale's stock.
        stock: u64,
    },
}

impl Book {
    /// An empty book.
    pub fn new(limits: BookLimits) -> Self {
        Self {
            sales: HashMap::new(),
            orders: OrderTable::new(),
            blocked: HashSet::new(),
            order_counts: OrderCounts::default(),
            rng: SmallRng::from_entropy(),
            limits,
        }
    }

    /// Runs one command at `now_ms`. Returns the reply and the event to persist, if the command
    /// changed anything. The change is already applied when this returns.
    pub fn execute(&mut self, command: Command, now_ms: u64) -> (Reply, Option<Event>) {
        match command {
            Command::UpsertSale(sale) => self.upsert_sale(sale, now_ms),
            Command::GetSale(sku) => (self.view(&sku, now_ms).map(Outcome::Sale), None),
            Command::Purchase(request) => self.purchase(request, now_ms),
            Command::GetOrder(id, requester) => {
                let reply = self
                    .visible_order(&id, &requester)
                    .map(|order| order_outcome(order.to_order(), None));
                (reply, None)
            }
            Command::Pay(id, payment) => self.pay(&id, payment, now_ms),
            Command::Cancel(id, requester) => self.cancel(&id, &requester, now_ms),
            Command::Expire(id) => self.expire_if_due(&id, now_ms),
            Command::ListOrders(sku, user_id) => (
                Ok(Outcome::Orders(self.recent_orders(&sku, &user_id))),
                None,
            ),
            Command::SetBlocked(user_id, blocked) => {
                let event = Event::UserBlocked(user_id, blocked);
                self.apply(&event);
                (Ok(Outcome::Done), Some(event))
            }
            Command::ListSaleOrders(query) => (self.sale_orders(&query), None),
            // One machine's journal cannot lose acknowledged writes behind its back.
            Command::Resume(..) => (Err(SaleError::NotRegressed), None),
            Command::JoinQueue(join) => self.join_queue(join, now_ms),
            Command::GetTicket {
                sku,
                user_id,
                number,
            } => (self.ticket(&sku, &user_id, number, now_ms), None),
            Command::Registrants { sku, offset, limit } => {
                (self.registrants(&sku, offset, limit, now_ms), None)
            }
        }
    }

    /// Applies a change read back from the journal, after checking that it fits the state built
    /// so far. Checksums catch damaged bytes, not a well-formed record that contradicts the
    /// ledger (a bug that wrote it, or a file edited by hand): such a record would otherwise take
    /// stock that is not there, or return more than the sale ever had, and the ledger would no
    /// longer add up. Recovery refuses to start on it instead.
    pub fn replay(&mut self, event: &Event) -> Result<(), InconsistentEvent> {
        self.check_replay(event)?;
        self.apply(event);
        Ok(())
    }

    fn check_replay(&self, event: &Event) -> Result<(), InconsistentEvent> {
        match event {
            Event::OrderCreated { order, .. }
                if self.orders.get(order.order_id.unique).is_some() =>
            {
                return Err(InconsistentEvent::DuplicateOrder {
                    order_id: order.order_id.to_string(),
                });
            }
            Event::OrderCreated { order, .. } if !fits(order) => {
                return Err(InconsistentEvent::DeadlineOutOfRange {
                    order_id: order.order_id.to_string(),
                });
            }
            Event::OrderCreated { order, .. } if order.status.holds_stock() => {
                let Some(ledger) = self.sales.get(&*order.sku) else {
                    return Ok(());
                };
                if ledger.remaining < u64::from(order.quantity) {
                    return Err(InconsistentEvent::TakesMissingStock {
                        order_id: order.order_id.to_string(),
                        quantity: order.quantity,
                        remaining: ledger.remaining,
                    });
                }
            }
            Event::OrderClosed {
                order_id, status, ..
            } if status.returns_stock() => {
                let Some(order) = self.orders.get(order_id.unique) else {
                    return Ok(());
                };
                let Some(ledger) = self.sales.get(&*order_id.sku) else {
                    return Ok(());
                };
                let returned = ledger.remaining.saturating_add(u64::from(order.quantity()));
                if order.status() == OrderStatus::Pending && returned > ledger.sale.stock {
                    return Err(InconsistentEvent::ReturnsTooMuch {
                        order_id: order_id.to_string(),
                        quantity: order.quantity(),
                        remaining: ledger.remaining,
                        stock: ledger.sale.stock,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies a change this book decided (or [`Book::replay`] checked).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::SaleUpserted(sale) => {
                let sku = self.orders.intern_sku(&sale.sku);
                self.sales
                    .insert(sale.sku.clone(), SaleLedger::new(sale.clone(), sku));
            }
            Event::OrderCreated {
                order,
                idempotency_key,
            } => {
                let Some(ledger) = self.sales.get_mut(&*order.sku) else {
                    return;
                };
                // The holder's copy of the id, so that each order does not keep its own.
                let (user_id, holder) = ledger.holders.get_or_default(Arc::clone(&order.user_id));
                if let Some(key) = idempotency_key {
                    holder.keys.insert(key.clone(), order.order_id.unique);
                }
                holder
                    .recent
                    .record(order.created_at, order.order_id.unique);
                ledger.ids.record(order.order_id.unique);
                if order.status.holds_stock() {
                    debug_assert!(ledger.remaining >= u64::from(order.quantity));
                    holder.held = holder.held.saturating_add(order.quantity);
                    ledger.remaining = ledger.remaining.saturating_sub(u64::from(order.quantity));
                    ledger.stock_seq += 1;
                } else {
                    ledger.closed.push_back(order.order_id.unique);
                }
                self.order_counts.add(order.status);
                if let Some(replaced) = self.orders.insert(order, user_id) {
                    self.order_counts.remove(replaced);
                }
            }
            Event::OrderClosed {
                order_id,
                status,
                payment_ref,
            } => self.close(order_id, *status, payment_ref.as_deref()),
            Event::UserBlocked(user_id, true) => {
                self.blocked.insert(user_id.clone());
            }
            Event::UserBlocked(user_id, false) => {
                self.blocked.remove(user_id);
            }
            // The order feed's outbox records; its state is not the book's.
            Event::FeedPublished { .. } | Event::FeedUnpublished(_) => {}
            Event::TicketIssued {
                sku,
                user_id,
                issued_at,
                score,
            } => {
                if let Some(ledger) = self.sales.get_mut(&**sku) {
                    let user_id: Arc<str> = Arc::from(&**user_id);
                    ledger.room.issue(&ledger.sale, user_id, *issued_at, *score);
                }
            }
        }
    }

    /// The queue of every fair-mode sale, for the metrics.
    pub fn queues(&self, now_ms: u64) -> impl Iterator<Item = crate::store::QueueGauge> + '_ {
        self.sales.values().filter_map(move |ledger| {
            crate::store::QueueGauge::of(&ledger.sale, ledger.room.len(), now_ms)
        })
    }

    /// Pending orders and their deadlines, for rebuilding the expiry queue after recovery.
    pub fn pending_deadlines(&self) -> impl Iterator<Item = (OrderId, u64)> + '_ {
        self.orders
            .iter()
            .filter(|order| order.status() == OrderStatus::Pending)
            .map(|order| (order.order_id(), order.expires_at()))
    }

    /// Users on the blocklist whose home is this book.
    pub fn blocked_users(&self) -> impl Iterator<Item = &str> {
        self.blocked.iter().map(|u| &**u)
    }

    /// Sales held by this book.
    pub fn sales(&self) -> impl Iterator<Item = &Sale> {
        self.sales.values().map(|ledger| &ledger.sale)
    }

    /// Orders held, by status. Closed orders beyond the retention limit are forgotten, and
    /// leave these counts with them.
    pub fn order_counts(&self) -> OrderCounts {
        self.order_counts
    }

    /// Remaining stock of every sale.
    pub fn stock_remaining(&self) -> impl Iterator<Item = (&str, u64)> {
        self.sales
            .values()
            .map(|ledger| (&*ledger.sale.sku, ledger.remaining))
    }

    /// Stock level of one sale (zero for an unknown SKU).
    pub fn stock_level(&self, sku: &str) -> StockLevel {
        self.sales.get(sku).map_or(
            StockLevel {
                remaining: 0,
                seq: 0,
            },
            SaleLedger::stock,
        )
    }

    /// `user_id`'s indexed orders of `sku`, newest first.
    fn recent_orders(&self, sku: &str, user_id: &str) -> Vec<Order> {
        let Some(holder) = self
            .sales
            .get(sku)
            .and_then(|ledger| ledger.holders.get(user_id))
        else {
            return Vec::new();
        };
        holder
            .recent
            .newest_first()
            .filter_map(|unique| self.orders.get(unique).map(|order| order.to_order()))
            .collect()
    }

    fn view(&self, sku: &str, now_ms: u64) -> Result<SaleView, SaleError> {
        let ledger = self.sales.get(sku).ok_or(SaleError::UnknownSale)?;
        Ok(ledger.view(now_ms))
    }

    fn upsert_sale(&mut self, sale: Sale, now_ms: u64) -> (Reply, Option<Event>) {
        if let Some(existing) = self.sales.get(&sale.sku) {
            // A sale that has taken orders has started, whatever the clock says now: a wall
            // clock stepped back before its start must not let a replacement reset its stock
            // under orders that still hold some. One that has issued tickets is held to what
            // its shoppers joined: a replacement would drop every ticket and, for a lottery,
            // draw from another seed than the one committed to.
            if existing.sale.has_started(now_ms)
                || existing.has_orders()
                || !existing.room.is_empty()
            {
                return (Err(SaleError::SaleExists), None);
            }
        }
        let event = Event::SaleUpserted(sale);
        self.apply(&event);
        let view = match &event {
            Event::SaleUpserted(sale) => self.view(&sale.sku, now_ms),
            _ => Err(SaleError::Unavailable),
        };
        (view.map(Outcome::Sale), Some(event))
    }

    fn purchase(&mut self, request: PurchaseRequest, now_ms: u64) -> (Reply, Option<Event>) {
        let Some(ledger) = self.sales.get(request.sku.as_str()) else {
            return (Err(SaleError::UnknownSale), None);
        };
        let sale = &ledger.sale;
        if !sale.has_started(now_ms) {
            return (Err(SaleError::NotStarted), None);
        }
        if sale.has_ended(now_ms) {
            return (Err(SaleError::Ended), None);
        }
        let known = ledger.holders.get_key_value(request.user_id.as_str());
        let holder = known.map(|(_, holder)| holder);
        if let (Some(key), Some(holder)) = (&request.idempotency_key, holder) {
            let earlier = holder.keys.get(key);
            if let Some(order) = earlier.and_then(|unique| self.orders.get(unique)) {
                let outcome = Outcome::Order {
                    order: order.to_order(),
                    stock: None,
                    replayed: true,
                };
                return (Ok(outcome), None);
            }
        }
        // Once sold out, everyone hears "sold out", as at every shard's edge; only a request that
        // may be a replay (it carries a key) gets the per-user limit checked first.
        if ledger.remaining == 0 && request.idempotency_key.is_none() {
            return (Err(SaleError::SoldOut), None);
        }
        let held = holder.map_or(0, |holder| holder.held);
        if held.saturating_add(request.quantity) > sale.per_user_limit {
            return (Err(SaleError::LimitExceeded), None);
        }
        let wanted = u64::from(request.quantity);
        if ledger.remaining == 0 {
            return (Err(SaleError::SoldOut), None);
        }
        if ledger.remaining < wanted {
            return (Err(SaleError::InsufficientStock), None);
        }
        let Some(amount) = sale.amount(request.quantity) else {
            return (Err(SaleError::AmountOverflow), None);
        };
        let order = Order {
            order_id: OrderId::mint(Arc::clone(&ledger.sku), now_ms, &mut self.rng),
            sku: Arc::clone(&ledger.sku),
            // A returning shopper's stored id; a new shopper's becomes the stored one.
            user_id: known.map_or_else(
                || Arc::from(request.user_id.as_str()),
                |(shared, _)| Arc::clone(shared),
            ),
            quantity: request.quantity,
            status: OrderStatus::Pending,
            created_at: now_ms,
            // Sales accept at most a week; a longer window could not be stored (see `fits`).
            expires_at: now_ms.saturating_add(sale.payment_timeout_ms.min(MAX_PAYMENT_WINDOW_MS)),
            amount,
            payment_ref: None,
        };
        let event = Event::OrderCreated {
            order: order.clone(),
            idempotency_key: request.idempotency_key,
        };
        self.apply(&event);
        let stock = self.sales.get(&*order.sku).map(SaleLedger::stock);
        let outcome = Outcome::Order {
            order,
            stock,
            replayed: false,
        };
        (Ok(outcome), Some(event))
    }

    /// The order `id`, if this book still holds it.
    pub fn order(&self, id: &OrderId) -> Option<Order> {
        self.orders
            .get(id.unique)
            .filter(|order| *order.sku() == id.sku)
            .map(|order| order.to_order())
    }

    fn visible_order(
        &self,
        id: &OrderId,
        requester: &Requester,
    ) -> Result<OrderRef<'_>, SaleError> {
        self.orders
            .get(id.unique)
            .filter(|order| *order.sku() == id.sku && requester.may_see(order.user_id()))
            .ok_or(SaleError::UnknownOrder)
    }

    /// Pays a pending order on the payment side's word. A repeat of the payment that paid it
    /// (same `payment_ref`) answers the same again; another payment of a paid order is refused
    /// with `order_paid`, and a wrong amount with `amount_mismatch`, leaving the order pending.
    fn pay(&mut self, id: &OrderId, payment: Payment, now_ms: u64) -> (Reply, Option<Event>) {
        let order = match self.visible_order(id, &Requester::Admin) {
            Ok(order) => order,
            Err(refusal) => return (Err(refusal), None),
        };
        match order.status() {
            OrderStatus::Paid if order.payment_ref() == Some(&*payment.payment_ref) => {
                (Ok(order_outcome(order.to_order(), None)), None)
            }
            OrderStatus::Pending
                if now_ms < order.expires_at() && order.amount() != payment.amount =>
            {
                (Err(SaleError::AmountMismatch), None)
            }
            OrderStatus::Pending if now_ms < order.expires_at() => {
                self.close_with_event(id, OrderStatus::Paid, Some(payment.payment_ref))
            }
            _ => self.transition(id, &Requester::Admin, now_ms, OrderStatus::Paid),
        }
    }

    fn cancel(
        &mut self,
        id: &OrderId,
        requester: &Requester,
        now_ms: u64,
    ) -> (Reply, Option<Event>) {
        self.transition(id, requester, now_ms, OrderStatus::Cancelled)
    }

    /// Moves a visible order to `target` (paid or cancelled). Repeating a transition that already
    /// happened answers the same again; a pending order past its deadline expires first, so a
    /// late payment and the expiry sweep can never both win.
    fn transition(
        &mut self,
        id: &OrderId,
        requester: &Requester,
        now_ms: u64,
        target: OrderStatus,
    ) -> (Reply, Option<Event>) {
        let order = match self.visible_order(id, requester) {
            Ok(order) => order,
            Err(refusal) => return (Err(refusal), None),
        };
        match order.status() {
            status if status == target && target != OrderStatus::Paid => {
                (Ok(order_outcome(order.to_order(), None)), None)
            }
            OrderStatus::Pending if now_ms >= order.expires_at() => {
                let (_, event) = self.close_with_event(id, OrderStatus::Expired, None);
                (Err(SaleError::OrderExpired), event)
            }
            OrderStatus::Pending => self.close_with_event(id, target, None),
            OrderStatus::Paid => (Err(SaleError::OrderPaid), None),
            OrderStatus::Cancelled => (Err(SaleError::OrderCancelled), None),
            OrderStatus::Expired => (Err(SaleError::OrderExpired), None),
        }
    }

    /// Expires a pending order whose deadline has passed. A pending order that is not due yet
    /// comes back as it is: the sweep that sent the command read the clock before this did, and
    /// a wall clock stepped back in between must not leave the order outside the expiry queue
    /// (see [`super::expiry::ExpiryQueue::reschedule_if_pending`]).
    fn expire_if_due(&mut self, id: &OrderId, now_ms: u64) -> (Reply, Option<Event>) {
        match self.orders.get(id.unique) {
            Some(order)
                if order.status() == OrderStatus::Pending && now_ms >= order.expires_at() =>
            {
                self.close_with_event(id, OrderStatus::Expired, None)
            }
            Some(order) if order.status() == OrderStatus::Pending => {
                (Ok(order_outcome(order.to_order(), None)), None)
            }
            _ => (Ok(Outcome::Done), None),
        }
    }

    fn close_with_event(
        &mut self,
        id: &OrderId,
        status: OrderStatus,
        payment_ref: Option<Box<str>>,
    ) -> (Reply, Option<Event>) {
        let event = Event::OrderClosed {
            order_id: id.clone(),
            status,
            payment_ref,
        };
        self.apply(&event);
        let stock = self.sales.get(&*id.sku).map(SaleLedger::stock);
        let reply = match self.orders.get(id.unique) {
            Some(order) => Ok(order_outcome(order.to_order(), stock)),
            None => Ok(Outcome::Done),
        };
        (reply, Some(event))
    }

    fn close(&mut self, id: &OrderId, status: OrderStatus, payment_ref: Option<&str>) {
        let Some(order) = self.orders.get(id.unique) else {
            return;
        };
        if order.status() != OrderStatus::Pending || status == OrderStatus::Pending {
            return;
        }
        let (quantity, user_id) = (order.quantity(), Arc::clone(order.user_id()));
        self.orders.set_status(id.unique, status, payment_ref);
        self.order_counts.remove(OrderStatus::Pending);
        self.order_counts.add(status);
        if status == OrderStatus::Paid {
            return;
        }
        let Some(ledger) = self.sales.get_mut(&*id.sku) else {
            return;
        };
        debug_assert!(ledger.remaining + u64::from(quantity) <= ledger.sale.stock);
        ledger.remaining = ledger
            .remaining
            .saturating_add(u64::from(quantity))
            .min(ledger.sale.stock);
        ledger.stock_seq += 1;
        if let Some(holder) = ledger.holders.get_mut(&*user_id) {
            holder.held = holder.held.saturating_sub(quantity);
        }
        ledger.closed.push_back(id.unique);
        while ledger.closed.len() > self.limits.closed_orders_per_sale {
            let Some(oldest) = ledger.closed.pop_front() else {
                break;
            };
            if let Some((forgotten, user_id)) = self.orders.remove(oldest) {
                self.order_counts.remove(forgotten);
                ledger.ids.forget(oldest);
                if let Some(holder) = ledger.holders.get_mut(&*user_id) {
                    holder.keys.forget(oldest);
                    holder.recent.forget(oldest);
                    if holder.is_idle() {
                        ledger.holders.remove(&*user_id);
                    }
                }
            }
        }
    }
}

fn order_outcome(order: Order, stock: Option<StockLevel>) -> Outcome {
    Outcome::Order {
        order,
        stock,
        replayed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    fn payment() -> Payment {
        Payment {
            amount: 0,
            payment_ref: "ref".into(),
        }
    }

    fn sale(stock: u64, per_user_limit: u32) -> Sale {
        Sale {
            sku: "sku".into(),
            name: "Moutai".into(),
            stock,
            starts_at: T0,
            ends_at: T0 + 60_000,
            per_user_limit,
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
        }
    }

    fn buy(book: &mut Book, user: &str, quantity: u32, key: Option<&str>) -> Reply {
        let request =
            PurchaseRequest::new("sku", user, quantity, key.map(Into::into)).expect("ids fit");
        book.execute(Command::Purchase(request), T0 + 1).0
    }

    fn order_of(reply: Reply) -> Order {
        match reply {
            Ok(Outcome::Order { order, .. }) => order,
            other => panic!("expected an order, got {other:?}"),
        }
    }

    #[test]
    fn purchase_ladder_and_stock_return_once() {
        let mut book = Book::new(BookLimits::default());
        book.execute(Command::UpsertSale(sale(3, 2)), T0 - 10)
            .0
            .unwrap();
        let first = order_of(buy(&mut book, "u1", 2, Some("k")));
        assert_eq!(buy(&mut book, "u1", 1, None), Err(SaleError::LimitExceeded));
        let replay = order_of(buy(&mut book, "u1", 2, Some("k")));
        assert_eq!(replay.order_id, first.order_id);
        assert_eq!(
            buy(&mut book, "u2", 2, None),
            Err(SaleError::InsufficientStock)
        );
        order_of(buy(&mut book, "u2", 1, None));
        assert_eq!(buy(&mut book, "u3", 1, None), Err(SaleError::SoldOut));
        let cancel = Command::Cancel(first.order_id.clone(), Requester::Admin);
        book.execute(cancel.clone(), T0 + 2).0.unwrap();
        book.execute(cancel, T0 + 3).0.unwrap();
        assert_eq!(book.stock_level("sku").remaining, 2);
        let pay = Command::Pay(first.order_id, payment());
        assert_eq!(book.execute(pay, T0 + 4).0, Err(SaleError::OrderCancelled));
    }

    #[test]
    fn late_payment_loses_to_the_deadline() {
        let mut book = Book::new(BookLimits::default());
        book.execute(Command::UpsertSale(sale(1, 1)), T0 - 10)
            .0
            .unwrap();
        let order = order_of(buy(&mut book, "u1", 1, None));
        let pay = Command::Pay(order.order_id.clone(), payment());
        let (reply, event) = book.execute(pay, order.expires_at);
        assert_eq!(reply, Err(SaleError::OrderExpired));
        assert!(event.is_some(), "the expiry must be persisted");
        assert_eq!(book.stock_level("sku").remaining, 1);
        let (_, again) = book.execute(Command::Expire(order.order_id), order.expires_at + 5);
        assert!(again.is_none());
        assert_eq!(book.stock_level("sku").remaining, 1);
    }

    #[test]
    fn snapshot_replays_to_the_same_state_and_history_is_bounded() {
        let limits = BookLimits {
            closed_orders_per_sale: 2,
        };
        let mut book = Book::new(limits);
        book.execute(Command::UpsertSale(sale(10, 1)), T0 - 10)
            .0
            .unwrap();
        for round in 0..5 {
            let order = order_of(buy(&mut book, "u1", 1, Some(&format!("k{round}"))));
            book.execute(Command::Cancel(order.order_id, Requester::Admin), T0 + 2)
                .0
                .unwrap();
        }
        order_of(buy(&mut book, "u2", 1, Some("kept")));
        assert_eq!(book.orders.len(), 3);
        let mut copy = Book::new(limits);
        for event in book.snapshot() {
            copy.apply(&event);
        }
        assert_eq!(copy.stock_level("sku").remaining, 9);
        assert_eq!(copy.orders, book.orders);
        let replay = order_of(buy(&mut copy, "u2", 1, Some("kept")));
        assert_eq!(buy(&mut copy, "u2", 1, None), Err(SaleError::LimitExceeded));
        assert_eq!(replay.user_id.as_ref(), "u2");
    }

    #[test]
    fn snapshot_replay_does_not_depend_on_order() {
        let mut book = Book::new(BookLimits::default());
        book.execute(Command::UpsertSale(sale(1, 1)), T0 - 10)
            .0
            .unwrap();
        let first = order_of(buy(&mut book, "a", 1, None));
        book.execute(Command::Cancel(first.order_id, Requester::Admin), T0 + 1)
            .0
            .unwrap();
        order_of(buy(&mut book, "b", 1, None));
        let mut events = book.snapshot();
        // Sales first (they must exist), then orders in the worst order: the holder last.
        events.sort_by_key(|event| !matches!(event, Event::SaleUpserted(_)));
        events[1..].reverse();
        for attempt in [events.clone(), {
            let mut swapped = events.clone();
            swapped[1..].reverse();
            swapped
        }] {
            let mut copy = Book::new(BookLimits::default());
            for event in &attempt {
                copy.apply(event);
            }
            assert_eq!(copy.stock_level("sku").remaining, 0);
            assert_eq!(buy(&mut copy, "c", 1, None), Err(SaleError::SoldOut));
        }
    }

    #[test]
    fn snapshot_keeps_retained_orders_of_users_without_holdings() {
        let limits = BookLimits {
            closed_orders_per_sale: 2,
        };
        let mut book = Book::new(limits);
        book.execute(Command::UpsertSale(sale(5, 1)), T0 - 10)
            .0
            .unwrap();
        for _ in 0..3 {
            let order = order_of(buy(&mut book, "u", 1, None));
            book.execute(Command::Cancel(order.order_id, Requester::Admin), T0 + 2)
                .0
                .unwrap();
        }
        assert_eq!(book.orders.len(), 2, "two closed orders retained");
        let mut copy = Book::new(limits);
        for event in book.snapshot() {
            copy.apply(&event);
        }
        assert_eq!(
            copy.orders, book.orders,
            "retained orders survive a snapshot"
        );
    }

    #[test]
    fn replay_refuses_records_that_contradict_the_ledger() {
        let mut live = Book::new(BookLimits::default());
        let (_, upsert) = live.execute(Command::UpsertSale(sale(2, 5)), T0 - 10);
        let upsert = upsert.expect("an upsert event");
        let request = PurchaseRequest::new("sku", "alice", 2, None).expect("ids fit");
        let (reply, created) = live.execute(Command::Purchase(request), T0 + 1);
        let order = order_of(reply);
        let created = created.expect("an order event");

        let mut replayed = Book::new(BookLimits::default());
        replayed.replay(&upsert).expect("the sale fits");
        replayed.replay(&created).expect("the order fits");
        // The same order twice would take its stock twice.
        assert!(matches!(
            replayed.replay(&created),
            Err(InconsistentEvent::DuplicateOrder { .. })
        ));
        // A deadline before its creation fits no payment window.
        let mut backwards = created.clone();
        if let Event::OrderCreated { order, .. } = &mut backwards {
            order.order_id = OrderId::mint("sku", T0 + 2, &mut SmallRng::seed_from_u64(8));
            order.expires_at = order.created_at - 1;
        }
        let mut fresh = Book::new(BookLimits::default());
        fresh.replay(&upsert).expect("the sale fits");
        assert!(matches!(
            fresh.replay(&backwards),
            Err(InconsistentEvent::DeadlineOutOfRange { .. })
        ));
        // Another order for the same units would take two the sale no longer has.
        let mut twice = created.clone();
        if let Event::OrderCreated { order, .. } = &mut twice {
            order.order_id = OrderId::mint("sku", T0 + 2, &mut SmallRng::seed_from_u64(7));
        }
        assert!(matches!(
            replayed.replay(&twice),
            Err(InconsistentEvent::TakesMissingStock { remaining: 0, .. })
        ));

        // Closing an order returns its units; returning them beyond the stock is refused.
        let mut full = Book::new(BookLimits::default());
        full.replay(&upsert).expect("the sale fits");
        full.apply(&created);
        if let Some(ledger) = full.sales.get_mut("sku") {
            ledger.remaining = 2;
        }
        let close = Event::OrderClosed {
            order_id: order.order_id.clone(),
            status: OrderStatus::Cancelled,
            payment_ref: None,
        };
        assert!(matches!(
            full.replay(&close),
            Err(InconsistentEvent::ReturnsTooMuch { stock: 2, .. })
        ));
        assert!(replayed.replay(&close).is_ok(), "a real cancellation fits");
    }
}
