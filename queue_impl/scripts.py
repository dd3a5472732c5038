"""Server-side Lua for the `script` batch mode and the `notify` dequeue mode.

Each script is one round trip and runs atomically. Scripts that must read a stored
record (the scheduler's move, stale recovery) understand both codecs: for protobuf
they scan the wire format for field 4 (priority) and set the status by appending
field 12, which protobuf parsers merge as "last value wins"; for JSON they use cjson
(the JSON codec stores 64-bit integers as strings, so nothing loses precision).
Keys that depend on a job id are built from the queue's prefix inside the script;
every key shares the prefix's `{hash tag}`, so this also holds on Redis Cluster.
"""

from __future__ import annotations

from redis import Redis

_RECORD_HELPERS = r"""
local PRIORITY_LABELS = {[0] = 'normal', [1] = 'high', [2] = 'low'}
local JSON_PRIORITIES = {NORMAL = 'normal', HIGH = 'high', LOW = 'low'}

local function pb_varint(s, pos)
  local value, scale = 0, 1
  while true do
    local b = string.byte(s, pos)
    if not b then return nil, pos end
    pos = pos + 1
    value = value + (b % 128) * scale
    if b < 128 then return value, pos end
    scale = scale * 128
  end
end

-- Priority label of a stored record, or nil when the record is corrupt.
local function record_priority(record, codec)
  if codec == 'json' then
    local ok, doc = pcall(cjson.decode, record)
    if not ok or type(doc) ~= 'table' then return nil end
    return JSON_PRIORITIES[doc.priority]
  end
  local pos, n, priority = 1, #record, 0
  while pos <= n do
    local tag
    tag, pos = pb_varint(record, pos)
    if not tag then return nil end
    local field, wire = math.floor(tag / 8), tag % 8
    if wire == 0 then
      local v
      v, pos = pb_varint(record, pos)
      if not v then return nil end
      if field == 4 then priority = v end
    elseif wire == 2 then
      local len
      len, pos = pb_varint(record, pos)
      if not len then return nil end
      pos = pos + len
    elseif wire == 1 then pos = pos + 8
    elseif wire == 5 then pos = pos + 4
    else return nil end
  end
  if pos ~= n + 1 then return nil end
  return PRIORITY_LABELS[priority]
end

-- The record with its status set to QUEUED (proto value 0, JSON name 'QUEUED').
local function record_requeued(record, codec)
  if codec == 'json' then
    local doc = cjson.decode(record)
    doc.status = 'QUEUED'
    return cjson.encode(doc)
  end
  return record .. '\96\0'
end

-- Put a held job back at the front of its priority queue (status QUEUED, TTL kept), or
-- dead-letter it when its record is missing or corrupt. Returns true when requeued.
local function return_to_queue(prefix, codec, id, dead_key)
  local key = prefix .. 'job:' .. id
  local record = redis.call('GET', key)
  local label = record and record_priority(record, codec)
  if label then
    redis.call('SET', key, record_requeued(record, codec), 'KEEPTTL')
    redis.call('RPUSH', prefix .. 'queue:' .. label, id)
    return true
  end
  redis.call('LPUSH', dead_key, id)
  return false
end
"""

ENQUEUE = r"""
-- KEYS[1] marker (notify mode only). ARGV: prefix, notify, then (id, label, record)*
local prefix, notify = ARGV[1], ARGV[2] == '1'
for i = 3, #ARGV, 3 do
  redis.call('SET', prefix .. 'job:' .. ARGV[i], ARGV[i + 2])
  redis.call('LPUSH', prefix .. 'queue:' .. ARGV[i + 1], ARGV[i])
end
if notify then redis.call('ZADD', KEYS[1], 0, 'ready') end
return (#ARGV - 2) / 3
"""

CLAIM = r"""
-- KEYS: queue:high, queue:normal, queue:low, processing:<consumer>, marker. ARGV: prefix
-- Takes the next job in strict priority order into the processing list, keeps the
-- wake-up marker set while any job is still waiting (so another worker wakes),
-- and returns {id, record}; the record is false when it is missing.
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) == 0 then
  redis.call('DEL', KEYS[5])
  return false
end
local id
for i = 1, 3 do
  id = redis.call('RPOPLPUSH', KEYS[i], KEYS[4])
  if id then break end
end
-- An empty list does not exist, so EXISTS counts the non-empty queues.
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[5], 0, 'ready')
else
  redis.call('DEL', KEYS[5])
end
return {id, redis.call('GET', ARGV[1] .. 'job:' .. id)}
"""

COMPLETE = r"""
-- KEYS: processing list, job key. ARGV: id, record, ttl seconds (0 = keep forever)
-- Writes the record only while the job is still this consumer's: a job that stale
-- recovery handed to another worker is not overwritten. Returns 1 or 0.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
"""

FAIL = r"""
-- KEYS: processing list, job key, scheduled set, dead list.
-- ARGV: id, record, 'retry' or 'dead', retry-at score (us), dead ttl seconds (0 = none)
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[3] == 'retry' then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
else
  if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5])
  else
    redis.call('SET', KEYS[2], ARGV[2])
  end
  redis.call('LPUSH', KEYS[4], ARGV[1])
end
return 1
"""

MOVE_SCHEDULED = (
    _RECORD_HELPERS
    + r"""
-- KEYS: scheduled set, dead list, marker. ARGV: prefix, codec, now (us), limit, notify
-- Moves due jobs to their priority queue. ZREM decides ownership, so two schedulers
-- running at once never move a job twice. A job whose record is missing or corrupt
-- is dead-lettered, never dropped. Returns {moved, dead_lettered, dead-lettered ids...}.
local prefix, codec = ARGV[1], ARGV[2]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local moved, dead, corrupt = 0, 0, {}
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local key = prefix .. 'job:' .. id
    local record = redis.call('GET', key)
    local label = record and record_priority(record, codec)
    if label then
      redis.call('SET', key, record_requeued(record, codec))
      redis.call('LPUSH', prefix .. 'queue:' .. label, id)
      moved = moved + 1
    else
      redis.call('LPUSH', KEYS[2], id)
      dead = dead + 1
      corrupt[#corrupt + 1] = id
    end
  end
end
if moved > 0 and ARGV[5] == '1' then redis.call('ZADD', KEYS[3], 0, 'ready') end
return {moved, dead, unpack(corrupt)}
"""
)

RECOVER = (
    _RECORD_HELPERS
    + r"""
-- KEYS: processing list of a dead consumer, dead list, marker, consumers set,
--       heartbeat key of that consumer.
-- ARGV: prefix, codec, consumer id, notify
-- Returns every job a dead consumer held to its priority queue (at-least-once), and
-- forgets the consumer. Does nothing when the consumer's heartbeat is alive again (-1).
-- Returns {returned, ids dead-lettered as corrupt...}.
if redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
local prefix, codec = ARGV[1], ARGV[2]
local returned, corrupt = 0, {}
while true do
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  if not return_to_queue(prefix, codec, id, KEYS[2]) then corrupt[#corrupt + 1] = id end
  returned = returned + 1
end
redis.call('SREM', KEYS[4], ARGV[3])
if returned > 0 and ARGV[4] == '1' then redis.call('ZADD', KEYS[3], 0, 'ready') end
return {returned, unpack(corrupt)}
"""
)


REQUEUE = (
    _RECORD_HELPERS
    + r"""
-- KEYS: processing list of a live consumer, dead list, marker.
-- ARGV: prefix, codec, notify, then job ids.
-- Returns held jobs that no worker thread owns (a claim whose reply was lost) to the
-- front of their priority queue; an id no longer held is skipped.
-- Returns {how many, ids dead-lettered as corrupt...}.
local prefix, codec = ARGV[1], ARGV[2]
local returned, corrupt = 0, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    if not return_to_queue(prefix, codec, id, KEYS[2]) then corrupt[#corrupt + 1] = id end
    returned = returned + 1
  end
end
if returned > 0 and ARGV[3] == '1' then redis.call('ZADD', KEYS[3], 0, 'ready') end
return {returned, unpack(corrupt)}
"""
)


class Scripts:
    """The scripts as redis-py `Script` objects, one set per queue.

    Registration is local; each script is loaded on the server by its first EVALSHA
    (one extra SCRIPT LOAD round trip, the first time only).
    """

    def __init__(self, client: Redis) -> None:
        self.enqueue = client.register_script(ENQUEUE)
        self.claim = client.register_script(CLAIM)
        self.complete = client.register_script(COMPLETE)
        self.fail = client.register_script(FAIL)
        self.move_scheduled = client.register_script(MOVE_SCHEDULED)
        self.recover = client.register_script(RECOVER)
        self.requeue = client.register_script(REQUEUE)
