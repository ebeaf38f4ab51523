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
//!
//! **Pages.** A field per order cost about 130 bytes of Redis per order, two thirds of it the
//! hash table's own entry and the id. So `K.orders` holds pages instead: one field per
//! millisecond of the ids (an id's first ten characters; a node mints the ids of one purchase
//! call in the same millisecond, nearly always), whose value is the SKU's id suffix (`.sku`)
//! and then a line per order,
//!
//! ```text
//! .moutai\n<rest of the ULID, 16 characters> <record>\n<rest> <record>...
//! ```
//!
//! About 67 bytes per order at 16 orders a page. No record holds a line break (the fields
//! above cannot, and JSON escapes it), which the scripts check on every write. A page is read
//! and written whole, so a change to one order copies its page: a few hundred bytes to a few
//! kilobytes, as many orders as one SKU's Redis makes in a millisecond. The index of the admin's
//! listing (`scripts/index.rs`), the deadline index (`pending`) and the stream's `created`
//! entries name pages, not every id. Orders a build before pages stored keep their own field
//! (the id) and are read, changed and forgotten there; a sale such a build began keeps indexing
//! ids. So an upgrade needs no migration, but a build before pages cannot read a page: do not
//! roll back below it while a sale is open.

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
-- Pages (see record.rs): the field of order `id`'s page, and the id's part its entry starts with.
local function page_of(id)
  return string.sub(id, 1, 10), string.sub(id, 11, 26)
end
-- The bounds of the record of the entry `rest` in page `text` (first and last character), or nil.
local function page_find(text, rest)
  local at = text and string.find(text, '\n' .. rest .. ' ', 1, true)
  if not at then return nil end
  local stop = string.find(text, '\n', at + 18, true)
  return at + 18, (stop or #text + 1) - 1
end
-- A new page of order `id`'s SKU: the id's suffix (`.sku`), to which entries are appended.
local function page_new(id)
  return string.sub(id, 27)
end
-- `text` (a page, or nil for none yet) with the entry of order `id` set to `record`.
local function page_put(text, id, record)
  if string.find(record, '\n', 1, true) then error('order ' .. id .. ' holds a line break') end
  local _, rest = page_of(id)
  local from, to = page_find(text, rest)
  if not from then return (text or page_new(id)) .. '\n' .. rest .. ' ' .. record end
  return string.sub(text, 1, from - 1) .. record .. string.sub(text, to + 1)
end
-- Order `id`'s record as stored (in its page, or in a field of its own as builds before pages
-- stored it, then with `true`), or nil.
local function order_raw(id)
  local page, rest = page_of(id)
  local text = redis.call('HGET', K.orders, page)
  local from, to = page_find(text, rest)
  if from then return string.sub(text, from, to) end
  local own = redis.call('HGET', K.orders, id)
  return own or nil, own and true
end
local function order_load(id)
  local raw = order_raw(id)
  return raw and order_decode(id, raw)
end
-- Every order of page `page` (its text `text`) as `{id, raw}`, in id order.
local function page_orders(page, text)
  local suffix = string.match(text, '^[^\n]*')
  local out = {}
  for rest, raw in string.gmatch(text, '\n(%S+) ([^\n]*)') do
    out[#out + 1] = {page .. rest .. suffix, raw}
  end
  table.sort(out, function(a, b) return a[1] < b[1] end)
  return out
end
-- Order `o` as `K.orders` stores it.
local function order_encode(o)
  return order_packed(o) or cjson.encode(o)
end
-- Stores order `o`: in its page, unless it is stored in a field of its own already.
local function order_store(o)
  local id = o.order_id
  local page, rest = page_of(id)
  local text = redis.call('HGET', K.orders, page)
  if not page_find(text, rest) and redis.call('HEXISTS', K.orders, id) == 1 then
    redis.call('HSET', K.orders, id, order_encode(o))
  else
    redis.call('HSET', K.orders, page, page_put(text, id, order_encode(o)))
  end
end
-- Forgets order `id`. Returns the page it emptied (which the index then forgets), or nil.
local function order_forget(id)
  local page, rest = page_of(id)
  local text = redis.call('HGET', K.orders, page)
  local from, to = page_find(text, rest)
  if not from then
    redis.call('HDEL', K.orders, id)
    return nil
  end
  text = string.sub(text, 1, from - 19) .. string.sub(text, to + 1)
  if not string.find(text, '\n', 1, true) then
    redis.call('HDEL', K.orders, page)
    return page
  end
  redis.call('HSET', K.orders, page, text)
  return nil
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

/// The field of order `id`'s page in `K.orders` (the id's first ten characters, its
/// millisecond) and the part of the id its entry starts with (the rest of the ULID); `None` for
/// text shorter than an id.
pub fn page_of(id: &str) -> Option<(&str, &str)> {
    Some((id.get(..PAGE_LEN)?, id.get(PAGE_LEN..ULID_LEN)?))
}

/// The record of the entry `rest` in page `text`, if it holds one.
pub fn page_entry<'t>(text: &'t str, rest: &str) -> Option<&'t str> {
    text.split('\n')
        .skip(1)
        .find_map(|entry| entry.strip_prefix(rest)?.strip_prefix(' '))
}

/// Characters of a page's field: an order id's millisecond.
const PAGE_LEN: usize = 10;
/// Characters of an order id's ULID.
const ULID_LEN: usize = 26;

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
    fn a_page_finds_each_entry_by_the_rest_of_its_id() {
        let id = id().to_string();
        let (page, rest) = page_of(&id).unwrap();
        assert_eq!(format!("{page}{rest}.moutai"), id);
        let text = format!(
            ".moutai\n{}1 p 1 1 1 0 bob\n{rest} p 2 1 1 0 alice",
            &rest[..15]
        );
        assert_eq!(page_entry(&text, rest), Some("p 2 1 1 0 alice"));
        assert_eq!(page_entry(".moutai", rest), None);
        assert_eq!(page_of("short"), None);
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
