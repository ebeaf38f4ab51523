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
/// SMISMEMBER, HSET, ZADD, XADD; the index is one chunk rewritten when the call begins a page,
/// see [`super::index`]), each user's one entry in `held` (units, then their last orders by
/// ULID) written whole in one HSET, and no order is echoed back. Orders go into pages, one per
/// millisecond of their ids ([`crate::store::redis::record`]): a call's orders nearly always
/// share one, read with one HMGET and written with one HSET. Every order a call makes shares
/// Redis' clock and so its deadline: the call adds one member to `pending` (score the deadline,
/// member the pages, space-separated, moved only later by another call on the same pages;
/// [`expire_due`](super) checks each order's own status and deadline) and one `created` entry
/// to the stream (field `pages`: `.sku`, then each page and the rest of its orders' ids; the
/// order feed reads each order from `orders`, feed.rs).
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
-- The orders of these ids, if any (a retry): in their pages, or, in a sale an older build began
-- (its index lists ids), in fields of their own.
local pages, page_text, own_field = {}, {}, {}
for i = 1, n do
  local page = string.sub(ids[i], 1, 10)
  if page_text[page] == nil then
    pages[#pages + 1] = page
    page_text[page] = false
  end
end
for j, text in ipairs(redis.call('HMGET', K.orders, unpack(pages))) do page_text[pages[j]] = text end
local stored, missing = {}, {}
for i = 1, n do
  local text = page_text[string.sub(ids[i], 1, 10)]
  local from, to = page_find(text or nil, string.sub(ids[i], 11, 26))
  if from then stored[i] = string.sub(text, from, to) else missing[#missing + 1] = i end
end
local legacy = index_before[1] and #string.match(index_before[1], '^%S+') ~= 10
if legacy and #missing > 0 then
  local own = {}
  for j, i in ipairs(missing) do own[j] = ids[i] end
  for j, raw in ipairs(redis.call('HMGET', K.orders, unpack(own))) do
    if raw then
      stored[missing[j]] = raw
      own_field[own[j]] = true
    end
  end
end
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
  for _, id in ipairs(wanted) do earlier_raw[id], own_field[id] = order_raw(id) end
end
-- Decisions, in purchase order; what this batch writes is gathered (as stored), not written yet.
local written, written_ids = {}, {}
local function put(id, stored)
  if not written[id] then written_ids[#written_ids + 1] = id end
  written[id] = stored
end
-- `made[k]` is the k-th order made.
local made, fresh, keyed = {}, {}, {}
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
    local entry, had = ' ' .. string.sub(id, 1, 26), gained[user]
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
    fresh[id] = true
    answer(i, 'ok')
  end
end
-- Writes: the stock first (see above).
if #made > 0 then redis.call('MSET', K.remaining, remaining, K.seq, seq); notify() end
-- Orders, in one HSET: an earlier order a replay claimed where it is stored, then each new one
-- appended to its page (all of them to one, nearly always: ids begin with the millisecond).
local new_pages, made_pages = {}, {}
if #written_ids > 0 then
  local fields, touched = {}, {}
  local function touch(page)
    if not touched[page] then
      touched[page] = true
      fields[#fields + 1] = page
      fields[#fields + 1] = false
    end
  end
  for _, id in ipairs(written_ids) do
    if not fresh[id] then
      if own_field[id] then
        fields[#fields + 1] = id
        fields[#fields + 1] = written[id]
      else
        local page = string.sub(id, 1, 10)
        if page_text[page] == nil then page_text[page] = redis.call('HGET', K.orders, page) end
        page_text[page] = page_put(page_text[page] or nil, id, written[id])
        touch(page)
      end
    end
  end
  local appended = {}
  for _, id in ipairs(made) do
    local page = string.sub(id, 1, 10)
    local entries = appended[page]
    if not entries then
      if not page_text[page] then new_pages[#new_pages + 1] = page end
      entries = {page_text[page] or page_new(id)}
      appended[page] = entries
      made_pages[#made_pages + 1] = page
      touch(page)
    end
    entries[#entries + 1] = '\n' .. string.sub(id, 11, 26) .. ' ' .. written[id]
  end
  for page, entries in pairs(appended) do page_text[page] = table.concat(entries) end
  for j = 1, #fields, 2 do
    if fields[j + 1] == false then fields[j + 1] = page_text[fields[j]] end
  end
  redis.call('HSET', K.orders, unpack(fields))
end
if #made > 0 then
  local holdings = {}
  -- The user's last 32 orders, for GET /v1/orders: ' ' .. ULID each.
  local keep = -32 * 27
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
  -- The stream's entry names the orders by page: `.sku`, then each page and the rest of its
  -- orders' ids, about half the length of the ids in full.
  local listed, page = {page_new(made[1])}, nil
  for _, id in ipairs(made) do
    if string.sub(id, 1, 10) ~= page then
      page = string.sub(id, 1, 10)
      listed[#listed + 1] = page
    end
    listed[#listed + 1] = string.sub(id, 11, 26)
  end
  redis.call('ZADD', K.pending, 'GT', expires, table.concat(made_pages, ' '))
  -- `made` is not read again: the index may sort it in place.
  if legacy then index_add(made, index_before)
  elseif #new_pages > 0 then index_add(new_pages, index_before) end
  -- One entry per call, not per order: one command instead of n, and the ids instead of n
  -- copies of the orders (the feed reads each from `orders`, and skips ghosts per order).
  redis.call('XADD', K.events, 'MAXLEN', '~', 100000, '*', 'event', 'created', 'pages',
             table.concat(listed, ' '))
end
return results
"#
);
