-- Read up to ARGV[1] outbox entries of this thread with their values, for the flusher.
-- Returns {entries, values}; a value is false when the entry's data is already gone.
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
