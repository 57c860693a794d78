-- Remove flushed outbox entries, each only at the version the flush read (REST: entry, version,
-- replacement triples): an entry written again since (a replaced special write) stays for the
-- next flush. A non-empty replacement is the value's pointer now that the flush put it in the
-- blob store: Redis keeps the pointer instead of the value (only at the version read, so a newer
-- value is never replaced). Returns how many entries remain (0 = the thread is clean; its keys
-- get their TTL back). ARG.release "1": release the flush lock too (the last batch), if still ours.
-- A clean thread also leaves the outbox index (KEY.dirty, in the thread's slot), unless someone
-- wrote to it since the flusher looked: its score is then above ARG.observed ("": not looked).
-- With no triples this only releases the lock and clears the index (an outbox found empty).
for i = REST, #ARGV, 3 do
  if redis.call("ZSCORE", KEY.pend, ARGV[i]) == ARGV[i + 1] then
    redis.call("ZREM", KEY.pend, ARGV[i])
    if ARGV[i + 2] ~= "" then
      local kind, name = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 3)
      local hash = kind == OUTBOX.blob and KEY.bl or KEY.wr
      if redis.call("HEXISTS", hash, name) == 1 then redis.call("HSET", hash, name, ARGV[i + 2]) end
    end
  end
end
if ARG.release == "1" and redis.call("GET", KEY.flush_lock) == ARG.token then
  redis.call("DEL", KEY.flush_lock)
end
local remaining = redis.call("ZCARD", KEY.pend)
if remaining == 0 then
  redis.call("HDEL", KEY.meta, "unflushed")
  touch(ARG.ttl_ms)
  if ARG.observed ~= "" then
    local score = redis.call("ZSCORE", KEY.dirty, ARG.member)
    if score and tonumber(score) <= tonumber(ARG.observed) then redis.call("ZREM", KEY.dirty, ARG.member) end
  end
end
return remaining
