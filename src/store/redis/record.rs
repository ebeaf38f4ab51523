//! How Redis stores an order: packed in the common case, JSON otherwise.
//!
//! Orders are most of a busy sale's Redis memory, so an order as a purchase makes it, and as it
//! stays when paid without a reference, cancelled or expired, is stored packed: its fields
//! joined by spaces,
//!
//! ```text
//! status quantity created_at ttl amount user_id [idem]
//! ```
//!
//! `status` one letter (`p`ending, paid `y`, `c`ancelled, `e`xpired), `ttl` = `expires_at -
//! created_at`, `idem` the idempotency entry that points at the order (user, NUL, key). The order
//! id and the SKU are the hash field it is stored under, so neither is repeated. About 40 bytes,
//! against 170 as JSON. An order that gained anything else (a payment reference, the claims of
//! idempotent replays, the ghost mark of [`super::abandon`]), and every order a build before
//! this one wrote, is JSON, which starts with `{`; a packed record never does. None of the
//! fields can hold a space: ids and user ids are `[A-Za-z0-9_-]`, keys visible ASCII.
//!
//! Scripts read both forms through `order_load` and answer the node with JSON (`order_json`);
//! the node reads both as well ([`decode`]), for `GET /v1/orders/{id}`, which reads the hash
//! without a script.

use super::decode::decode_order;
use crate::sale::ids::OrderId;
use crate::sale::{Order, OrderStatus, SaleError};

/// The Lua side, for every script that reads or writes `K.orders`.
macro_rules! order_record {
    () => {
        r#"
local ORDER_STATUS = {p = 'pending', y = 'paid', c = 'cancelled', e = 'expired'}
local ORDER_LETTER = {pending = 'p', paid = 'y', cancelled = 'c', expired = 'e'}
-- Order `o` packed, or nil when it holds more than the packed form can.
local function order_packed(o)
  local letter = ORDER_LETTER[o.status]
  if not letter or o.payment_ref or o.claims or o.kept or o.abandoned then return nil end
  local packed = string.format('%s %.0f %.0f %.0f %.0f ', letter, o.quantity, o.created_at,
                               o.expires_at - o.created_at, o.amount or 0) .. o.user_id
  if o.idem then packed = packed .. ' ' .. o.idem end
  return packed
end
-- Order `id` as a table, from `raw` as stored. A record in neither form fails the script (the
-- node answers 503) rather than being read as something else.
local function order_decode(id, raw)
  if string.byte(raw, 1) == 123 then return cjson.decode(raw) end
  local letter, qty, created, ttl, amount, user, idem =
    string.match(raw, '^(%a) (%d+) (%d+) (%d+) (%d+) (%S+) ?(.*)$')
  if not ORDER_STATUS[letter] then error('order ' .. id .. ' is stored corrupt') end
  created = tonumber(created)
  local o = {order_id = id, sku = string.sub(id, 28), user_id = user, quantity = tonumber(qty),
             status = ORDER_STATUS[letter], created_at = created,
             expires_at = created + tonumber(ttl), amount = tonumber(amount)}
  if idem ~= '' then o.idem = idem end
  return o
end
local function order_load(id)
  local raw = redis.call('HGET', K.orders, id)
  return raw and order_decode(id, raw)
end
-- Order `o` as `K.orders` stores it.
local function order_encode(o)
  return order_packed(o) or cjson.encode(o)
end
local function order_store(o)
  redis.call('HSET', K.orders, o.order_id, order_encode(o))
end
-- Order `o` as JSON for the node (`crate::sale::Order` plus `idem`); numbers in full, where
-- cjson would round past 14 digits.
local function order_json(o)
  if o.claims or o.kept or o.abandoned then return cjson.encode(o) end
  local json = string.format('{"order_id":%s,"sku":%s,"user_id":%s,"quantity":%.0f,"status":"%s",' ..
    '"created_at":%.0f,"expires_at":%.0f,"amount":%.0f', cjson.encode(o.order_id),
    cjson.encode(o.sku), cjson.encode(o.user_id), o.quantity, o.status, o.created_at,
    o.expires_at, o.amount or 0)
  if o.payment_ref then json = json .. ',"payment_ref":' .. cjson.encode(o.payment_ref) end
  if o.idem then json = json .. ',"idem":' .. cjson.encode(o.idem) end
  return json .. '}'
end
"#
    };
}

/// Order `id` from `raw` as `K.orders` holds it, in either form.
pub fn decode(id: &OrderId, raw: &str) -> Result<Order, SaleError> {
    if raw.starts_with('{') {
        return decode_order(raw);
    }
    decode_packed(id, raw).ok_or_else(|| {
        tracing::error!(order_id = %id, "an order in redis is stored corrupt");
        SaleError::Unavailable
    })
}

fn decode_packed(id: &OrderId, raw: &str) -> Option<Order> {
    let mut fields = raw.splitn(7, ' ');
    let status = match fields.next()? {
        "p" => OrderStatus::Pending,
        "y" => OrderStatus::Paid,
        "c" => OrderStatus::Cancelled,
        "e" => OrderStatus::Expired,
        _ => return None,
    };
    let mut number = || fields.next()?.parse::<u64>().ok();
    let (quantity, created_at, ttl, amount) = (number()?, number()?, number()?, number()?);
    let user_id = fields.next().filter(|user| !user.is_empty())?;
    Some(Order {
        order_id: id.clone(),
        sku: id.sku.clone(),
        user_id: user_id.into(),
        quantity: u32::try_from(quantity).ok()?,
        status,
        created_at,
        expires_at: created_at.checked_add(ttl)?,
        amount,
        payment_ref: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> OrderId {
        OrderId::mint("moutai", 1_796_362_316_538, &mut rand::thread_rng())
    }

    #[test]
    fn packed_orders_decode_with_their_id_and_sku() {
        let id = id();
        let order = decode(&id, "y 2 1796362316538 900000 3998 alice alice\0key").unwrap();
        assert_eq!(order.order_id, id);
        assert_eq!(&*order.sku, "moutai");
        assert_eq!(&*order.user_id, "alice");
        assert_eq!(order.quantity, 2);
        assert_eq!(order.status, OrderStatus::Paid);
        assert_eq!(order.expires_at, 1_796_363_216_538);
        assert_eq!(order.amount, 3998);
    }

    #[test]
    fn corrupt_records_are_refused() {
        for raw in [
            "",
            "x 1 1 1 1 alice",
            "p 1 1 1 alice",
            "p -1 1 1 1 alice",
            "p 1 1 1 1 ",
            "[[[]]]",
            "p 99999999999 1 1 1 alice",
        ] {
            assert_eq!(
                decode(&id(), raw).unwrap_err(),
                SaleError::Unavailable,
                "{raw:?}"
            );
        }
    }
}
