-- Take the thread's flush lock (KEYS[11]) and read up to ARGV[1] outbox entries of this thread
-- with their values, in one round trip. ARGV: limit, lock token, lock ttl ms.
-- Returns false when another flusher holds the lock; else {entries, values}, where a value is
-- false when the entry's data is already gone. Re-running with the same token (a retry after
-- the script cache was flushed) finds the lock already ours.
local lock, token = KEYS[11], ARGV[2]
if not redis.call("SET", lock, token, "NX", "PX", ARGV[3]) and redis.call("GET", lock) ~= token then
  return false
end
local entries = redis.call("ZRANGE", KEYS[K_PEND], 0, tonumber(ARGV[1]) - 1)
local values = {}
for i, entry in ipairs(entries) do
  local kind, rest = string.sub(entry, 1, 1), string.sub(entry, 3)
  if kind == "c" then
    local record = redis.call("HGET", KEYS[K_CK], rest)
    local refs = redis.call("HGET", KEYS[K_CV], rest)
    if record and refs then
      values[i] = {record, refs}
    else  -- deleted, or its value refs evicted: a row without its values would restore wrong
      values[i] = false
    end
  elseif kind == "b" then
    values[i] = redis.call("HGET", KEYS[K_BL], rest) or false
  else
    values[i] = redis.call("HGET", KEYS[K_WR], rest) or false
  end
end
return {entries, values}
