"""Server-side Lua for the `script` batch mode and the `notify` dequeue mode.

Each script is one round trip and runs atomically. Scripts that must read a stored
record (the scheduler's move, stale recovery) understand every record format (they are
given the codec's `record_format`): for protobuf they scan the wire format for field 4
(priority) and set the status by appending field 12, which protobuf parsers merge as
"last value wins"; for JSON (the json and orjson codecs) they use cjson (the JSON
document stores 64-bit integers as strings, so nothing loses precision); for MessagePack
they read the array with cmsgpack and set the status by replacing the record's last
byte (status is the last item, one positive-fixint byte), never re-encoding it.

Every key a script touches arrives in KEYS, none is built inside Lua: Redis Cluster
routes a script by its declared keys and refuses undeclared ones (they may live on
another node). All of a partition's keys share its `{hash tag}`, so they share a slot.
Records are read and written through `rec_get`/`rec_put`, defined per `records` layout
by a prelude (`RECORDS_KEYS`, `RECORDS_HASH`): from `KEYS[RECORDS]` on come the keys of
the jobs the script was given under `keys`; `KEYS[RECORDS]` is the partition's records
hash under `hash`. A script
that learns an id only inside Redis (claim, move, recovery) can read its record only
under `hash`; under `keys` the client passes the ids it read first (`ids given`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from qbench.queue_impl.pinned import Calls, ScriptArg, script_sha

RecordsLayout = Literal["keys", "hash"]

RECORDS_KEYS = r"""
-- records=keys: KEYS[RECORDS + i - 1] is the key of the i-th job the script was given.
local RECORDS
local function rec_get(i, id)
  return redis.call('GET', KEYS[RECORDS + i - 1])
end
-- ttl: nil = none (a SET clears any), -1 = keep the current one, n > 0 = n seconds
local function rec_put(i, id, value, ttl)
  local key = KEYS[RECORDS + i - 1]
  if ttl == nil then redis.call('SET', key, value)
  elseif ttl < 0 then redis.call('SET', key, value, 'KEEPTTL')
  else redis.call('SET', key, value, 'EX', ttl) end
end
-- Delete the records of the given jobs (positions among the records given, and ids).
local function rec_delete(positions, ids)
  local keys = {}
  for _, i in ipairs(positions) do keys[#keys + 1] = KEYS[RECORDS + i - 1] end
  redis.call('DEL', unpack(keys))
end
"""

RECORDS_HASH = r"""
-- records=hash: KEYS[RECORDS] is the partition's records hash, field = job id.
local RECORDS
local function rec_get(i, id)
  return redis.call('HGET', KEYS[RECORDS], id)
end
-- ttl: nil = none, -1 = keep the current one, n > 0 = n seconds. HSET clears a field's
-- TTL as SET clears a key's, so keeping one means reading it first.
local function rec_put(i, id, value, ttl)
  local key = KEYS[RECORDS]
  local kept = 0
  if ttl ~= nil and ttl < 0 then kept = redis.call('HPTTL', key, 'FIELDS', 1, id)[1] end
  redis.call('HSET', key, id, value)
  if ttl ~= nil and ttl > 0 then redis.call('HEXPIRE', key, ttl, 'FIELDS', 1, id)
  elseif kept > 0 then redis.call('HPEXPIRE', key, kept, 'FIELDS', 1, id) end
end
-- Delete the records of the given jobs (positions among the records given, and ids).
local function rec_delete(positions, ids)
  redis.call('HDEL', KEYS[RECORDS], unpack(ids))
end
"""

PRELUDES: dict[str, str] = {"keys": RECORDS_KEYS, "hash": RECORDS_HASH}

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
-- codec: the record format ('protobuf', 'json' or 'msgpack').
local function record_priority(record, codec)
  if codec == 'json' then
    local ok, doc = pcall(cjson.decode, record)
    if not ok or type(doc) ~= 'table' then return nil end
    return JSON_PRIORITIES[doc.priority]
  end
  if codec == 'msgpack' then
    -- 12 items, the status (0..4) as the one last byte: what record_requeued rewrites.
    local last = string.byte(record, -1)
    if not last or last > 4 then return nil end
    local ok, doc = pcall(cmsgpack.unpack, record)
    if not ok or type(doc) ~= 'table' or #doc ~= 12 then return nil end
    return PRIORITY_LABELS[doc[4]]
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
  if codec == 'msgpack' then return string.sub(record, 1, -2) .. '\0' end
  return record .. '\96\0'
end

-- Queue keys come in PRIORITY_ORDER (high, normal, low) from KEYS[queues] on.
local QUEUE_OFFSET = {high = 0, normal = 1, low = 2}

-- Put a held job back at the front of its priority queue (status QUEUED, TTL kept), or
-- dead-letter it when its record is missing or corrupt. Returns true when requeued.
local function return_to_queue(i, id, codec, queues, dead_key)
  local record = rec_get(i, id)
  local label = record and record_priority(record, codec)
  if label then
    rec_put(i, id, record_requeued(record, codec), -1)
    redis.call('RPUSH', KEYS[queues + QUEUE_OFFSET[label]], id)
    return true
  end
  redis.call('LPUSH', dead_key, id)
  return false
end
"""

ENQUEUE = r"""
-- KEYS: marker, queue:high, queue:normal, queue:low, then the records.
-- ARGV: notify, then (id, queue offset 0-2, record)* in the order of the records.
-- The marker is set only when a push found its queue empty: while any queue holds a
-- job the marker is already set (the claim scripts keep it so), or a woken worker is
-- about to claim and will set it again.
RECORDS = 5
local n, woke = 0, false
for i = 2, #ARGV, 3 do
  n = n + 1
  rec_put(n, ARGV[i], ARGV[i + 2], nil)
  if redis.call('LPUSH', KEYS[2 + tonumber(ARGV[i + 1])], ARGV[i]) == 1 then woke = true end
end
if woke and ARGV[1] == '1' then redis.call('ZADD', KEYS[1], 0, 'ready') end
return n
"""

CLAIM = r"""
-- KEYS: queue:high, queue:normal, queue:low, processing:<consumer>, marker, then the
-- records hash when the layout lets the script read the claimed record (hash).
-- Takes the next job in strict priority order into the processing list, keeps the
-- wake-up marker set while any job is still waiting (so another worker wakes),
-- and returns {id, record}; the record is false when it is missing or not read.
RECORDS = 6
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
if KEYS[RECORDS] then return {id, rec_get(1, id)} end
return {id, false}
"""

CLAIM_MANY = r"""
-- KEYS: queue:high, queue:normal, queue:low, processing:<consumer>, marker, then the
-- records hash when the layout lets the script read the claimed records (hash).
-- ARGV: n. Takes up to n jobs in strict priority order into the processing list (oldest
-- first within a priority), keeps the wake-up marker set while any job is still
-- waiting, and returns {id, record, id, record, ...}; a record is false when it is
-- missing or not read.
RECORDS = 6
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) == 0 then
  redis.call('DEL', KEYS[5])
  return {}
end
local n = tonumber(ARGV[1])
local ids = {}
for i = 1, 3 do
  while #ids < n do
    local id = redis.call('RPOPLPUSH', KEYS[i], KEYS[4])
    if not id then break end
    ids[#ids + 1] = id
  end
  if #ids >= n then break end
end
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[5], 0, 'ready')
else
  redis.call('DEL', KEYS[5])
end
local records = {}
if KEYS[RECORDS] and #ids > 0 then records = redis.call('HMGET', KEYS[RECORDS], unpack(ids)) end
local out = {}
for i, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = records[i] or false
end
return out
"""

COMPLETE_MANY = r"""
-- KEYS: processing list, then the records (the hash, or one key per job under keys).
-- ARGV: retention ('keep' or 'delete'), ttl seconds (0 = none), then per job: its id,
--       and under 'keep' its completed record.
-- Acknowledges each job still in this consumer's processing list (a job stale recovery
-- handed back is left alone). Returns how many were.
RECORDS = 2
local keep = ARGV[1] == 'keep'
local ttl = tonumber(ARGV[2])
local step = keep and 2 or 1
local done, positions, ids = 0, {}, {}
local i = 0
for a = 3, #ARGV, step do
  i = i + 1
  local id = ARGV[a]
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    done = done + 1
    if keep then
      rec_put(i, id, ARGV[a + 1], ttl > 0 and ttl or nil)
    else
      positions[#positions + 1] = i
      ids[#ids + 1] = id
    end
  end
end
if #ids > 0 then rec_delete(positions, ids) end
return done
"""

FAIL = r"""
-- KEYS: processing list, scheduled set, dead list, then the job's record.
-- ARGV: id, record, 'retry' or 'dead', retry-at score (us), dead ttl seconds (0 = none)
RECORDS = 4
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[3] == 'retry' then
  rec_put(1, ARGV[1], ARGV[2], nil)
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  local ttl = tonumber(ARGV[5])
  rec_put(1, ARGV[1], ARGV[2], ttl > 0 and ttl or nil)
  redis.call('LPUSH', KEYS[3], ARGV[1])
end
return 1
"""

MOVE_SCHEDULED = (
    _RECORD_HELPERS
    + r"""
-- KEYS: scheduled set, dead list, marker, queue:high, queue:normal, queue:low, then the
--       records (one per given id under keys, the hash under hash).
-- ARGV: codec, notify, now (us), limit, ids given ('1': the due ids follow, as the
--       client read them; '0': read them here).
-- Moves due jobs to their priority queue. ZREM decides ownership, so two schedulers
-- running at once never move a job twice; a given id is moved only while it is still
-- due. A job whose record is missing or corrupt is dead-lettered, never dropped.
-- Returns {moved, dead_lettered, dead-lettered ids...}.
RECORDS = 7
local codec, now = ARGV[1], tonumber(ARGV[3])
local ids = {}
if ARGV[5] == '1' then
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
end
local moved, dead, corrupt = 0, 0, {}
for i, id in ipairs(ids) do
  local due = true
  if ARGV[5] == '1' then
    local score = redis.call('ZSCORE', KEYS[1], id)
    due = score and tonumber(score) <= now
  end
  if due and redis.call('ZREM', KEYS[1], id) == 1 then
    local record = rec_get(i, id)
    local label = record and record_priority(record, codec)
    if label then
      rec_put(i, id, record_requeued(record, codec), nil)
      redis.call('LPUSH', KEYS[4 + QUEUE_OFFSET[label]], id)
      moved = moved + 1
    else
      redis.call('LPUSH', KEYS[2], id)
      dead = dead + 1
      corrupt[#corrupt + 1] = id
    end
  end
end
if moved > 0 and ARGV[2] == '1' then redis.call('ZADD', KEYS[3], 0, 'ready') end
return {moved, dead, unpack(corrupt)}
"""
)

RECOVER = (
    _RECORD_HELPERS
    + r"""
-- KEYS: processing list of a dead consumer, dead list, marker, consumers set,
--       heartbeat key of that consumer, queue:high, queue:normal, queue:low, then the
--       records (one per given id under keys, the hash under hash).
-- ARGV: codec, consumer id, notify, ids given ('1': the held ids follow, oldest
--       first, as the client read them; '0': pop them here).
-- Returns every job a dead consumer held to its priority queue (at-least-once), and
-- forgets the consumer once its list is empty. Does nothing when the consumer's
-- heartbeat is alive again (-1). A given id is returned only while it is still the
-- oldest held. Returns {returned, held still (ids given: read again), corrupt ids...}.
RECORDS = 9
if redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
local codec = ARGV[1]
local returned, corrupt = 0, {}
local function give_back(i, id)
  if not return_to_queue(i, id, codec, 6, KEYS[2]) then corrupt[#corrupt + 1] = id end
  returned = returned + 1
end
if ARGV[4] == '1' then
  for i = 5, #ARGV do
    if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[i] then break end
    redis.call('RPOP', KEYS[1])
    give_back(i - 4, ARGV[i])
  end
else
  while true do
    local id = redis.call('RPOP', KEYS[1])
    if not id then break end
    give_back(returned + 1, id)
  end
end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('SREM', KEYS[4], ARGV[2]) end
if returned > 0 and ARGV[3] == '1' then redis.call('ZADD', KEYS[3], 0, 'ready') end
return {returned, left, unpack(corrupt)}
"""
)


REQUEUE = (
    _RECORD_HELPERS
    + r"""
-- KEYS: processing list of a live consumer, dead list, marker, queue:high,
--       queue:normal, queue:low, then the records (one per id under keys).
-- ARGV: codec, notify, then job ids.
-- Returns held jobs that no worker thread owns (a claim whose reply was lost) to the
-- front of their priority queue; an id no longer held is skipped.
-- Returns {how many, ids dead-lettered as corrupt...}.
RECORDS = 7
local codec = ARGV[1]
local returned, corrupt = 0, {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    if not return_to_queue(i - 2, id, codec, 4, KEYS[2]) then corrupt[#corrupt + 1] = id end
    returned = returned + 1
  end
end
if returned > 0 and ARGV[2] == '1' then redis.call('ZADD', KEYS[3], 0, 'ready') end
return {returned, unpack(corrupt)}
"""
)


class LuaScript:
    """One script of one records layout, called through the queue's `Calls` (`conn` toggle)."""

    def __init__(self, calls: Calls, source: str) -> None:
        self.source = source
        self.sha = script_sha(source)
        self._calls = calls

    def __call__(self, *, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        return self._calls.script(self.source, self.sha, keys, args)

    def and_wait(
        self, *, keys: Sequence[str], args: Sequence[ScriptArg], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """The script, then WAIT for `replicas` in the same round trip: (reply, replicas that
        acknowledged)."""
        return self._calls.script_and_wait(
            self.source, self.sha, keys, args, replicas=replicas, timeout_ms=timeout_ms
        )


SCRIPT_SOURCES: dict[str, str] = {
    "enqueue": ENQUEUE,
    "claim": CLAIM,
    "claim_many": CLAIM_MANY,
    "complete_many": COMPLETE_MANY,
    "fail": FAIL,
    "move_scheduled": MOVE_SCHEDULED,
    "recover": RECOVER,
    "requeue": REQUEUE,
}
"""Every script, without its records prelude."""


def script_sources(layout: RecordsLayout) -> list[str]:
    """Every script of `layout` as the server runs it (prelude included), for SCRIPT LOAD."""
    return [PRELUDES[layout] + body for body in SCRIPT_SOURCES.values()]


class Scripts:
    """The scripts of one records layout, one set per queue.

    Each is loaded on the server by its first EVALSHA (one extra SCRIPT LOAD round trip
    the first time: on a cluster, a NOSCRIPT reply loads it on every primary).
    """

    def __init__(self, calls: Calls, layout: RecordsLayout = "keys") -> None:
        prelude = PRELUDES[layout]
        self.enqueue = LuaScript(calls, prelude + ENQUEUE)
        self.claim = LuaScript(calls, prelude + CLAIM)
        self.claim_many = LuaScript(calls, prelude + CLAIM_MANY)
        self.complete_many = LuaScript(calls, prelude + COMPLETE_MANY)
        self.fail = LuaScript(calls, prelude + FAIL)
        self.move_scheduled = LuaScript(calls, prelude + MOVE_SCHEDULED)
        self.recover = LuaScript(calls, prelude + RECOVER)
        self.requeue = LuaScript(calls, prelude + REQUEUE)
