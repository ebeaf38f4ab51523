//! The order feed's Lua scripts (cluster mode): lease, read and advance of one SKU's stream
//! outbox, see [`super`].

/// The keys every feed script takes, all of one SKU (one hash slot): its stream, its orders,
/// its abandon tombstones, the cursor, the lease, and the orders whose creation was skipped.
macro_rules! feed_prelude {
    () => {
        concat!(
            r#"
local K = {events = KEYS[1], orders = KEYS[2], abandoned = KEYS[3], cursor = KEYS[4], lease = KEYS[5],
           skipped = KEYS[6]}
"#,
            order_record!(),
            r#"
-- Takes or renews the lease for `holder`; false while another holder has it.
local function lease(holder, ttl)
  local current = redis.call('GET', K.lease)
  if current and current ~= holder then return false end
  redis.call('SET', K.lease, holder, 'PX', ttl)
  return true
end
-- A stream entry id as two numbers (ms, seq).
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms or '0'), tonumber(seq or '0')
end
local function after(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am > bm or (am == bm and as > bs)
end
"#
        )
    };
}

/// Takes or renews the lease: `ARGV = [holder, ttl_ms]`. Returns 1 when `holder` has it.
pub const FEED_LEASE: &str = concat!(
    feed_prelude!(),
    r#"
if lease(ARGV[1], ARGV[2]) then return 1 end
return 0
"#
);

/// Takes or renews the lease and reads what to publish next: `ARGV = [holder, ttl_ms, count,
/// grace_ms]`. Returns `{'busy'}` while another pump holds the lease, else `{'ok', cursor,
/// pending, lost, oldest_ms, first_id, entries, more}`: `pending` the entries past the
/// cursor, `lost` how many were trimmed before they were published (not yet acknowledged by
/// [`FEED_ADVANCE`]), `oldest_ms` the time of the first unpublished entry (0: none), `first_id`
/// the oldest entry the stream still holds, and
/// `entries` the events of up to `count` stream entries after the cursor older than the grace
/// period, each `{id, kind, json, skip}` (`id` the stream entry's; `kind` the entry's `event`:
/// `sale` or an order status; `json` the sale or order; `skip` 1 for a ghost's creation or
/// abandon-cancel). A purchase call's `created` entry gives one event per order it names. `more`
/// is 1 when ready entries were left for the next read, `taken` the stream entries read and
/// `last` the id of the last of them (the cursor's next position).
pub const FEED_READ: &str = concat!(
    feed_prelude!(),
    r#"
if not lease(ARGV[1], ARGV[2]) then return {'busy'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cursor = redis.call('HGET', K.cursor, 'id') or '0-0'
local passed = tonumber(redis.call('HGET', K.cursor, 'passed') or '0')
if redis.call('EXISTS', K.events) == 0 then return {'ok', cursor, 0, 0, 0, '0-0', {}, 0} end
local info = redis.call('XINFO', 'STREAM', K.events)
local field = {}
for i = 1, #info, 2 do field[info[i]] = info[i + 1] end
-- The advance trims everything before the cursor, so only the cursor's own entry can precede
-- the unpublished ones.
local pending = field['length'] - #redis.call('XRANGE', K.events, cursor, cursor)
local first = (field['first-entry'] and field['first-entry'][1]) or '0-0'
local lost = 0
if after(first, cursor) then
  -- The stream starts past the cursor: entries may have been trimmed (MAXLEN) unpublished.
  -- Every entry ever added was passed by the cursor, is still here, or is lost. (Redis 7.0's
  -- `max-deleted-entry-id` would be simpler, but trimming does not move it.)
  lost = math.max(0, field['entries-added'] - passed - pending)
end
local raw = redis.call('XRANGE', K.events, '(' .. cursor, '+', 'COUNT', tonumber(ARGV[3]))
local oldest = 0
if raw[1] then oldest = parse_id(raw[1][1]) end
local ready_before = now - tonumber(ARGV[4])
local out = {}
local taken, last = 0, ''
-- The creation of order `order_id` (an entry of one purchase call names its orders in `ids`):
-- the order as stored, back in its state at creation; skipped when it was abandoned as a ghost,
-- and left out when it is gone (forgotten past the retention of closed orders, long after).
local function created(stream_id, order_id)
  local o = order_load(order_id)
  local current, ghost
  if o then
    ghost = o.abandoned == true
    o.status, o.payment_ref = 'pending', nil
    current = order_json(o)
  else
    ghost = redis.call('ZSCORE', K.abandoned, order_id) ~= false
  end
  if ghost then
    redis.call('ZADD', K.skipped, now, order_id)
    out[#out + 1] = {stream_id, 'created', current or '', 1}
  elseif current then
    out[#out + 1] = {stream_id, 'created', current, 0}
  end
end
for _, entry in ipairs(raw) do
  local id, fields = entry[1], entry[2]
  if parse_id(id) > ready_before then break end
  taken, last = taken + 1, id
  local e = {}
  for i = 1, #fields, 2 do e[fields[i]] = fields[i + 1] end
  local kind = e.event or ''
  local json = e.sale or e.order or ''
  local skip = 0
  if kind == 'created' and e.pages then
    -- `.sku`, then each page followed by the rest of its orders' ids (the purchase script).
    local suffix, page
    for token in string.gmatch(e.pages, '%S+') do
      if not suffix then suffix = token
      elseif #token == 10 then page = token
      else created(id, page .. token .. suffix) end
    end
    kind = nil
  elseif kind == 'created' and e.ids then
    -- An older build's entry: the ids in full.
    for order_id in string.gmatch(e.ids, '%S+') do created(id, order_id) end
    kind = nil
  elseif kind ~= 'sale' and e.order_id then
    local current = order_load(e.order_id)
    if json == '' and current then
      -- An entry written before entries carried the order: rebuilt from the order as stored now.
      local o = current
      o.status = e.status
      if e.status ~= 'paid' then o.payment_ref = nil end
      json = order_json(o)
    end
    if kind == 'created' then
      local ghost
      if current then
        ghost = current.abandoned == true
      else
        ghost = redis.call('ZSCORE', K.abandoned, e.order_id) ~= false
      end
      if ghost then
        skip = 1
        redis.call('ZADD', K.skipped, now, e.order_id)
      end
    elseif kind == 'cancelled' and json ~= '' and cjson.decode(json).abandoned == true then
      -- Announced only if its creation was (it was published before the abandon ran).
      if redis.call('ZSCORE', K.skipped, e.order_id) then skip = 1 end
    end
  end
  if kind then out[#out + 1] = {id, kind, json, skip} end
end
local more = 0
if taken == #raw and #raw == tonumber(ARGV[3]) then more = 1 end
return {'ok', cursor, pending, lost, oldest, first, out, more, taken, last}
"#
);

/// Records what JetStream acknowledged: `ARGV = [holder, ttl_ms, last_id, passed, lost,
/// skipped_order_id*]`. Only the lease's holder moves the cursor, and only forward, to
/// `last_id` (counting `passed` entries), then trims the stream before it; `lost` trimmed
/// entries are acknowledged as reported; the skipped orders whose cancel was passed are
/// forgotten. Returns 1, or 0 when `holder` lost the lease (the new holder publishes again from
/// the cursor, and JetStream drops the repeats).
pub const FEED_ADVANCE: &str = concat!(
    feed_prelude!(),
    r#"
if redis.call('GET', K.lease) ~= ARGV[1] then return 0 end
local cursor = redis.call('HGET', K.cursor, 'id') or '0-0'
if ARGV[3] ~= '' and after(ARGV[3], cursor) then
  redis.call('HSET', K.cursor, 'id', ARGV[3])
  redis.call('HINCRBY', K.cursor, 'passed', tonumber(ARGV[4]))
  redis.call('XTRIM', K.events, 'MINID', ARGV[3])
end
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', K.cursor, 'passed', tonumber(ARGV[5])) end
for i = 6, #ARGV do redis.call('ZREM', K.skipped, ARGV[i]) end
-- A ghost whose cancel was trimmed unpublished would stay forever: keep the newest 100,000.
redis.call('ZREMRANGEBYRANK', K.skipped, 0, -100001)
redis.call('PEXPIRE', K.lease, ARGV[2])
return 1
"#
);
