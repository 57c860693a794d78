-- Take the thread's flush lease (its flush lock) and read up to ARG.limit outbox entries of this
-- thread with their versions and values, in one round trip. Returns false when another flusher
-- holds the lease; else {entries, versions, values, outbox_lost}, where a value is false when the entry's data is gone.
-- A checkpoint's value is {record, refs, missing}: `missing` lists the channel values it
-- references that Redis no longer holds (the flusher checks Postgres for them before writing
-- the row: a row that would not read back is never written). Re-running with the same token
-- (the next batch, or a retry after the script cache was flushed) finds the lease ours and
-- renews it for ARG.lock_ttl_ms: a flush keeps its lease while it makes progress.
if not redis.call("SET", KEY.flush_lock, ARG.token, "NX", "PX", ARG.lock_ttl_ms) then
  if redis.call("GET", KEY.flush_lock) ~= ARG.token then return false end
  redis.call("PEXPIRE", KEY.flush_lock, ARG.lock_ttl_ms)
end
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
      local parts, missing = split(refs, SOH), {}
      for j = 2, #parts do
        if redis.call("HEXISTS", KEY.bl, parts[j]) == 0 then missing[#missing + 1] = parts[j] end
      end
      values[n] = {record, refs, missing}
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
return {entries, versions, values, outbox_lost}
