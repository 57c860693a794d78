-- Shared by every script, prepended after the header `scripts.LuaScript.load` generates, which
-- binds KEY.<name> and ARG.<name> to the script's declared slots, REST (first variadic ARGV),
-- THREAD_KEYS (the names of a thread's data keys) and OUTBOX (outbox entry kind codes).
local NUL, SOH = "\0", "\1"

-- An outbox entry: what the flusher must carry to Postgres (see keys.outbox_entry).
local function outbox(kind, name)
  return kind .. NUL .. name
end

-- Give every key of the thread its TTL, so the thread expires whole, never in part; `expiring`
-- in meta records that they carry one. A thread with outbox entries (not yet in Postgres) does
-- not expire at all: its keys lose their TTL until the flush that empties the outbox gives it
-- back (outbox_ack.lua). Unflushed data is therefore never lost to expiry, and under a
-- volatile-* eviction policy never evicted.
local function touch(ttl)
  ttl = tonumber(ttl)
  if not ttl or ttl <= 0 then return end
  if redis.call("ZCARD", KEY.pend) > 0 then
    for _, name in ipairs(THREAD_KEYS) do redis.call("PERSIST", KEY[name]) end
    redis.call("HDEL", KEY.meta, "expiring")
  else
    for _, name in ipairs(THREAD_KEYS) do redis.call("PEXPIRE", KEY[name], ttl) end
    -- a thread without meta needs no mark: a write takes a missing meta for expiring
    if redis.call("EXISTS", KEY.meta) == 1 then redis.call("HSET", KEY.meta, "expiring", "1") end
  end
end

-- A read's TTL refresh, done only when due. A thread with outbox entries whose keys already
-- carry no TTL (meta without `expiring`, as every tracked write leaves it: keep_written) needs
-- none; a clean thread whose keys got their TTL (`expiring`) less than a sixteenth of it ago
-- keeps it. Either way one or two reads replace a PEXPIRE or PERSIST per key, and the thread
-- still expires whole: its keys took their TTL together, in the last touch.
local function refresh(ttl)
  ttl = tonumber(ttl)
  if not ttl or ttl <= 0 then return end
  local expiring = redis.call("HGET", KEY.meta, "expiring")
  if expiring then
    if redis.call("PTTL", KEY.meta) > ttl - ttl / 16 then return end
  elseif redis.call("ZCARD", KEY.pend) > 0 and redis.call("EXISTS", KEY.meta) == 1 then
    return
  end
  touch(ttl)
end

-- After a write: a thread with outbox entries keeps no TTL (see touch); the PERSISTs run only
-- when its keys had one (`expiring`, or no meta: a new thread, or one whose meta expired or was
-- evicted), i.e. on the first write after a flush emptied the outbox.
-- Without a durable tier every write refreshes the TTL of every key.
local function keep_written(track, expiring, ttl)
  if track then
    if expiring then
      for _, name in ipairs(THREAD_KEYS) do redis.call("PERSIST", KEY[name]) end
      redis.call("HDEL", KEY.meta, "expiring")
    end
  else
    touch(ttl)
  end
end

-- Add outbox entries, all under one new version of the thread's outbox: an entry written again
-- (a special write replaced) gets a newer version, and a flush acknowledges an entry only at
-- the version it read (compare-and-acknowledge, outbox_ack.lua).
-- `unflushed`: the meta mark, when the caller read it already.
local function add_to_outbox(entries, unflushed)
  if #entries == 0 then return end
  local version = redis.call("HINCRBY", KEY.meta, "outbox_version", 1)
  if not unflushed then
    redis.call("HSET", KEY.meta, "unflushed", "1")  -- survives an evicted outbox: see outbox_read
  end
  local args = {}
  for i = 1, #entries do
    args[#args + 1] = version
    args[#args + 1] = entries[i]
    if #args >= 400 then
      redis.call("ZADD", KEY.pend, unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call("ZADD", KEY.pend, unpack(args)) end
end

-- Fencing: a writer without a token may not write while someone holds the thread lock; a writer
-- whose token is older than the newest issued one lost its lock and may not write at all.
-- `current`: the meta's fence, when the caller read it already.
local function check_fence(token, current)
  if token == "" then
    if redis.call("EXISTS", KEY.lock) == 1 then
      return "LOCKED thread is locked by another holder; take the lock or wait"
    end
    return nil
  end
  if current == nil then current = redis.call("HGET", KEY.meta, "fence") end
  if current and tonumber(current) > tonumber(token) then
    return "STALE fencing token " .. token .. " is older than " .. current .. ": the lock was lost"
  end
  return nil
end

-- Take the thread's run lock for `token` (or find it ours already): the fencing token, or false
-- when another holder has it. The fencing token only grows: it is at least the current time in
-- microseconds, so it stays monotonic even if the meta hash expired with an idle thread.
local function take_lock(token, ttl_ms, thread_ttl_ms)
  if not redis.call("SET", KEY.lock, token, "NX", "PX", ttl_ms) then
    if redis.call("GET", KEY.lock) ~= token then return false end
    return redis.call("HGET", KEY.meta, "fence")
  end
  local now = redis.call("TIME")
  local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local current = tonumber(redis.call("HGET", KEY.meta, "fence") or "0")
  local fence = string.format("%.0f", math.max(current + 1, floor))
  local persistent = redis.call("PTTL", KEY.meta) == -1  -- a thread with unflushed data keeps no TTL
  redis.call("HSET", KEY.meta, "fence", fence)
  if not persistent then
    redis.call("PEXPIRE", KEY.meta, math.max(tonumber(thread_ttl_ms), tonumber(ttl_ms)))
    redis.call("HSET", KEY.meta, "expiring", "1")
  end
  return fence
end

-- Record the thread in its tenant's registry (a tenant's thread list) and, durable tier on, in
-- the outbox index the flushers poll.
local function mark_thread(track)
  redis.call("ZADD", KEY.registry, ARG.now_ms, ARG.thread_id)
  if track then redis.call("ZADD", KEY.dirty, ARG.now_ms, ARG.dirty_member) end
end

-- 1 when Redis still holds the epoch the writer knows, 0 when it lost data since (sentinel.py).
local function same_epoch()
  return redis.call("GET", KEY.epoch) == ARG.epoch and 1 or 0
end

-- nil when the thread's copy was checked against Postgres since the shard's generation last
-- moved (server_check.lua), else the generation to check it under. A shard whose generation
-- never moved needs no check.
local function unverified()
  local generation = redis.call("GET", KEY.vgen)
  if not generation or redis.call("HGET", KEY.meta, "vg") == generation then return nil end
  return generation
end

-- The meta field that marks a namespace of the thread (ns_mode "one"), or all of them ("all"),
-- whole in Redis (list.lua): its value is the oldest member (of the namespace, or of the thread)
-- when Postgres was found to hold nothing Redis did not. A change that can leave Postgres with
-- checkpoints Redis lacks drops every mark (clear_whole).
local function whole_field(ns_mode, ns)
  if ns_mode == "all" then return "whole" .. SOH end
  return "whole" .. NUL .. ns
end

-- The oldest member (of namespace `ns`, or of the thread with ns_mode "all"), or nil.
local function first_member(ns_mode, ns)
  if ns_mode == "all" then return redis.call("ZRANGE", KEY.idx, 0, 0)[1] end
  return redis.call("ZRANGEBYLEX", KEY.idx, "[" .. ns .. NUL, "(" .. ns .. SOH, "LIMIT", 0, 1)[1]
end

local function clear_whole()
  local marks = {}
  for _, field in ipairs(redis.call("HKEYS", KEY.meta)) do
    local tail = string.sub(field, 6, 6)
    if string.sub(field, 1, 5) == "whole" and (tail == NUL or tail == SOH) then marks[#marks + 1] = field end
  end
  if #marks > 0 then redis.call("HDEL", KEY.meta, unpack(marks)) end
end

-- A thread Redis holds no checkpoint of gets a new birth mark (the server's clock, to the
-- microsecond) from the write that gives it one: a walk kept from before (delta_history.lua)
-- is of another thread when the mark differs, even one deleted and built again with the same
-- ids and as many writes by a process that could not tell the walk's keeper.
local function mark_birth()
  local now = redis.call("TIME")
  redis.call("HSET", KEY.meta, "born", now[1] .. "." .. now[2])
end

-- A thread Redis held nothing of, first written now, holds only what its writer wrote:
-- verified under the shard's current generation, so its reads need no check (get.lua).
local function born_verified()
  local generation = redis.call("GET", KEY.vgen)
  if generation then redis.call("HSET", KEY.meta, "vg", generation) end
end

local function split(s, sep)
  local out = {}
  if not s or s == "" then return out end
  local start = 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- ZADD in chunks: unpack() has a stack limit.
local function zadd_lex(key, members)
  local args = {}
  for i = 1, #members do
    args[#args + 1] = 0
    args[#args + 1] = members[i]
    if #args >= 400 then
      redis.call("ZADD", key, unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call("ZADD", key, unpack(args)) end
end

local function lex_prefix(key, prefix)
  return redis.call("ZRANGEBYLEX", key, "[" .. prefix .. NUL, "(" .. prefix .. SOH)
end

-- The write records of a checkpoint, and 1 when eviction took part of them (else 0).
local function member_writes(member)
  local write_fields = lex_prefix(KEY.wi, member)
  if #write_fields > 0 then
    local writes = redis.call("HMGET", KEY.wr, unpack(write_fields))
    for i = 1, #write_fields do
      if not writes[i] then return writes, 1 end
    end
    return writes, 0
  end
  -- none indexed: lost if the write index went and the writes did not (which are ours is
  -- unknown). One EXISTS of both answers, unless exactly one of them is there.
  if redis.call("EXISTS", KEY.wr, KEY.wi) == 1 and redis.call("EXISTS", KEY.wi) == 0 then
    return {}, 1
  end
  return {}, 0
end

-- The checkpoint, its blob values and its writes, as one array (nil if absent).
local function fetch_checkpoint(member)
  local record = redis.call("HGET", KEY.ck, member)
  if not record then return nil end
  local refs = redis.call("HGET", KEY.cv, member)
  local parts = split(refs or "", SOH)
  local values = {}
  if #parts > 1 then values = redis.call("HMGET", KEY.bl, unpack(parts, 2)) end
  local writes, writes_lost = member_writes(member)
  -- lost = 1 when eviction took part of what this checkpoint needs (see hot.parse_entry): its
  -- refs, some of its writes, or the whole value hash (eviction takes keys, never a field: a
  -- value missing from a hash that is there was never stored, see core._partial_op)
  local lost = (refs and writes_lost == 0) and 0 or 1
  if lost == 0 and #parts > 1 and not values[1] and redis.call("EXISTS", KEY.bl) == 0 then lost = 1 end
  return {member, record, refs, values, writes, lost}
end

-- Remove checkpoints (and their writes, run index entries and outbox entries).
local function delete_members(members)
  local removed = 0
  for _, member in ipairs(members) do
    local refs = redis.call("HGET", KEY.cv, member)
    if refs then
      local run_id = split(refs, SOH)[1]
      if run_id and run_id ~= "" then redis.call("ZREM", KEY.runs, run_id .. NUL .. member) end
    end
    removed = removed + redis.call("ZREM", KEY.idx, member)
    redis.call("HDEL", KEY.ck, member)
    redis.call("HDEL", KEY.cv, member)
    redis.call("ZREM", KEY.pend, outbox(OUTBOX.checkpoint, member))
    for _, wf in ipairs(lex_prefix(KEY.wi, member)) do
      redis.call("HDEL", KEY.wr, wf)
      redis.call("ZREM", KEY.wi, wf)
      redis.call("ZREM", KEY.pend, outbox(OUTBOX.write, wf))
    end
  end
  return removed
end

-- Drop blob values no remaining checkpoint references.
local function gc_blobs()
  local referenced = {}
  for _, refs in ipairs(redis.call("HVALS", KEY.cv)) do
    local parts = split(refs, SOH)
    for i = 2, #parts do referenced[parts[i]] = true end
  end
  local dropped = 0
  for _, field in ipairs(redis.call("HKEYS", KEY.bl)) do
    if not referenced[field] then
      redis.call("HDEL", KEY.bl, field)
      redis.call("ZREM", KEY.pend, outbox(OUTBOX.blob, field))
      dropped = dropped + 1
    end
  end
  return dropped
end
