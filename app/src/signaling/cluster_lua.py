"""Lua scripts of the Redis backend (cluster.py). Each runs atomically inside Redis.

Key layout (prefix ``P``, default ``sig:``):

* ``P s:<id>``   hash: token, room, role, name, seq, sent, inst, transport, recv
  (highest client sequence number handled), gen (claim generation)
* ``P t:<token>`` the session id a token belongs to
* ``P q:<id>``   stream: the session's mailbox; entry id ``<seq>-0``, field ``f`` = frame
* ``P r:<room>`` hash: secret (a hash of it), host (session id or '')
* ``P m:<room>`` hash: member id -> ``{"id","role","name"}`` JSON
* ``P public``   set of sessions in no room
* ``P exp``      sorted set: session id -> deadline (unix seconds)
* channel ``P i:<instance>``: frames for sessions attached to that instance,
  as ``<id> <seq> <frame>``, and ``K <id>`` to close a superseded socket.
  The scripts called on the hot path (DELIVER, RELAY) do not publish to the
  calling instance itself: they return ``{seq, inst}`` and the caller writes
  to its own socket directly. Notifications (peer-joined, peer-left) are
  published to every holder, the caller included.

Ids and room names are URL-safe by construction (protocol.ROOM_RE and
secrets.token_urlsafe), so the scripts may splice them into JSON.
"""

from __future__ import annotations

# Shared functions, prepended to every script. ARGV[1] is always the key
# prefix, ARGV[2] the mailbox length, ARGV[3] this instance's name.
COMMON = r"""
local P, MAXLEN, SELF = ARGV[1], ARGV[2], ARGV[3]

local function deliver(id, prefix, to_self)
  local skey = P .. 's:' .. id
  local inst = redis.call('HGET', skey, 'inst')
  if not inst then return nil end
  local seq = redis.call('HINCRBY', skey, 'seq', 1)
  local frame = prefix .. seq .. '}'
  redis.call('XADD', P .. 'q:' .. id, 'MAXLEN', MAXLEN, seq .. '-0', 'f', frame)
  if inst ~= '' and (to_self or inst ~= SELF) then
    redis.call('PUBLISH', P .. 'i:' .. inst, id .. ' ' .. seq .. ' ' .. frame)
  end
  return {seq, inst}
end

-- A message's client sequence number (ARGV cseq, '' for none), checked and
-- counted in the same script as the message's effect, so that a message is
-- handled exactly once even if the instance dies right after: 0 handle it
-- (now counted), 1 a repeat of one handled, 2 beyond the next one expected.
local function admit(id, cseq)
  if cseq == '' then return 0 end
  local skey = P .. 's:' .. id
  local r = redis.call('HGET', skey, 'recv')
  if not r then
    if redis.call('EXISTS', skey) == 0 then return 0 end  -- gone: the handler says so
    r = 0
  end
  local n = tonumber(cseq)
  if n <= tonumber(r) then return 1 end
  if n > tonumber(r) + 1 then return 2 end
  redis.call('HSET', skey, 'recv', cseq)
  return 0
end

local function leave(id, public_again)
  local skey = P .. 's:' .. id
  local s = redis.call('HMGET', skey, 'room', 'role')
  local room, role = s[1], s[2]
  if not room or room == '' then return false end
  local rkey, mkey = P .. 'r:' .. room, P .. 'm:' .. room
  redis.call('HDEL', mkey, id)
  local visible = {}
  if role == 'host' then
    redis.call('HSET', rkey, 'host', '')
    visible = redis.call('HKEYS', mkey)
  else
    local host = redis.call('HGET', rkey, 'host')
    if host and host ~= '' then visible = {host} end
  end
  if redis.call('HLEN', mkey) == 0 then redis.call('DEL', rkey, mkey) end
  redis.call('HSET', skey, 'room', '', 'role', '')
  if public_again then redis.call('SADD', P .. 'public', id) end
  local note = '{"type":"peer-left","room":"' .. room .. '","id":"' .. id .. '","seq":'
  for _, other in ipairs(visible) do deliver(other, note, true) end
  return room
end

local function close(id)
  local skey = P .. 's:' .. id
  local token = redis.call('HGET', skey, 'token')
  if not token then return 0 end
  leave(id, false)
  redis.call('DEL', skey, P .. 'q:' .. id, P .. 't:' .. token)
  redis.call('SREM', P .. 'public', id)
  redis.call('ZREM', P .. 'exp', id)
  return 1
end
"""

# ARGV[4] id, ARGV[5] prefix -> {seq, inst} or nil when the session is gone.
DELIVER = COMMON + r"""
return deliver(ARGV[4], ARGV[5], false)
"""

# ARGV[4] id, ARGV[5] cseq or '' -> 0 handle, 1 repeat, 2 gap (for messages
# whose effect is not a script of its own: ack, list, refused messages)
ADMIT = COMMON + r"""
return admit(ARGV[4], ARGV[5])
"""

# ARGV[4] id, ARGV[5] cseq or '', ARGV[6] '"ref":<JSON>,' or ''
# -> -3 repeat, -4 gap, {seq, inst, received}, or nil when the session is gone
PONG = COMMON + r"""
local verdict = admit(ARGV[4], ARGV[5])
if verdict ~= 0 then return -3 - (verdict - 1) end
local received = redis.call('HGET', P .. 's:' .. ARGV[4], 'recv') or '0'
local out = deliver(ARGV[4], '{"type":"pong",' .. ARGV[6] .. '"received":' .. received .. ',"seq":', false)
if out then out[3] = received end
return out
"""

# ARGV[4] sender id, ARGV[5] target id, ARGV[6] prefix, ARGV[7] public_mode '1'|'0',
# ARGV[8] cseq or '' -> -1 unknown peer, -2 forbidden, -3 repeat, -4 gap, or {seq, inst}
RELAY = COMMON + r"""
local verdict = admit(ARGV[4], ARGV[8])
if verdict ~= 0 then return -3 - (verdict - 1) end
local sender = redis.call('HMGET', P .. 's:' .. ARGV[4], 'room', 'role')
local target = redis.call('HMGET', P .. 's:' .. ARGV[5], 'inst', 'room', 'role')
if not target[1] then return -1 end
local sroom, troom = sender[1] or '', target[2] or ''
local ok
if sroom == '' then
  ok = ARGV[7] == '1' and troom == ''
elseif troom ~= sroom then
  ok = false
else
  ok = sender[2] == 'host' or target[3] == 'host'
end
if not ok then return -2 end
return deliver(ARGV[5], ARGV[6], false)
"""

# ARGV[4] id, [5] room, [6] role, [7] secret hash or '', [8] room limit,
# [9] member JSON, [10] peer-joined prefix, [11] cseq or ''
# -> {'ok', id1, json1, ...visible} or {error code} ('repeat' and 'gap' among them)
JOIN = COMMON + r"""
local id, room, role = ARGV[4], ARGV[5], ARGV[6]
local verdict = admit(id, ARGV[11])
if verdict == 1 then return {'repeat'} end
if verdict == 2 then return {'gap'} end
local skey, rkey, mkey = P .. 's:' .. id, P .. 'r:' .. room, P .. 'm:' .. room
local current = redis.call('HGET', skey, 'room')
if not current then return {'gone'} end
if current ~= '' then return {'already', current} end
if redis.call('EXISTS', mkey) == 1 then
  local secret = redis.call('HGET', rkey, 'secret') or ''
  if secret ~= '' and secret ~= ARGV[7] then return {'bad-secret'} end
  if role == 'host' and (redis.call('HGET', rkey, 'host') or '') ~= '' then return {'room-has-host'} end
  if redis.call('HLEN', mkey) >= tonumber(ARGV[8]) then return {'room-full'} end
else
  redis.call('HSET', rkey, 'secret', ARGV[7], 'host', '')
end
local visible = {}
if role == 'host' then
  visible = redis.call('HGETALL', mkey)
else
  local host = redis.call('HGET', rkey, 'host')
  if host and host ~= '' then visible = {host, redis.call('HGET', mkey, host)} end
end
redis.call('HSET', mkey, id, ARGV[9])
if role == 'host' then redis.call('HSET', rkey, 'host', id) end
redis.call('HSET', skey, 'room', room, 'role', role)
redis.call('SREM', P .. 'public', id)
for i = 1, #visible, 2 do deliver(visible[i], ARGV[10], true) end
local out = {'ok'}
for _, v in ipairs(visible) do out[#out + 1] = v end
return out
"""

# ARGV[4] id, ARGV[5] cseq or '' -> room name, false (in no room), 1 repeat or 2 gap
LEAVE = COMMON + r"""
local verdict = admit(ARGV[4], ARGV[5])
if verdict ~= 0 then return verdict end
return leave(ARGV[4], true)
"""

# ARGV[4] id -> 1 closed, 0 already gone
CLOSE = COMMON + r"""
return close(ARGV[4])
"""

# ARGV[4] now, ARGV[5] most to close -> ids closed
EXPIRE = COMMON + r"""
local due = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(due) do close(id) end
return due
"""

# Take a session over for this instance (resume, or a long-poll waiting here).
# ARGV[4] id, ARGV[5] deadline
# -> {room, role, name, seq, sent, previous inst, recv, generation} or false
CLAIM = COMMON + r"""
local skey = P .. 's:' .. ARGV[4]
local s = redis.call('HMGET', skey, 'room', 'role', 'name', 'seq', 'sent', 'inst', 'recv')
if not s[4] then return false end
redis.call('HSET', skey, 'inst', SELF)
redis.call('ZADD', P .. 'exp', ARGV[5], ARGV[4])
s[7] = s[7] or '0'
s[8] = redis.call('HINCRBY', skey, 'gen', 1)
return s
"""

# Let go of a session if this socket still holds it: same instance and same
# claim generation, so a late release of an old socket cannot undo a newer
# resume on this very instance.
# ARGV[4] id, ARGV[5] sent, ARGV[6] deadline, ARGV[7] generation -> 1 if released
RELEASE = COMMON + r"""
local skey = P .. 's:' .. ARGV[4]
if redis.call('HGET', skey, 'inst') ~= SELF then return 0 end
if (redis.call('HGET', skey, 'gen') or '0') ~= ARGV[7] then return 0 end
redis.call('HSET', skey, 'inst', '')
if tonumber(ARGV[5]) > tonumber(redis.call('HGET', skey, 'sent') or '0') then
  redis.call('HSET', skey, 'sent', ARGV[5])
end
redis.call('ZADD', P .. 'exp', ARGV[6], ARGV[4])
return 1
"""

# Extend the deadlines of sessions this instance holds.
# ARGV[4] deadline, ARGV[5..] ids
REFRESH = COMMON + r"""
local n = 0
for i = 5, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', P .. 's:' .. id, 'inst') == SELF then
    redis.call('ZADD', P .. 'exp', ARGV[4], id)
    n = n + 1
  end
end
return n
"""
