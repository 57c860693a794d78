-- Take the thread's flush lease (its flush lock) and read up to ARG.limit outbox entries of this
-- thread with their versions and values, in one round trip. Returns false when another flusher
-- holds the lease (unless ARG.force is "1": a synchronous flush that waited long enough takes it
-- over); else {entries, versions, values, outbox_lost, seconds, microseconds, leased}, where a
-- value is false when the entry's data is gone, and seconds/microseconds are the Redis clock
-- now (the first read's clock is the flush's fencing token, checked by Postgres).
-- Redis full under noeviction refuses SET (it may allocate) but not GET, PEXPIRE or DEL: the flush
-- then goes on without a lease (leased 0) rather than never draining; Postgres' fence still
-- orders concurrent flushers (a lower token never commits over a higher one).
-- A checkpoint's value is {record, refs, missing, bare}: `missing` lists the channel values it
-- references that Redis no longer holds (the flusher checks Postgres for them before writing
-- the row: a row that would not read back is never written); `bare` is field, type, field,
-- type... of the values it references that are a type alone, without payload (an empty
-- channel, a None): the row names them, no value row is written for them. Re-running with the same token
-- (the next batch, or a retry after the script cache was flushed) finds the lease ours and
-- renews it for ARG.lock_ttl_ms: a flush keeps its lease while it makes progress.
local BARE_MAX = 32  -- a stored value is `type\0payload`; a type is short
local function refused(reply) return type(reply) == "table" and reply.err ~= nil end
local holder, leased = redis.call("GET", KEY.flush_lock), 1
if holder == ARG.token then
  redis.call("PEXPIRE", KEY.flush_lock, ARG.lock_ttl_ms)
elseif holder and ARG.force ~= "1" then
  return false
elseif refused(redis.pcall("SET", KEY.flush_lock, ARG.token, "PX", ARG.lock_ttl_ms)) then
  if holder then redis.call("DEL", KEY.flush_lock) end  -- a forced takeover while Redis is full
  leased = 0
end
local clock = redis.call("TIME")
local scored = redis.call("ZRANGE", KEY.pend, 0, tonumber(ARG.limit) - 1, "WITHSCORES")
local entries, versions, values = {}, {}, {}
for i = 1, #scored, 2 do
  local entry = scored[i]
  local n = #entries + 1
  entries[n], versions[n] = entry, scored[i + 1]
  local kind, rest = string.sub(entry, 1, 1), string.sub(entry, 3)
  if kind == OUTBOX.checkpoint then
    local record = redis.call("HGET", KEY.ck, rest)
    local refs = redis.call("HGET", KEY.cv, rest)
    if record and refs then
      local parts, missing, bare = split(refs, SOH), {}, {}
      for j = 2, #parts do
        local size = redis.call("HSTRLEN", KEY.bl, parts[j])
        if size == 0 then
          missing[#missing + 1] = parts[j]
        elseif size <= BARE_MAX then
          local stored = redis.call("HGET", KEY.bl, parts[j])
          if string.find(stored, NUL, 1, true) == size then  -- `type\0`: no payload
            bare[#bare + 1] = parts[j]
            bare[#bare + 1] = string.sub(stored, 1, size - 1)
          end
        end
      end
      values[n] = {record, refs, missing, bare}
    else  -- deleted, or its value refs evicted: a row without its values would restore wrong
      values[n] = false
    end
  elseif kind == OUTBOX.blob then
    values[n] = redis.call("HGET", KEY.bl, rest) or false
  else
    values[n] = redis.call("HGET", KEY.wr, rest) or false
  end
end
-- No entries although the thread's meta says some are unflushed: the outbox itself was evicted
-- (allkeys-* policy). Reported once (4th element 1), then forgotten.
local outbox_lost = 0
if #entries == 0 and redis.call("HGET", KEY.meta, "unflushed") then
  redis.call("HDEL", KEY.meta, "unflushed")
  outbox_lost = 1
end
return {entries, versions, values, outbox_lost, clock[1], clock[2], leased}
