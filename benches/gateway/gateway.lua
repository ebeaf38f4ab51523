-- The industry gateway seckill is compared against (issue 13): OpenResty-style, one EVALSHA per
-- purchase over a pooled cosocket, no batching, no expiry index, no stream, no idempotency.
-- Debian ships lua-nginx-module but not lua-resty-redis, so the few lines of RESP it needs are
-- here. Configured by nginx.conf (`set $redis_port`, `set $gateway_sha`).
local function command(sock, args)
  local out = {'*', #args, '\r\n'}
  for _, arg in ipairs(args) do
    out[#out + 1] = '$' .. #arg .. '\r\n' .. arg .. '\r\n'
  end
  local ok, err = sock:send(table.concat(out))
  if not ok then return nil, err end
  local line, rerr = sock:receive('*l')
  if not line then return nil, rerr end
  local kind = line:sub(1, 1)
  if kind == ':' then return tonumber(line:sub(2)) end
  return nil, line
end

local sock = ngx.socket.tcp()
sock:settimeout(2000)
local ok, err = sock:connect('127.0.0.1', tonumber(ngx.var.redis_port))
if not ok then
  ngx.status = 503
  ngx.say('{"error":"unavailable"}')
  return
end
local user = ngx.var.http_x_user or 'u-1'
local id = string.format('%d-%d-%d', ngx.worker.pid(), ngx.now() * 1000, math.random(1, 2 ^ 30))
local order = '{"order_id":"' .. id .. '","user_id":"' .. user ..
  '","quantity":1,"status":"pending","created_at":' .. string.format('%d', ngx.now() * 1000) .. '}'
local result, rerr = command(sock, {'EVALSHA', ngx.var.gateway_sha, '3', 'gw:stock', 'gw:held',
  'gw:orders', user, '1000000000', id, order})
sock:setkeepalive(60000, 128)
if result == 1 then
  ngx.status = 201
  ngx.say(order)
elseif result == 0 then
  ngx.status = 409
  ngx.say('{"error":"sold_out"}')
elseif result == -1 then
  ngx.status = 409
  ngx.say('{"error":"limit_exceeded"}')
else
  ngx.status = 503
  ngx.say('{"error":"unavailable","detail":"' .. tostring(rerr) .. '"}')
end
