-- Shared by every script (prepended when the script is loaded).
-- Thread KEYS, always in this order: 1 idx, 2 ck, 3 cv, 4 bl, 5 wi, 6 wr, 7 runs, 8 pend, 9 meta, 10 lock
local K_IDX, K_CK, K_CV, K_BL, K_WI, K_WR, K_RUNS, K_PEND, K_META, K_LOCK = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
local NUL, SOH = "\0", "\1"

-- Refresh the TTL of every key of the thread, so the thread expires whole, never in part.
local function touch(ttl)
  ttl = tonumber(ttl)
  if ttl and ttl > 0 then
    for i = 1, 9 do redis.call("PEXPIRE", KEYS[i], ttl) end
  end
end

-- Fencing: a writer without a token may not write while someone holds the thread lock; a writer
-- whose token is older than the newest issued one lost its lock and may not write at all.
local function check_fence(token)
  if token == "" then
    if redis.call("EXISTS", KEYS[K_LOCK]) == 1 then
      return "LOCKED thread is locked by another holder; take the lock or wait"
    end
    return nil
  end
  local current = redis.call("HGET", KEYS[K_META], "fence")
  if current and tonumber(current) > tonumber(token) then
    return "STALE fencing token " .. token .. " is older than " .. current .. ": the lock was lost"
  end
  return nil
end

-- Single-node mode: record the thread in its tenant's registry and (durable tier on) in the
-- outbox index, in the same script as the data.
local function mark_thread(track, now, thread_id, dirty_member)
  if #KEYS >= 12 then
    redis.call("ZADD", KEYS[11], now, thread_id)
    if track then redis.call("ZADD", KEYS[12], now, dirty_member) end
  end
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
  local write_fields = lex_prefix(KEYS[K_WI], member)
  if #write_fields > 0 then
    local writes = redis.call("HMGET", KEYS[K_WR], unpack(write_fields))
    for i = 1, #write_fields do
      if not writes[i] then return writes, 1 end
    end
    return writes, 0
  end
  if redis.call("EXISTS", KEYS[K_WR]) == 1 and redis.call("EXISTS", KEYS[K_WI]) == 0 then
    return {}, 1  -- the write index went, the writes did not: which are ours is unknown
  end
  return {}, 0
end

-- The checkpoint, its blob values and its writes, as one array (nil if absent).
local function fetch_checkpoint(member)
  local record = redis.call("HGET", KEYS[K_CK], member)
  if not record then return nil end
  local refs = redis.call("HGET", KEYS[K_CV], member)
  local parts = split(refs or "", SOH)
  local values = {}
  if #parts > 1 then
    local fields = {}
    for i = 2, #parts do fields[#fields + 1] = parts[i] end
    values = redis.call("HMGET", KEYS[K_BL], unpack(fields))
  end
  local writes, writes_lost = member_writes(member)
  -- lost = 1 when eviction took part of what this checkpoint needs (see hot.parse_entry)
  local lost = (refs and writes_lost == 0) and 0 or 1
  return {member, record, refs, values, writes, lost}
end

-- Remove checkpoints (and their writes, run index entries and outbox entries).
local function delete_members(members)
  local removed = 0
  for _, member in ipairs(members) do
    local refs = redis.call("HGET", KEYS[K_CV], member)
    if refs then
      local run_id = split(refs, SOH)[1]
      if run_id and run_id ~= "" then redis.call("ZREM", KEYS[K_RUNS], run_id .. NUL .. member) end
    end
    removed = removed + redis.call("ZREM", KEYS[K_IDX], member)
    redis.call("HDEL", KEYS[K_CK], member)
    redis.call("HDEL", KEYS[K_CV], member)
    redis.call("ZREM", KEYS[K_PEND], "c" .. NUL .. member)
    for _, wf in ipairs(lex_prefix(KEYS[K_WI], member)) do
      redis.call("HDEL", KEYS[K_WR], wf)
      redis.call("ZREM", KEYS[K_WI], wf)
      redis.call("ZREM", KEYS[K_PEND], "w" .. NUL .. wf)
    end
  end
  return removed
end

-- Drop blob values no remaining checkpoint references.
local function gc_blobs()
  local referenced = {}
  for _, refs in ipairs(redis.call("HVALS", KEYS[K_CV])) do
    local parts = split(refs, SOH)
    for i = 2, #parts do referenced[parts[i]] = true end
  end
  local dropped = 0
  for _, field in ipairs(redis.call("HKEYS", KEYS[K_BL])) do
    if not referenced[field] then
      redis.call("HDEL", KEYS[K_BL], field)
      redis.call("ZREM", KEYS[K_PEND], "b" .. NUL .. field)
      dropped = dropped + 1
    end
  end
  return dropped
end
