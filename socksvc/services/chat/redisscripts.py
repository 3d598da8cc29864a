"""
The chat bus's Lua scripts: each is one atomic step on the Redis server.

Keys are under one prefix, C{socksvc:{CLUSTER}:} (the braces keep every key
of a cluster in one hash slot), and are computed inside the scripts from
it; a node's id and member ids never contain C{|}.

  - C{log}: the stream; C{seq}: the cluster sequence (INCR per entry)
  - C{node:ID}: a node's heartbeat (PX node_timeout); C{nodes}: the set of node ids
  - C{members:ID}: a node's presence hash, member id -> JSON record
  - C{topics}: room key -> JSON record
  - C{nick:LOOK}: a nickname lease, "node|member|since|nick" (PX node_timeout)
"""

from __future__ import annotations

_OLDER = """
local function older(a, b)
  local an, am, as = string.match(a, '^([^|]*)|(%d+)|(%d+)|')
  local bn, bm, bs = string.match(b, '^([^|]*)|(%d+)|(%d+)|')
  if not as then return false end
  if not bs then return true end
  if tonumber(as) ~= tonumber(bs) then return tonumber(as) < tonumber(bs) end
  return (an .. '|' .. am) < (bn .. '|' .. bm)
end
local function holder_alive(p, v)
  local n = string.match(v, '^([^|]*)|')
  return n ~= nil and redis.call('EXISTS', p .. 'node:' .. n) == 1
end
"""

PUBLISH = """
-- ARGV: prefix, node, maxlen (0: none), max age ms (0: none), then per entry:
--       hash op ('', set, del, topic), hash field, hash value, number of fields, the fields.
-- Returns the entries' ids, in order.
local p = ARGV[1]
local trim = {}
if ARGV[3] ~= '0' then
  trim = {'MAXLEN', '~', ARGV[3]}
elseif ARGV[4] ~= '0' then
  local t = redis.call('TIME')
  local floor = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[4])
  trim = {'MINID', '~', string.format('%d', floor)}
end
local ids = {}
local i = 5
while i <= #ARGV do
  local op, field, value, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local q = redis.call('INCR', p .. 'seq')
  local args = {'XADD', p .. 'log'}
  for _, a in ipairs(trim) do table.insert(args, a) end
  table.insert(args, '*')
  for k = i + 4, i + 3 + n do table.insert(args, ARGV[k]) end
  table.insert(args, 'q'); table.insert(args, tostring(q))
  table.insert(ids, redis.call(unpack(args)))
  if op == 'set' then
    redis.call('HSET', p .. 'members:' .. ARGV[2], field, value)
  elseif op == 'del' then
    redis.call('HDEL', p .. 'members:' .. ARGV[2], field)
  elseif op == 'topic' then
    redis.call('HSET', p .. 'topics', field, value)
  end
  i = i + 4 + n
end
return ids
"""

CLAIM = (
    _OLDER
    + """
-- ARGV: prefix, look key, lease value, ttl ms. Returns false when the lease is ours, else its holder's value.
local k = ARGV[1] .. 'nick:' .. ARGV[2]
local cur = redis.call('GET', k)
if cur == false or cur == ARGV[3] or not holder_alive(ARGV[1], cur) then
  redis.call('SET', k, ARGV[3], 'PX', ARGV[4])
  return false
end
return cur
"""
)

RELEASE = """
-- ARGV: prefix, look key, lease value: delete the lease if that value still holds it.
local k = ARGV[1] .. 'nick:' .. ARGV[2]
if redis.call('GET', k) == ARGV[3] then redis.call('DEL', k) end
return 1
"""

BEAT = (
    _OLDER
    + """
-- ARGV: prefix, node, ttl ms, number of leases, then look/value pairs, then node ids to check.
-- Returns {clashes (look, holder, ...), dead nodes, seq, was alive (1/0), retaken looks, live nodes}.
local p, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local alive = redis.call('EXISTS', p .. 'node:' .. node)
redis.call('SET', p .. 'node:' .. node, '1', 'PX', ttl)
redis.call('SADD', p .. 'nodes', node)
local n = tonumber(ARGV[4])
local clashes = {}
local retaken = {}
for i = 5, 4 + 2 * n, 2 do
  local k = p .. 'nick:' .. ARGV[i]
  local mine = ARGV[i + 1]
  local cur = redis.call('GET', k)
  if cur == false or cur == mine or not holder_alive(p, cur) then
    redis.call('SET', k, mine, 'PX', ttl)
  elseif older(mine, cur) then
    redis.call('SET', k, mine, 'PX', ttl)
    table.insert(retaken, ARGV[i])
  else
    table.insert(clashes, ARGV[i]); table.insert(clashes, cur)
  end
end
local dead = {}
for i = 5 + 2 * n, #ARGV do
  if redis.call('EXISTS', p .. 'node:' .. ARGV[i]) == 0 then table.insert(dead, ARGV[i]) end
end
local live = 0
for _, other in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  live = live + redis.call('EXISTS', p .. 'node:' .. other)
end
return {clashes, dead, redis.call('GET', p .. 'seq') or '0', alive, retaken, live}
"""
)

SNAPSHOT = """
-- ARGV: prefix. Returns {last id, seq, {node, {field, value, ...}, ...}, {room, topic, ...}}.
local p = ARGV[1]
local last = redis.call('XREVRANGE', p .. 'log', '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
local nodes = {}
for _, n in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if redis.call('EXISTS', p .. 'node:' .. n) == 1 then
    table.insert(nodes, n); table.insert(nodes, redis.call('HGETALL', p .. 'members:' .. n))
  end
end
return {id, redis.call('GET', p .. 'seq') or '0', nodes, redis.call('HGETALL', p .. 'topics')}
"""

FORGET = """
-- ARGV: prefix, node: a node that stopped beating (or is stopping) is forgotten.
redis.call('SREM', ARGV[1] .. 'nodes', ARGV[2])
redis.call('DEL', ARGV[1] .. 'members:' .. ARGV[2])
if ARGV[3] == 'leave' then redis.call('DEL', ARGV[1] .. 'node:' .. ARGV[2]) end
return 1
"""

SCRIPTS = {"publish": PUBLISH, "claim": CLAIM, "release": RELEASE, "beat": BEAT, "snapshot": SNAPSHOT, "forget": FORGET}
