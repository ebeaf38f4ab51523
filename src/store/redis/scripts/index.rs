//! The SKU's orders in id order, for the admin's listing ([`super::SALE_ORDERS`]): `K.ids`.
//!
//! A zset member per order cost about 140 bytes of Redis per order, as much as the order
//! itself. `K.ids` is still a zset (every score 0, so `ZRANGEBYLEX` orders it), but each member
//! is a chunk: up to 64 pages (the milliseconds the orders' ids begin with, each a field of
//! `K.orders`, see `record.rs`), sorted, joined by spaces. Chunks hold disjoint ranges, so they
//! sort as their first pages do, and the chunk that holds a page (or would) is the last one whose
//! first page is not above it. About one byte per order at 16 orders a page. A sale an older
//! build began indexes ids instead, the same way; every entry of one index is one length, which
//! the helpers rely on to find a chunk's last entry without a scan.
//!
//! 64 entries a chunk: enough that a chunk's own cost (a skiplist node and a dict entry, about
//! 80 bytes) is small per entry, few enough that rewriting one (a purchase call that begins a
//! page rewrites the newest) costs little.
//!
//! A purchase call adds the pages it begins to the chunk they fall in (the newest, nearly
//! always: ids start with the time), and forgetting a closed order past the retention removes
//! its page from its chunk once the page is empty.

/// The Lua side, part of every script's prelude.
macro_rules! order_index {
    () => {
        r#"
-- The chunk holding `id`, or the one it would go in; nil when `id` is below every chunk. `~`
-- sorts after every character of an id, the separator before them all.
local function index_chunk(id)
  return redis.call('ZREVRANGEBYLEX', K.ids, '[' .. id .. '~', '-', 'LIMIT', 0, 1)[1]
end
-- The chunk after `member` (nil for the last), or the first chunk when `member` is nil.
local function index_next(member)
  local from = '-'
  if member then from = '(' .. member end
  return redis.call('ZRANGEBYLEX', K.ids, from, '+', 'LIMIT', 0, 1)[1]
end
-- Writes the sorted ids of `text` (ids of length `len` joined by spaces) as chunks.
local function index_write(text, len)
  local count = (#text + 1) / (len + 1)
  for first = 0, count - 1, 64 do
    local last = math.min(count, first + 64)
    redis.call('ZADD', K.ids, 0, string.sub(text, first * (len + 1) + 1, last * (len + 1) - 1))
  end
end
-- The last chunk, as a reply of at most one member.
local function index_tail()
  return redis.call('ZREVRANGEBYLEX', K.ids, '+', '-', 'LIMIT', 0, 1)
end
-- Adds the ids of table `ids` (any order; sorted in place). `tail`, when given, is what
-- `index_tail()` answered earlier in the same script, with nothing written to the index since.
local function index_add(ids, tail)
  table.sort(ids)
  local len, i = #ids[1], 1
  -- The usual case, one read: every id is newer than the last indexed (ids begin with their
  -- time), so they extend the last chunk, or start new ones after a full one.
  local last = (tail or index_tail())[1]
  if not last or ids[1] > string.sub(last, -len) then
    local text = table.concat(ids, ' ')
    if last and (#last + 1) / (len + 1) < 64 then
      redis.call('ZREM', K.ids, last)
      text = last .. ' ' .. text
    end
    index_write(text, len)
    return
  end
  while i <= #ids do
    local member = index_chunk(ids[i])
    if not member then member = index_next(nil) end
    local after = member and index_next(member)
    local bound = after and string.sub(after, 1, len)
    local j = i
    while j <= #ids and (not bound or ids[j] < bound) do j = j + 1 end
    local text = table.concat(ids, ' ', i, j - 1)
    if member then
      redis.call('ZREM', K.ids, member)
      if ids[i] > string.sub(member, -len) then
        text = member .. ' ' .. text
      else
        local all = {}
        for id in string.gmatch(member, '%S+') do all[#all + 1] = id end
        for k = i, j - 1 do all[#all + 1] = ids[k] end
        table.sort(all)
        text = table.concat(all, ' ')
      end
    end
    index_write(text, len)
    i = j
  end
end
-- Removes `id`, a whole entry of its chunk only: a page is also the start of the ids in it,
-- and a sale an older build began indexes ids.
local function index_remove(id)
  local member = index_chunk(id)
  if not member then return end
  local padded = ' ' .. member .. ' '
  local at = string.find(padded, ' ' .. id .. ' ', 1, true)
  if not at then return end
  redis.call('ZREM', K.ids, member)
  local rest = string.sub(string.sub(padded, 1, at) .. string.sub(padded, at + #id + 2), 2, -2)
  if rest ~= '' then redis.call('ZADD', K.ids, 0, rest) end
end
"#
    };
}
