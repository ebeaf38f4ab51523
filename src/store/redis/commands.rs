//! The store's operations, one per command: each a script or a few plain commands, through
//! [`RedisStore::call`](super::RedisStore) and its retries.

use std::cell::Cell;

use fred::interfaces::{HashesInterface, SetsInterface};
use fred::types::Value;

use super::decode::{decode_order, decode_sale, int_at, refusal_at, str_at};
use super::{keys, RedisError, RedisStore, EXPIRE_PER_SWEEP};
use crate::clock::now_ms;
use crate::sale::command::{
    Command, Outcome, Payment, Reply, Requester, SaleOrdersQuery, StockLevel,
};
use crate::sale::ids::OrderId;
use crate::sale::{Sale, SaleError, SaleView};

impl RedisStore {
    /// The sale and the stock of one part of it (the SKU itself, or one of its buckets), read
    /// by the `SYNC` script without expiring anything.
    pub(super) async fn get_part_sale(
        &self,
        sku: &str,
    ) -> Result<Option<(Sale, StockLevel)>, RedisError> {
        let args = vec![self.0.retention.to_string(), "0".to_owned()];
        let reply = self.script(&self.0.scripts.sync, sku, args).await?;
        decode_sale(sku, reply)
    }

    /// Creates or replaces a sale: one `UPSERT` per part ([`super::buckets`]), part 0 last.
    /// The parts are written one script at a time, not atomically across slots; the order keeps
    /// a half-made sale from being sold from (a node learns a sale's buckets from part 0, and
    /// before part 0 says `K` buckets no purchase goes to the others), and running the same
    /// upsert again repairs one left half-made.
    async fn upsert(&self, sale: Sale) -> Reply {
        let prefix = &self.0.prefix;
        let (sales, home) = (keys::sales(prefix), keys::blocked(prefix));
        let (to_sales, to_home) = (self.route(&sales)?, self.route(&home)?);
        let sku = sale.sku.clone();
        self.retrying(&to_sales, || {
            to_sales.sadd::<i64, _, _>(sales.as_str(), sku.as_ref())
        })
        .await?;
        let blocked: Vec<String> = self
            .retrying(&to_home, || to_home.smembers(home.as_str()))
            .await?;
        let buckets = sale.stock_buckets.max(1);
        // Names this request, so that a run of the script repeated after an unclear outcome is
        // known for what it is (scripts::UPSERT).
        let put_id = format!("{:016x}", rand::random::<u64>());
        let mut total = StockLevel {
            remaining: 0,
            seq: 0,
        };
        for bucket in (0..buckets).rev() {
            let part = keys::part(&sale.sku, bucket);
            let share = sale.stock / u64::from(buckets)
                + u64::from(u64::from(bucket) < sale.stock % u64::from(buckets));
            let mut args = sale_args(&sale);
            args.extend([buckets.to_string(), share.to_string(), put_id.clone()]);
            args.extend(blocked.iter().cloned());
            let moves = keys::move_keys(prefix, &part).to_vec();
            // Acknowledged like a purchase: a sale only the master had would vanish in a
            // failover.
            let upsert = &self.0.scripts.upsert;
            let reply = self
                .acknowledged_script_with(upsert, &part, moves, args)
                .await?;
            let fields = reply.into_array();
            match fields.first().and_then(Value::as_str).as_deref() {
                Some("ok") => {
                    self.reconcile_blocklist(&part, &blocked).await?;
                    let level = StockLevel {
                        remaining: int_at(&fields, 1)?,
                        seq: int_at(&fields, 2)?,
                    };
                    let epoch = int_at(&fields, 3).unwrap_or(0);
                    let mut copy = sale.clone();
                    copy.sku = part.clone();
                    self.created(&copy, level, epoch);
                    total.remaining += level.remaining;
                    total.seq += level.seq;
                }
                Some("err") => return Err(refusal_at(&fields, 1)),
                _ => return Err(SaleError::Unavailable),
            }
        }
        self.0.buckets.borrow_mut().learn(&sale.sku, buckets);
        Ok(Outcome::Sale(SaleView::new(
            &sale,
            total.remaining,
            total.seq,
            now_ms(),
        )))
    }

    /// A block or unblock made while a sale was being created may have written the sale's copy
    /// of the blocklist before the upsert script replaced it; copy the changes since `copied`.
    pub(super) async fn reconcile_blocklist(
        &self,
        sku: &str,
        copied: &[String],
    ) -> Result<(), RedisError> {
        let home = keys::blocked(&self.0.prefix);
        let to_home = self.route(&home)?;
        let now: Vec<String> = self
            .retrying(&to_home, || to_home.smembers(home.as_str()))
            .await?;
        let keys = self.keys(sku);
        let set = keys.blocked();
        let client = &self.route(set)?;
        for user in now.iter().filter(|user| !copied.contains(user)) {
            self.retrying(client, || client.sadd::<i64, _, _>(set, user.as_str()))
                .await?;
        }
        for user in copied.iter().filter(|user| !now.contains(user)) {
            self.retrying(client, || client.srem::<i64, _, _>(set, user.as_str()))
                .await?;
        }
        Ok(())
    }

    async fn get_order(&self, id: &OrderId, requester: &Requester) -> Reply {
        let keys = self.keys(&self.order_part(id).await?);
        let client = &self.route(keys.orders())?;
        // The order's page, and a field of its own (where builds before pages stored it), in
        // one read.
        let field = id.to_string();
        let (page, rest) = super::record::page_of(&field).ok_or(SaleError::UnknownOrder)?;
        let (text, own): (Option<String>, Option<String>) = self
            .retrying(client, || {
                client.hmget::<(Option<String>, Option<String>), _, _>(
                    keys.orders(),
                    vec![page, field.as_str()],
                )
            })
            .await?;
        let raw = text
            .as_deref()
            .and_then(|text| super::record::page_entry(text, rest))
            .or(own.as_deref());
        let order = raw
            .map(|raw| super::record::decode(id, raw))
            .transpose()?
            .filter(|order| requester.may_see(&order.user_id))
            .ok_or(SaleError::UnknownOrder)?;
        Ok(Outcome::Order {
            order,
            stock: None,
            replayed: false,
        })
    }

    async fn transition(
        &self,
        id: &OrderId,
        requester: &Requester,
        target: &str,
        payment: Option<Payment>,
    ) -> Reply {
        let who = match requester {
            Requester::Admin => "*".to_owned(),
            Requester::Shopper(user) => user.to_string(),
        };
        let mut args = vec![
            self.0.retention.to_string(),
            id.to_string(),
            who,
            target.to_owned(),
        ];
        if let Some(payment) = payment {
            args.extend([payment.amount.to_string(), payment.payment_ref.into()]);
        }
        let part = self.order_part(id).await?;
        let split = keys::is_part(&part) || self.buckets_of(&id.sku).await? > 1;
        let reply = self
            .acknowledged_script(&self.0.scripts.transition, &part, args, &Cell::new(false))
            .await?;
        let fields = reply.into_array();
        let level = StockLevel {
            remaining: int_at(&fields, 2)?,
            seq: int_at(&fields, 3)?,
        };
        match fields.first().and_then(Value::as_str).as_deref() {
            Some("ok") => Ok(Outcome::Order {
                order: decode_order(&str_at(&fields, 1)?)?,
                stock: None,
                replayed: false,
            }),
            Some("changed") => Ok(Outcome::Order {
                order: decode_order(&str_at(&fields, 1)?)?,
                // A part's level is not the sale's: the sync sums the parts.
                stock: (!split).then_some(level),
                replayed: false,
            }),
            Some("err") => Err(refusal_at(&fields, 1)),
            _ => Err(SaleError::Unavailable),
        }
    }

    async fn set_blocked(&self, user_id: &str, blocked: bool) -> Reply {
        let prefix = &self.0.prefix;
        let home = keys::blocked(prefix);
        let client = &self.route(&home)?;
        if blocked {
            self.retrying(client, || client.sadd::<i64, _, _>(home.as_str(), user_id))
                .await?;
        } else {
            self.retrying(client, || client.srem::<i64, _, _>(home.as_str(), user_id))
                .await?;
        }
        // Every sale carries its own copy, so the purchase script can check it in its slot.
        let sales = keys::sales(prefix);
        let client = &self.route(&sales)?;
        let skus: Vec<String> = self
            .retrying(client, || client.smembers(sales.as_str()))
            .await?;
        let mut parts = Vec::with_capacity(skus.len());
        for sku in skus {
            parts.extend(self.parts(&sku).await?);
        }
        for sku in parts {
            let keys = self.keys(&sku);
            let set = keys.blocked().to_owned();
            let client = &self.route(&set)?;
            if blocked {
                self.retrying(client, || client.sadd::<i64, _, _>(set.as_str(), user_id))
                    .await?;
            } else {
                self.retrying(client, || client.srem::<i64, _, _>(set.as_str(), user_id))
                    .await?;
            }
        }
        Ok(Outcome::Done)
    }

    /// `user`'s orders of `sku` still held, newest first (the `USER_ORDERS` script).
    async fn list_orders(&self, sku: &str, user: &str) -> Reply {
        // All of a user's orders live in their home bucket.
        let part = self.user_part(sku, user).await?;
        let reply = self
            .script(&self.0.scripts.user_orders, &part, vec![user.to_owned()])
            .await?;
        let mut orders = Vec::new();
        for raw in reply.into_array() {
            let json = raw.as_str().ok_or(SaleError::Unavailable)?;
            orders.push(decode_order(&json)?);
        }
        Ok(Outcome::Orders(orders))
    }

    /// A page of one part's orders in id order (the `SALE_ORDERS` script): the orders and the
    /// last id looked at when more follow.
    pub(super) async fn part_orders(
        &self,
        part: &str,
        query: &SaleOrdersQuery,
    ) -> Result<(Vec<crate::sale::Order>, Option<OrderId>), SaleError> {
        let args = vec![
            query
                .after
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            query
                .status
                .map(|status| status.label().to_owned())
                .unwrap_or_default(),
            query.limit.to_string(),
            crate::sale::sale_orders::MAX_SCANNED.to_string(),
        ];
        let reply = self.script(&self.0.scripts.sale_orders, part, args).await?;
        let fields = reply.into_array();
        match fields.first().and_then(Value::as_str).as_deref() {
            Some("ok") => {}
            Some("err") => return Err(refusal_at(&fields, 1)),
            _ => return Err(SaleError::Unavailable),
        }
        let next = match fields.get(1).and_then(Value::as_str).as_deref() {
            None => return Err(SaleError::Unavailable),
            Some("") => None,
            Some(id) => Some(OrderId::parse(id).ok_or(SaleError::Unavailable)?),
        };
        let mut orders = Vec::new();
        for raw in fields
            .into_iter()
            .nth(2)
            .map(Value::into_array)
            .unwrap_or_default()
        {
            let json = raw.as_str().ok_or(SaleError::Unavailable)?;
            orders.push(decode_order(&json)?);
        }
        Ok((orders, next))
    }

    /// Runs one command against Redis.
    pub(super) async fn run(&self, command: Command) -> Reply {
        match command {
            Command::UpsertSale(sale) => self.upsert(sale).await,
            Command::GetSale(sku) => match self.get_sale(&sku).await? {
                Some((sale, level)) => Ok(Outcome::Sale(SaleView::new(
                    &sale,
                    level.remaining,
                    level.seq,
                    now_ms(),
                ))),
                None => Err(SaleError::UnknownSale),
            },
            Command::Purchase(request) => self.purchase(request).await,
            Command::GetOrder(id, requester) => self.get_order(&id, &requester).await,
            Command::Pay(id, payment) => {
                self.transition(&id, &Requester::Admin, "paid", Some(payment))
                    .await
            }
            Command::Cancel(id, requester) => {
                self.transition(&id, &requester, "cancelled", None).await
            }
            Command::Expire(id) => {
                let args = vec![self.0.retention.to_string(), EXPIRE_PER_SWEEP.to_string()];
                let part = self.order_part(&id).await?;
                self.script(&self.0.scripts.sync, &part, args).await?;
                Ok(Outcome::Done)
            }
            Command::SetBlocked(user_id, blocked) => self.set_blocked(&user_id, blocked).await,
            Command::ListOrders(sku, user) => self.list_orders(&sku, &user).await,
            Command::ListSaleOrders(query) => self.sale_orders(query).await,
            Command::Resume(sku, remaining) => self.resume_sale(&sku, remaining).await,
            Command::JoinQueue(join) => self.join_queue(join).await,
            Command::GetTicket {
                sku,
                user_id,
                number,
            } => self.get_ticket(&sku, &user_id, number).await,
            Command::Registrants { sku, offset, limit } => {
                self.registrants(&sku, offset, limit).await
            }
        }
    }
}

/// A sale's definition as the UPSERT and RESUME scripts take it: name, stock, starts_at,
/// ends_at, per_user_limit, payment_timeout_ms, rate_limit_per_sec, price, currency, and the
/// whole definition as JSON (the order feed's `sale.upserted`, see [`super::feed`]).
pub(super) fn sale_args(sale: &Sale) -> Vec<String> {
    // Serialising a struct of strings and integers cannot fail; an empty definition would only
    // be skipped by the feed, with an error log.
    let json = simd_json::to_string(sale).unwrap_or_default();
    vec![
        sale.name.to_string(),
        sale.stock.to_string(),
        sale.starts_at.to_string(),
        sale.ends_at.to_string(),
        sale.per_user_limit.to_string(),
        sale.payment_timeout_ms.to_string(),
        sale.rate_limit_per_sec.to_string(),
        sale.price.to_string(),
        sale.currency.to_string(),
        json,
    ]
}
