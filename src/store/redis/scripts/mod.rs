//! The Lua scripts that make Redis the cluster's source of truth.
//!
//! Every script takes the same sixteen keys, all of one SKU and all carrying the `{sku}` hash tag, so
//! each runs atomically on one Redis Cluster shard unchanged ([`super::keys::SkuKeys`]). Time is
//! Redis `TIME`, so nodes with drifting clocks still agree on windows and deadlines. Scripts are
//! run with `EVALSHA` and loaded again on `NOSCRIPT` ([`super::RedisStore`]).
//!
//! Orders are stored packed, or as JSON in the shape [`crate::sale::Order`] deserialises
//! ([`super::record`]), with `idem`, the idempotency field that points at them, so forgetting an
//! order also forgets its key. Scripts answer the node with JSON.

/// The admin's listing of a SKU's orders in id order: `K.ids`, chunked. First: the prelude
/// includes its macro.
#[macro_use]
pub mod index;

/// Helpers every script starts with. `K` names the keys by role.
macro_rules! prelude {
    () => {
        concat!(r#"
local K = {sale = KEYS[1], remaining = KEYS[2], seq = KEYS[3], held = KEYS[4], idem = KEYS[5],
           orders = KEYS[6], pending = KEYS[7], blocked = KEYS[8], events = KEYS[9], closed = KEYS[10],
           abandoned = KEYS[11], byuser = KEYS[12], regressed = KEYS[13], ids = KEYS[14],
           tickets = KEYS[15], early = KEYS[16]}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- (Two GETs, not one MGET: MGET reads a key of the wrong type as nil, a stock of 0, where GET
-- fails the script.)
local function level()
  return tonumber(redis.call('GET', K.remaining) or '0'), tonumber(redis.call('GET', K.seq) or '0')
end
-- One entry of the SKU's stream per change of order `o`, carrying `json`, the order exactly as
-- just stored in K.orders (encoded once, by the caller), for the order feed (feed.rs). The other
-- fields stay for readers of the stream that predate `order`.
local function event(kind, o, json)
  redis.call('XADD', K.events, 'MAXLEN', '~', 100000, '*', 'event', kind, 'order_id', o.order_id,
             'user_id', o.user_id, 'quantity', o.quantity, 'status', o.status, 'order', json)
end
-- The stream's entry for a created or replaced sale: `json` is the definition the node sent (the
-- serialised `Sale`), so the feed publishes the same `sale.upserted` as the embedded store.
local function sale_event(json)
  redis.call('XADD', K.events, 'MAXLEN', '~', 100000, '*', 'event', 'sale', 'sale', json)
end
-- Tells every node this SKU changed (notify.rs): one PUBLISH per script call at most, on
-- `PREFIX:changed`, carrying the SKU's hash tag. Nodes sync the SKU at their next tick instead of
-- polling every SKU every tick. A notice lost (no subscriber, a reconnect) costs only latency:
-- nodes still poll each SKU now and then.
local notified = false
local function notify()
  if notified then return end
  notified = true
  local prefix, tag = string.match(K.sale, '^(.*):{([^{}]*)}:[^{}]*$')
  if prefix then redis.call('PUBLISH', prefix .. ':changed', tag) end
end
-- A shopper's entry in K.held, one per shopper: the units their pending and paid orders hold,
-- then their last orders, ' ' .. the ULID of the id each (the id without `.sku`, which every
-- order of the SKU shares), oldest first. `raw` as stored (nil for none); returns the units and
-- the list. Builds before this one listed whole ids, read here as ULIDs; builds before those
-- wrote units alone, with their lists in K.byuser, read as well. Anything else fails the script.
local function holding(raw)
  if not raw then return 0, '' end
  local units, list = string.match(raw, '^(%d+)(.*)$')
  if not units then error('a holding is stored corrupt') end
  if string.find(list, '.', 1, true) then list = string.gsub(list, '%.%S*', '') end
  return tonumber(units), list
end
-- Writes `user`'s entry, or deletes it when it holds nothing and lists nothing.
local function hold(user, units, list)
  if units <= 0 and list == '' then redis.call('HDEL', K.held, user)
  else redis.call('HSET', K.held, user, string.format('%.0f', math.max(units, 0)) .. list) end
end
-- `list` without the entry of order `id`, or nil when it has none.
local function without(list, id)
  local at = list and string.find(list, ' ' .. id, 1, true)
  if not at then return nil end
  return string.sub(list, 1, at - 1) .. string.sub(list, at + #id + 1)
end
-- Drops order `id` from `user`'s list: in their entry, or in an older build's K.byuser.
local function unlist(user, id)
  local units, list = holding(redis.call('HGET', K.held, user))
  local rest = without(list, string.sub(id, 1, 26))
  if rest then return hold(user, units, rest) end
  rest = without(redis.call('HGET', K.byuser, user), id)
  if not rest then return end
  if rest == '' then redis.call('HDEL', K.byuser, user) else redis.call('HSET', K.byuser, user, rest) end
end
"#,
        order_record!(),
        order_index!(),
        r#"
-- Moves pending order `o` to `status`; stock and the user's holding come back unless paid.
-- Closed orders beyond `retention` are forgotten oldest first, with their idempotency keys.
-- Returns the order's JSON as stored.
local function close(o, status, retention)
  o.status = status
  notify()
  order_store(o)
  local json = order_json(o)
  -- Only a member of this order alone; a purchase call's member (all its orders) stays until
  -- its deadline, when `expire_due` passes over the orders no longer pending.
  redis.call('ZREM', K.pending, o.order_id)
  event(status, o, json)
  if status == 'paid' then return json end
  redis.call('INCRBY', K.remaining, o.quantity)
  redis.call('INCR', K.seq)
  local units, list = holding(redis.call('HGET', K.held, o.user_id))
  hold(o.user_id, units - o.quantity, list)
  redis.call('LPUSH', K.closed, o.order_id)
  while redis.call('LLEN', K.closed) > retention do
    local old = redis.call('RPOP', K.closed)
    local gone = order_load(old)
    if gone then
      if gone.idem and redis.call('HGET', K.idem, gone.idem) == old then
        redis.call('HDEL', K.idem, gone.idem)
      end
      -- The index lists pages, or ids for a sale an older build began (whose newer orders are
      -- in pages all the same).
      local emptied = order_forget(old)
      if emptied then index_remove(emptied) end
      index_remove(old)
      unlist(gone.user_id, old)
    end
  end
  return json
end
-- Expires the pending orders due at `now`, about `limit` of them (a member is never split); returns
-- how many orders it looked at. A member is the space-separated pages a purchase call wrote its
-- orders to, scored by their deadline (a later call writing to the same pages only moves it
-- later: ZADD GT), or ids (one, or an older build's purchase call). Each order is expired only
-- if still pending and due (paid, cancelled or forgotten ones are passed over, and a page's
-- orders due later have a member of their own), and the member goes once all are handled.
local function expire_due(now, limit, retention)
  local due = redis.call('ZRANGEBYSCORE', K.pending, '-inf', now, 'LIMIT', 0, limit)
  local handled = 0
  local function expire(o)
    handled = handled + 1
    if o.status == 'pending' and o.expires_at <= now then close(o, 'expired', retention) end
  end
  for _, member in ipairs(due) do
    if handled >= limit then break end
    for token in string.gmatch(member, '%S+') do
      if #token == 10 then
        local text = redis.call('HGET', K.orders, token)
        for _, entry in ipairs(text and page_orders(token, text) or {}) do
          expire(order_decode(entry[1], entry[2]))
        end
      else
        local o = order_load(token)
        if o then expire(o) end
      end
    end
    redis.call('ZREM', K.pending, member)
  end
  return handled
end
-- The calling node's last view of this SKU, from ARGV[at..at+4]: epoch, seq, remaining, starts_at
-- and the node's name; nil when the node knows nothing of it (an empty epoch).
local function known_at(at)
  if ARGV[at] == nil or ARGV[at] == '' then return nil end
  return {epoch = tonumber(ARGV[at]), seq = tonumber(ARGV[at + 1]), remaining = tonumber(ARGV[at + 2]),
          starts_at = tonumber(ARGV[at + 3]), node = ARGV[at + 4]}
end
-- The regression marker, written first if the SKU's state in Redis went backwards from what the
-- calling node `known` saw (lost writes: FLUSHALL, a restart without persistence, an older
-- snapshot): the started sale is gone, its epoch is lower, or its seq is lower in the same epoch.
-- While the marker exists no node sells the SKU; only the RESUME script clears it.
--
-- `seen` is what the caller read already, to save reading it again: `{now, starts_at, epoch,
-- remaining, seq}` with `starts_at` and `epoch` as `K.sale` holds them (nil when absent).
local function regressed_since(known, seen)
  local marker = redis.call('GET', K.regressed)
  if marker or not known then return marker end
  if not seen then
    local sale = redis.call('HMGET', K.sale, 'starts_at', 'epoch')
    local remaining, seq = level()
    seen = {now = now_ms(), starts_at = sale[1], epoch = sale[2], remaining = remaining, seq = seq}
  end
  local now = seen.now
  local reason, found = nil, cjson.null
  if not seen.starts_at then
    if now >= known.starts_at then reason = 'gone' end
  else
    local remaining, seq = seen.remaining, seen.seq
    local epoch = tonumber(seen.epoch or '0')
    found = {epoch = epoch, seq = seq, remaining = remaining}
    if epoch < known.epoch then reason = 'epoch'
    elseif epoch == known.epoch and seq < known.seq then reason = 'seq' end
  end
  if not reason then return nil end
  marker = cjson.encode({reason = reason, detected_at = now, detected_by = known.node,
    last_seen = {epoch = known.epoch, seq = known.seq, remaining = known.remaining}, redis = found})
  redis.call('SET', K.regressed, marker)
  notify()
  return marker
end
"#
        )
    };
}

/// `claimed(o, by)`: an idempotency replay answers attempt `by` with the pending order `o`, so
/// `by`'s caller may now hold a 201 for it; the claim is remembered in the order (`claims`, at
/// most 8, then `kept`), and [`ABANDON`] leaves a claimed order alone. Returns whether `o`
/// changed; writes nothing (the caller stores it, after every check of its batch).
macro_rules! claim {
    () => {
        r#"
local function claimed(o, by)
  if o.status ~= 'pending' or o.kept then return false end
  o.claims = o.claims or {}
  for _, c in ipairs(o.claims) do if c == by then return false end end
  if #o.claims >= 8 then o.kept = true else o.claims[#o.claims + 1] = by end
  return true
end
"#
    };
}

// The purchase script is the hot path's, and the longest: it has its own file.
mod purchase;
pub use purchase::PURCHASE;

// The waiting room's and the lottery's scripts.
mod queue;
pub use queue::{JOIN, REGISTRANTS, TICKET};

/// Pay or cancel: `ARGV = [retention, order_id, requester, target, amount?, payment_ref?]`,
/// where requester is a user id or `*` for an admin (and the payment side) and target is `paid`
/// (with the amount and reference the payment side named) or `cancelled`. A payment of another
/// amount is refused (`amount_mismatch`) and changes nothing; a paid order answers a repeat of
/// its payment (same reference) as before and refuses any other (`order_paid`). A pending order past its deadline
/// expires instead (stock returns once) and the answer is `order_expired`: whichever of a late
/// payment and the expiry comes first wins. Returns `{outcome, order_json_or_code, remaining,
/// seq}`.
pub const TRANSITION: &str = concat!(
    prelude!(),
    r#"
local retention, id, requester, target = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local o = order_load(id)
local remaining, seq = level()
if not o or (requester ~= '*' and o.user_id ~= requester) then
  return {'err', 'unknown_order', remaining, seq}
end
local paying, ref = target == 'paid', ARGV[6]
if o.status == target and not (paying and o.payment_ref ~= ref) then
  return {'ok', order_json(o), remaining, seq}
end
if o.status == 'pending' then
  if now_ms() >= o.expires_at then
    close(o, 'expired', retention)
    remaining, seq = level()
    return {'err', 'order_expired', remaining, seq}
  end
  if paying then
    if (o.amount or 0) ~= tonumber(ARGV[5]) then return {'err', 'amount_mismatch', remaining, seq} end
    o.payment_ref = ref
  end
  local json = close(o, target, retention)
  remaining, seq = level()
  return {'changed', json, remaining, seq}
end
local codes = {paid = 'order_paid', cancelled = 'order_cancelled', expired = 'order_expired'}
return {'err', codes[o.status] or 'unavailable', remaining, seq}
"#
);

/// Reads the sale and, for the holder of the SKU's reclaimer lease only, reclaims due orders:
/// `KEYS` are the sixteen of every script plus the lease and its fencing counter
/// ([`super::reclaim`]); `ARGV = [retention, limit, epoch, seq, remaining, starts_at, node,
/// token, ttl_ms]`. The five after `limit` are the node's last view of the SKU (empty when it
/// has none), against which the script detects a regression and writes the marker
/// (`regressed_since`). With a `token`, the script takes the lease if it is free (`SET NX PX`,
/// and `INCR` of the fencing counter) or renews it if `token` holds it, and sweeps (at most
/// `limit` due orders) only then; with an empty token it only reads (and without the last two
/// arguments it sweeps unconditionally, for an explicit expiry). The lease saves work, it
/// does not make the sweep safe: each order's state is checked and changed in the same atomic
/// step, so every due order is expired exactly once however many callers sweep, and none is
/// missed when a node dies. Returns `{}` for an unknown SKU, `{'', marker}` for a gone one with
/// the regression marker, else `{name, stock, starts_at, ends_at, per_user_limit,
/// payment_timeout_ms, rate_limit_per_sec, remaining, seq, expired, epoch, marker_or_empty,
/// price, currency, holder, fence, pending, next_due_in, stock_buckets, definition, tickets}` (price 0 and currency empty for a sale
/// made before prices; `holder` 1 when `token` holds the lease, `fence` the lease's fencing
/// number, `pending` the members of `pending` not yet swept (one per purchase call, holding
/// the orders it made; each order's own status says whether it still awaits payment), `next_due_in` milliseconds until the
/// first of them is due, -1 for none; `definition` the sale as JSON, empty for one made before
/// it was kept, see [`super::decode::decode_sale`]; `tickets` those of its waiting room or
/// lottery). A node whose view is newer than the marker's `last_seen`
/// (same epoch) widens it, so the resume starts from the newest view any node had.
pub const SYNC: &str = concat!(
    prelude!(),
    r#"
local known = known_at(3)
local marker = regressed_since(known)
if marker and known then
  local report = cjson.decode(marker)
  local seen = report.last_seen
  if known.epoch > seen.epoch or (known.epoch == seen.epoch and known.seq > seen.seq) then
    report.last_seen = {epoch = known.epoch, seq = known.seq, remaining = known.remaining}
    marker = cjson.encode(report)
    redis.call('SET', K.regressed, marker)
  end
end
local sale = redis.call('HMGET', K.sale, 'name', 'stock', 'starts_at', 'ends_at', 'per_user_limit',
                        'payment_timeout_ms', 'rate_limit_per_sec', 'epoch')
if not sale[1] then
  if marker then return {'', marker} end
  return {}
end
-- The reclaimer lease (reclaim.rs): taken only when free, renewed only by its holder, both
-- here, in the same atomic step as the sweep it guards.
local holder, token = 0, ARGV[8] or ''
if token ~= '' then
  local current = redis.call('GET', KEYS[17])
  if not current then
    redis.call('INCR', KEYS[18])
    redis.call('SET', KEYS[17], token, 'NX', 'PX', ARGV[9])
    holder = 1
  elseif current == token then
    redis.call('PEXPIRE', KEYS[17], ARGV[9])
    holder = 1
  end
end
local expired = 0
-- No token at all (an explicit expiry, `Command::Expire`): sweeps unconditionally.
if (holder == 1 or ARGV[8] == nil) and ARGV[2] ~= '0' then
  expired = expire_due(now_ms(), tonumber(ARGV[2]), tonumber(ARGV[1]))
end
local remaining, seq = level()
local epoch = tonumber(sale[8] or '0')
for i = 2, 7 do sale[i] = tonumber(sale[i]) end
sale[8], sale[9], sale[10], sale[11], sale[12] = remaining, seq, expired, epoch, marker or ''
local priced = redis.call('HMGET', K.sale, 'price', 'currency')
sale[13], sale[14] = tonumber(priced[1] or '0'), priced[2] or ''
sale[15], sale[16] = holder, tonumber((KEYS[18] and redis.call('GET', KEYS[18])) or '0')
sale[17] = redis.call('ZCARD', K.pending)
local first = redis.call('ZRANGE', K.pending, 0, 0, 'WITHSCORES')
sale[18] = -1
if first[2] then sale[18] = math.max(0, tonumber(first[2]) - now_ms()) end
sale[19] = tonumber(redis.call('HGET', K.sale, 'buckets') or '1')
sale[20] = redis.call('HGET', K.sale, 'def') or ''
sale[21] = tonumber(redis.call('HGET', K.tickets, '#n') or '0')
return sale
"#
);

/// Creates or replaces a sale: `ARGV = [name, stock, starts_at, ends_at, per_user_limit,
/// payment_timeout_ms, rate_limit_per_sec, price, currency, sale_json, stock_buckets, share,
/// put_id, blocked_user*]`, where `sale_json` is the definition serialised, added to the SKU's
/// stream as a `sale` entry for the order feed, `share` the units of this bucket of the stock
/// (all of it with one bucket; see [`super::buckets`]), and `put_id` names the operator's
/// request: the node runs the script again when it could not tell whether a run took effect
/// (Redis' `WAIT` timed out, a connection dropped), and that run must answer as the first did
/// rather than refuse its own sale as started. `KEYS` may carry two more, the bucket's move
/// records, cleared with the rest of a replaced sale. A sale that has started, or whose waiting
/// room or lottery has issued a ticket, cannot be replaced (`{'err', 'sale_exists'}`), nor one whose store regressed (`store_regressed`); a replaced one starts afresh, with the blocklist copied in
/// so the purchase script can check it within the SKU's hash slot. Returns `{'ok', remaining,
/// seq, epoch}` (a replaced sale keeps its epoch).
pub const UPSERT: &str = concat!(
    prelude!(),
    r#"
if redis.call('EXISTS', K.regressed) == 1 then return {'err', 'store_regressed'} end
local starts = redis.call('HGET', K.sale, 'starts_at')
-- A sale whose waiting room or lottery has issued tickets is held to what its shoppers joined,
-- as one that has started is.
local ticketed = tonumber(redis.call('HGET', K.tickets, '#n') or '0') > 0
if ticketed or (starts and now_ms() >= tonumber(starts)) then
  if redis.call('HGET', K.sale, 'put') ~= ARGV[13] then return {'err', 'sale_exists'} end
  local remaining, seq = level()
  return {'ok', remaining, seq, tonumber(redis.call('HGET', K.sale, 'epoch') or '0')}
end
redis.call('DEL', K.held, K.idem, K.orders, K.pending, K.blocked, K.closed, K.byuser, K.ids,
           K.tickets, K.early)
if KEYS[18] then redis.call('DEL', KEYS[17], KEYS[18]) end
redis.call('HSET', K.sale, 'name', ARGV[1], 'stock', ARGV[2], 'starts_at', ARGV[3], 'ends_at', ARGV[4],
           'per_user_limit', ARGV[5], 'payment_timeout_ms', ARGV[6], 'rate_limit_per_sec', ARGV[7],
           'price', ARGV[8], 'currency', ARGV[9], 'buckets', ARGV[11], 'put', ARGV[13], 'def', ARGV[10])
redis.call('SET', K.remaining, ARGV[12])
local seq = redis.call('INCR', K.seq)
for i = 14, #ARGV do redis.call('SADD', K.blocked, ARGV[i]) end
sale_event(ARGV[10])
notify()
return {'ok', tonumber(ARGV[12]), seq, tonumber(redis.call('HGET', K.sale, 'epoch') or '0')}
"#
);

/// Resumes a SKU whose store regressed, on an operator's order: `ARGV = [epoch, seq, remaining,
/// starts_at, node, wanted_remaining, (name, stock, starts_at, ends_at, per_user_limit,
/// payment_timeout_ms, rate_limit_per_sec, price, currency, sale_json, stock_buckets)?]`:
/// the calling node's last view, the remaining stock the operator set (empty: the lower of
/// Redis's and the newest view's), and the node's copy of the sale, which re-creates it when
/// Redis lost it (and, unless `sale_json` is empty, adds a `sale` entry to the stream for the
/// order feed, as [`UPSERT`] does). With more than one stock bucket the keys are one bucket of
/// several: its share of the stock is not known, so neither are the units lost with it. Seq and
/// epoch move past every view any node had, so no node mistakes the resumed state for a
/// regression, and every node adopts it. Returns
/// `{'ok', report_json}` or `{'err', code}`.
pub const RESUME: &str = concat!(
    prelude!(),
    r#"
local marker = redis.call('GET', K.regressed)
if not marker then return {'err', 'not_regressed'} end
local report = cjson.decode(marker)
local known = known_at(1)
local seen = report.last_seen
if known and (known.epoch > seen.epoch or (known.epoch == seen.epoch and known.seq > seen.seq)) then
  seen = {epoch = known.epoch, seq = known.seq, remaining = known.remaining}
end
local exists = redis.call('HGET', K.sale, 'stock')
local remaining, seq = level()
local epoch = tonumber(redis.call('HGET', K.sale, 'epoch') or '0')
local stock
local before = cjson.null
if exists then
  stock = tonumber(exists)
  before = {epoch = epoch, seq = seq, remaining = remaining}
else
  if ARGV[7] == nil then return {'err', 'unknown_sale'} end
  stock = tonumber(ARGV[8])
  redis.call('HSET', K.sale, 'name', ARGV[7], 'stock', ARGV[8], 'starts_at', ARGV[9], 'ends_at', ARGV[10],
             'per_user_limit', ARGV[11], 'payment_timeout_ms', ARGV[12], 'rate_limit_per_sec', ARGV[13],
             'price', ARGV[14] or '0', 'currency', ARGV[15] or 'CNY', 'buckets', ARGV[17] or '1',
             'def', ARGV[16] or '')
  if ARGV[16] and ARGV[16] ~= '' then sale_event(ARGV[16]) end
end
local lost
if exists and epoch == seen.epoch then
  lost = math.max(0, remaining - seen.remaining)
elseif exists then
  lost = math.max(0, math.min(remaining, stock) - seen.remaining)
elseif tonumber(ARGV[17] or '1') > 1 then
  lost = cjson.null
else
  lost = stock - seen.remaining
end
local wanted
if ARGV[6] ~= '' then
  wanted = math.min(tonumber(ARGV[6]), stock)
elseif exists then
  wanted = math.min(remaining, seen.remaining)
else
  wanted = seen.remaining
end
local new_seq = math.max(seq, seen.seq) + 1
local new_epoch = math.max(epoch, seen.epoch) + 1
redis.call('SET', K.remaining, wanted)
redis.call('SET', K.seq, new_seq)
redis.call('HSET', K.sale, 'epoch', new_epoch)
redis.call('DEL', K.regressed)
notify()
return {'ok', cjson.encode({regression = report, last_seen = seen, redis_before = before,
  units_possibly_lost = lost, resumed = {epoch = new_epoch, seq = new_seq, remaining = wanted},
  resumed_at = now_ms()})}
"#
);

/// A user's orders of one SKU, newest first: `ARGV = [user_id]`. Reads the orders `PURCHASE`
/// lists in the user's entry of `held` (the last 32 of that user, by ULID; an older build's
/// `byuser` list first, by id) and returns the JSON of each order still held.
pub const USER_ORDERS: &str = concat!(
    prelude!(),
    r#"
local _, list = holding(redis.call('HGET', K.held, ARGV[1]))
local ids = (redis.call('HGET', K.byuser, ARGV[1]) or '') .. list
-- The SKU of these keys (a bucket's keys carry `sku~bucket`): the ULIDs' suffix.
local suffix = '.' .. string.match(K.sale, '{([^{}~]*)')
local out = {}
for id in string.gmatch(ids, '%S+') do
  if #id == 26 then id = id .. suffix end
  local o = order_load(id)
  if o then table.insert(out, 1, order_json(o)) end
end
return out
"#
);

/// A page of the SKU's orders in id order, for the admin: `ARGV = [after, status, limit,
/// max_scanned]` (`after` and `status` empty for none). `K.ids` holds the pages of every retained
/// order in order ([`index`]; ULIDs sort by time), or their ids for a sale an older build began. At most `max_scanned` ids are looked at. Returns
/// `{'ok', next, {order_json*}}`, `next` the last id looked at when more follow, else empty; or
/// `{'err', 'unknown_sale'}`.
pub const SALE_ORDERS: &str = concat!(
    prelude!(),
    r#"
if redis.call('EXISTS', K.sale) == 0 then return {'err', 'unknown_sale'} end
local after, status, limit, budget = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local member
if after ~= '' then member = index_chunk(after) end
if not member then member = index_next(nil) end
local out, last, scanned = {}, '', 0
local after_page = string.sub(after, 1, 10)
while member do
  for token in string.gmatch(member, '%S+') do
    -- A page (its orders, in id order), or an id of a sale an older build began.
    local orders = {{token}}
    if #token == 10 then
      local text = token >= after_page and redis.call('HGET', K.orders, token)
      orders = text and page_orders(token, text) or {}
    end
    for _, entry in ipairs(orders) do
      local id = entry[1]
      if id > after then
        if #out >= limit or scanned >= budget then return {'ok', last, out} end
        scanned, last = scanned + 1, id
        local o
        if entry[2] then o = order_decode(id, entry[2]) else o = order_load(id) end
        if o and (status == '' or o.status == status) then out[#out + 1] = order_json(o) end
      end
    end
  end
  member = index_next(member)
end
return {'ok', '', out}
"#
);

/// Gives up on purchases whose caller was answered 503 though the script may have run (a ghost):
/// `ARGV = [retention, n, (order_id, user_id, idempotency_key)*n]`. Each attempt id is
/// tombstoned in `K.abandoned` (so a late copy of it cannot create the order, see [`PURCHASE`]);
/// the order it made, or the one it claimed by a replay, is cancelled like a shopper's cancel
/// (stock and holding back once, event `cancelled`, idempotency key forgotten) when it is still
/// pending and it and every claim on it are tombstoned. Tombstones older than an hour, or
/// beyond the newest 100,000, are trimmed. Returns one of `cancelled`, `claimed` (kept for a
/// buyer who got a 201), `settled` (paid, cancelled or expired already) or `absent` per id.
/// The full rule is in [`super::abandon`].
pub const ABANDON: &str = concat!(
    prelude!(),
    r#"
local retention, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', K.abandoned, '-inf', now - 3600000)
local function gone(id) return redis.call('ZSCORE', K.abandoned, id) ~= false end
local results = {}
for i = 0, n - 1 do
  local id, user, key = ARGV[3 + i * 3], ARGV[4 + i * 3], ARGV[5 + i * 3]
  redis.call('ZADD', K.abandoned, now, id)
  local o = order_load(id)
  if not o and key ~= '' then
    -- The attempt may have been a replay of an earlier order: that order is its business only
    -- if the replay really ran (it left its claim).
    local earlier = redis.call('HGET', K.idem, user .. '\0' .. key)
    local x = earlier and order_load(earlier)
    for _, c in ipairs((x and x.claims) or {}) do if c == id then o = x end end
  end
  local outcome = 'absent'
  if o and o.status ~= 'pending' then
    outcome = 'settled'
  elseif o then
    local free = not o.kept and gone(o.order_id)
    for _, c in ipairs(o.claims or {}) do free = free and gone(c) end
    if free then
      -- Marked, so the order feed can tell this ghost's cancel from a shopper's (feed.rs): no
      -- shopper saw the order, so neither its creation nor this cancel is announced.
      o.abandoned = true
      close(o, 'cancelled', retention)
      if o.idem and redis.call('HGET', K.idem, o.idem) == o.order_id then
        redis.call('HDEL', K.idem, o.idem)
      end
      outcome = 'cancelled'
    else
      outcome = 'claimed'
    end
  end
  results[#results + 1] = outcome
end
local excess = redis.call('ZCARD', K.abandoned) - 100000
if excess > 0 then redis.call('ZREMRANGEBYRANK', K.abandoned, 0, excess - 1) end
return results
"#
);
