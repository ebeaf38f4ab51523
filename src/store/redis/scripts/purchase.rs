//! The purchase script: the one every acknowledged order goes through, batched per SKU.

/// Purchases, batched: `ARGV = [retention, n, (order_id, user_id, quantity,
/// idempotency_key)*n, epoch, seq, remaining, starts_at, node]` (an empty key means none; the
/// last five are the node's last view of the SKU, see `regressed_since`). A new order is stored
/// packed ([`crate::store::redis::record`]), a string put together without a table or cjson.
/// Checks, in order: an abandoned order id (refused, see [`ABANDON`](super::ABANDON)), a retry of the same order
/// id, an idempotency replay (which claims the order), a regressed store, the sale window, the
/// blocklist, the per-user limit, the stock.
///
/// Returns `{remaining, seq, created_at, expires_at, price, row*}`: the stock level before the
/// batch, what every order made by this call shares (Redis' clock, the deadline, the unit
/// price), then one row per purchase: `ok` for an order made (the node knows the rest of it, so
/// nothing of it is echoed), a refusal code, or `{retried|replay, order_json}` for an order
/// made earlier. The level after each purchase follows from the rows: each `ok` takes its
/// quantity and one seq, nothing else changes the stock.
///
/// Fail-safe: Redis does not roll a script back when a command fails halfway, so the script reads
/// and checks everything (the type of every key it writes included) and decides every purchase
/// before its first write; then the stock is written first. A key of the wrong type (planted by
/// hand) therefore fails the batch before anything changed, and were a later write to fail anyway
/// the units are already taken: the SKU would undersell, never oversell, and never hold an order
/// without its unit. (The only earlier write is the regression marker, which is right either way.)
///
/// Cheap: each key is read or written with one variadic command per batch (HMGET, ZMSCORE,
/// SMISMEMBER, HSET, ZADD, XADD; the id index is one chunk rewritten, see
/// [`super::index`]), each user's one entry in `held` (units, then their last order ids)
/// written whole in one HSET, and no order is echoed back. Every order a call makes shares
/// Redis' clock and so its deadline: the call adds one member to `pending` (score the deadline,
/// member the ids, space-separated; [`expire_due`](super) checks each order's own status) and one
/// `created` entry to the stream (field `ids`; the order feed reads each order from `orders`,
/// feed.rs).
pub const PURCHASE: &str = concat!(
    prelude!(),
    claim!(),
    r#"
local n = tonumber(ARGV[2])
-- The keys this script only writes, type-checked now (a wrong type fails these reads); the id
-- index's last chunk is read for `index_add` at the same time.
redis.call('ZCARD', K.pending)
local index_before = index_tail()
redis.call('XLEN', K.events)
local sale = redis.call('HMGET', K.sale, 'starts_at', 'ends_at', 'per_user_limit', 'payment_timeout_ms', 'price', 'epoch')
-- The API bounds the price so that price * 100 units stays exact in a Lua number.
local price = tonumber(sale[5] or '0')
local now = now_ms()
-- Stock is read once and written once per batch: the script runs atomically, so nothing else
-- can change it in between.
local remaining, seq = level()
local results = {remaining, seq}
-- The node's last view of the SKU follows the purchases (`regressed_since`).
local regressed = regressed_since(known_at(#ARGV - 4),
  {now = now, starts_at = sale[1], epoch = sale[6], remaining = remaining, seq = seq})
local ids, users, idems, distinct, idem_list = {}, {}, {}, {}, {}
for i = 1, n do
  local at = 3 + (i - 1) * 4
  ids[i], users[i] = ARGV[at], ARGV[at + 1]
  if ARGV[at + 3] ~= '' then
    idems[i] = users[i] .. '\0' .. ARGV[at + 3]
    idem_list[#idem_list + 1] = idems[i]
  end
  if not distinct[users[i]] then
    distinct[users[i]] = true
    distinct[#distinct + 1] = users[i]
  end
end
local user_list = {}
for j = 1, #distinct do user_list[j] = distinct[j] end
local stored = redis.call('HMGET', K.orders, unpack(ids))
local gone = redis.call('ZMSCORE', K.abandoned, unpack(ids))
local blocked_flags = redis.call('SMISMEMBER', K.blocked, unpack(user_list))
local held_values = redis.call('HMGET', K.held, unpack(user_list))
local blocked, held, listed = {}, {}, {}
for j, user in ipairs(user_list) do
  blocked[user] = blocked_flags[j] == 1
  held[user], listed[user] = holding(held_values[j])
end
-- Idempotency keys: the order each names, and that order as stored.
local earlier, earlier_raw = {}, {}
if #idem_list > 0 then
  local named = redis.call('HMGET', K.idem, unpack(idem_list))
  local wanted = {}
  for j, key in ipairs(idem_list) do
    if named[j] then
      earlier[key] = named[j]
      wanted[#wanted + 1] = named[j]
    end
  end
  if #wanted > 0 then
    local raws = redis.call('HMGET', K.orders, unpack(wanted))
    for j, id in ipairs(wanted) do earlier_raw[id] = raws[j] end
  end
end
-- Decisions, in purchase order; what this batch writes is gathered (as stored), not written yet.
local written, written_ids = {}, {}
local function put(id, stored)
  if not written[id] then written_ids[#written_ids + 1] = id end
  written[id] = stored
end
-- `made[k]` is the k-th order made.
local made, keyed = {}, {}
local ttl = tonumber(sale[4] or '0')
local expires = now + ttl
results[3], results[4], results[5] = now, expires, price
-- Order ids each user gained, appended to their list once per batch: one entry (a string, no
-- table, for the usual shopper with one order), or a table of them (one shopper with many
-- orders in a batch would otherwise copy a growing list per order).
local gained = {}
-- A new order packed (record.rs): `p quantity created_at ttl amount user_id [idem]`.
local times = ' ' .. string.format('%.0f %.0f', now, ttl) .. ' '
-- The window and the limit, read once for the batch (nil with no sale: `unknown_sale` first).
local starts_at, ends_at, limit = tonumber(sale[1]), tonumber(sale[2]), tonumber(sale[3])
local free = price == 0
-- Purchase `i`'s row of the reply.
local function answer(i, outcome, detail)
  if outcome == 'err' then results[5 + i] = detail
  elseif outcome == 'ok' then results[5 + i] = 'ok'
  else results[5 + i] = {outcome, detail} end
end
for i = 1, n do
  local at = 3 + (i - 1) * 4
  local id, user, qty, idem = ids[i], users[i], tonumber(ARGV[at + 2]), idems[i]
  local retried = written[id] or stored[i]
  local prior = idem and earlier[idem]
  local replayed = prior and (written[prior] or earlier_raw[prior])
  if gone[i] then
    -- A late copy of an attempt whose node gave up on it (see abandon.rs): nobody waits.
    answer(i, 'err', 'unavailable')
  elseif retried then
    answer(i, 'retried', order_json(order_decode(id, retried)))
  elseif replayed then
    local o = order_decode(prior, replayed)
    if claimed(o, id) then put(prior, order_encode(o)) end
    answer(i, 'replay', order_json(o))
  elseif regressed then
    answer(i, 'err', 'store_regressed')
  elseif not starts_at then
    answer(i, 'err', 'unknown_sale')
  elseif now < starts_at then
    answer(i, 'err', 'not_started')
  elseif now >= ends_at then
    answer(i, 'err', 'ended')
  elseif blocked[user] then
    answer(i, 'err', 'blocked')
  elseif remaining == 0 and not idem then
    answer(i, 'err', 'sold_out')
  elseif held[user] + qty > limit then
    answer(i, 'err', 'limit_exceeded')
  elseif remaining == 0 then
    answer(i, 'err', 'sold_out')
  elseif remaining < qty then
    answer(i, 'err', 'insufficient_stock')
  else
    local amount = free and '0' or string.format('%.0f', qty * price)
    local stored = 'p ' .. ARGV[at + 2] .. times .. amount .. ' ' .. user
    if idem then stored = stored .. ' ' .. idem end
    remaining = remaining - qty
    seq = seq + 1
    held[user] = held[user] + qty
    local entry, had = ' ' .. id, gained[user]
    if not had then gained[user] = entry
    elseif type(had) == 'string' then gained[user] = {had, entry}
    else had[#had + 1] = entry end
    put(id, stored)
    if idem then
      earlier[idem] = id
      keyed[#keyed + 1] = idem
      keyed[#keyed + 1] = id
    end
    made[#made + 1] = id
    answer(i, 'ok')
  end
end
-- Writes: the stock first (see above).
if #made > 0 then redis.call('MSET', K.remaining, remaining, K.seq, seq); notify() end
if #written_ids > 0 then
  local fields = {}
  for _, id in ipairs(written_ids) do
    fields[#fields + 1] = id
    fields[#fields + 1] = written[id]
  end
  redis.call('HSET', K.orders, unpack(fields))
end
if #made > 0 then
  local holdings = {}
  -- The user's last 32 order ids, for GET /v1/orders: ids of one SKU are all one length.
  local keep = -32 * (#made[1] + 1)
  for _, user in ipairs(user_list) do
    if gained[user] then
      local entries = gained[user]
      if type(entries) == 'table' then entries = table.concat(entries) end
      holdings[#holdings + 1] = user
      holdings[#holdings + 1] = string.format('%.0f', held[user])
                                .. string.sub(listed[user] .. entries, keep)
    end
  end
  redis.call('HSET', K.held, unpack(holdings))
  if #keyed > 0 then redis.call('HSET', K.idem, unpack(keyed)) end
  local batch = table.concat(made, ' ')
  redis.call('ZADD', K.pending, expires, batch)
  -- `made` is not read again: the index may sort it in place.
  index_add(made, index_before)
  -- One entry per call, not per order: one command instead of n, and the ids instead of n
  -- copies of the orders (the feed reads each from `orders`, and skips ghosts per order).
  redis.call('XADD', K.events, 'MAXLEN', '~', 100000, '*', 'event', 'created', 'ids', batch)
end
return results
"#
);
