-- Take the thread's flush lock and read up to ARG.limit outbox entries of this thread with
-- their values, in one round trip. Returns false when another flusher holds the lock; else
-- {entries, values}, where a value is false when the entry's data is already gone. Re-running
-- with the same token (a retry after the script cache was flushed) finds the lock already ours.
if not redis.call("SET", KEY.flush_lock, ARG.token, "NX", "PX", ARG.lock_ttl_ms)
    and redis.call("GET", KEY.flush_lock) ~= ARG.token then
  return false
end
local entries = redis.call("ZRANGE", KEY.pend, 0, tonumber(ARG.limit) - 1)
local values = {}
for i, entry in ipairs(entries) do
  local kind, rest = string.sub(entry, 1, 1), string.sub(entry, 3)
  if kind == OUTBOX.checkpoint then
    local record = redis.call("HGET", KEY.ck, rest)
    local refs = redis.call("HGET", KEY.cv, rest)
    if record and refs then
      values[i] = {record, refs}
    else  -- deleted, or its value refs evicted: a row without its values would restore wrong
      values[i] = false
    end
  elseif kind == OUTBOX.blob then
    values[i] = redis.call("HGET", KEY.bl, rest) or false
  else
    values[i] = redis.call("HGET", KEY.wr, rest) or false
  end
end
return {entries, values}
