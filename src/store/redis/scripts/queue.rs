//! A sale's waiting room in Redis ([`crate::sale::waiting_room`] has the rules). Every node
//! joins the same queue, so there is one line and one early order for the whole cluster.
//!
//! `K.tickets` is a hash: shopper → `number issued_at` for an early ticket, `number issued_at
//! line slot` for a late one; `#<number>` → shopper; and the counters `#n` (tickets), `#late`
//! (late tickets) and `#slot` (the next slot a late ticket may take). `K.early` is a zset of the
//! early tickets' shoppers scored by their score's top 52 bits (exact in a double), so after the
//! start an early ticket's place is its `ZRANK`: the draw costs nothing and needs no step of its
//! own. The settings come from the definition JSON the sale's hash keeps (`def`).

/// What the scripts share: the settings, and a ticket's placement as the node reads it,
/// `{'ok', issued, number, issued_at, line, slot, remaining, now, starts_at, ends_at, rate,
/// admission, stock, per_user_limit, overbooking_percent}` (`line` and `slot` -1 before the
/// start). A lottery's registrations are its early tickets, scored by the draw.
macro_rules! queue_prelude {
    () => {
        r#"
local now = now_ms()
if redis.call('EXISTS', K.regressed) == 1 then return {'err', 'store_regressed'} end
local s = redis.call('HMGET', K.sale, 'starts_at', 'ends_at', 'def')
if not s[1] then return {'err', 'unknown_sale'} end
local ok, def = pcall(cjson.decode, s[3] or '{}')
if not ok or type(def) ~= 'table' then return {'err', 'unavailable'} end
local lottery = def.admission == 'lottery'
if def.admission ~= 'waiting_room' and not lottery then return {'err', 'no_waiting_room'} end
local starts, ends = tonumber(s[1]), tonumber(s[2])
local rate = math.max(1, tonumber(def.admission_rate) or 1)
local function placed(issued, user, record)
  local number, at, line, slot = string.match(record, '^(%d+) (%d+) ?(%d*) ?(%d*)$')
  if not number then return {'err', 'unavailable'} end
  if line == '' then
    line, slot = -1, -1
    if now >= starts then
      line = redis.call('ZRANK', K.early, user)
      slot = line
    end
  end
  local remaining = level()
  return {'ok', issued, tonumber(number), tonumber(at), tonumber(line), tonumber(slot), remaining,
          now, starts, ends, rate, def.admission, tonumber(def.stock) or 0,
          tonumber(def.per_user_limit) or 1, tonumber(def.overbooking_percent) or 100}
end
"#
    };
}

/// Issues shopper `ARGV[1]` (score `ARGV[2]`, 52 bits) a ticket or a lottery registration, or
/// answers with the one they hold; `ARGV[3]` caps the tickets. Refusals: `unknown_sale`,
/// `store_regressed`, `no_waiting_room`, `queue_not_open`, `registration_closed`, `ended`,
/// `blocked`, `sold_out`, `queue_full`.
pub const JOIN: &str = concat!(
    prelude!(),
    queue_prelude!(),
    r#"
local user = ARGV[1]
local mine = redis.call('HGET', K.tickets, user)
if mine then return placed(0, user, mine) end
local opens = lottery and def.register_from or def.queue_opens_at
if now < (tonumber(opens) or 0) then return {'err', 'queue_not_open'} end
if lottery and now >= starts then return {'err', 'registration_closed'} end
if now >= ends then return {'err', 'ended'} end
if redis.call('SISMEMBER', K.blocked, user) == 1 then return {'err', 'blocked'} end
if level() <= 0 then return {'err', 'sold_out'} end
local issued = tonumber(redis.call('HGET', K.tickets, '#n') or '0')
if issued >= tonumber(ARGV[3]) then return {'err', 'queue_full'} end
local number = redis.call('HINCRBY', K.tickets, '#n', 1)
local record
if now < starts then
  redis.call('ZADD', K.early, ARGV[2], user)
  record = number .. ' ' .. now
else
  local early = redis.call('ZCARD', K.early)
  local late = redis.call('HINCRBY', K.tickets, '#late', 1) - 1
  local free = tonumber(redis.call('HGET', K.tickets, '#slot') or early)
  local slot = math.max(free, math.floor((now - starts) * rate / 1000))
  redis.call('HSET', K.tickets, '#slot', string.format('%.0f', slot + 1))
  record = number .. ' ' .. now .. ' ' .. (early + late) .. ' ' .. string.format('%.0f', slot)
end
redis.call('HSET', K.tickets, user, record, '#' .. number, user)
return placed(1, user, record)
"#
);

/// Ticket `ARGV[2]` if shopper `ARGV[1]` holds it, or with `ARGV[2]` empty the one they hold
/// (`unknown_ticket` otherwise).
pub const TICKET: &str = concat!(
    prelude!(),
    queue_prelude!(),
    r#"
local user = ARGV[1]
if ARGV[2] ~= '' and redis.call('HGET', K.tickets, '#' .. ARGV[2]) ~= user then
  return {'err', 'unknown_ticket'}
end
local mine = redis.call('HGET', K.tickets, user)
if not mine then return {'err', 'unknown_ticket'} end
return placed(0, user, mine)
"#
);

/// A page of a lottery's registrants in drawn order: `ARGV = [offset, limit]`. Returns `{'ok',
/// total, drawn, user*}` (no users before the draw); `no_lottery` for another sale.
pub const REGISTRANTS: &str = concat!(
    prelude!(),
    queue_prelude!(),
    r#"
if not lottery then return {'err', 'no_lottery'} end
local total = redis.call('ZCARD', K.early)
local reply = {'ok', total, 0}
if now < starts then return reply end
reply[3] = 1
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit <= 0 then return reply end
local users = redis.call('ZRANGE', K.early, offset, offset + limit - 1)
for i = 1, #users do reply[3 + i] = users[i] end
return reply
"#
);
