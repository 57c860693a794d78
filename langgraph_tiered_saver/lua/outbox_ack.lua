-- Remove flushed outbox entries; returns how many remain (0 = the thread is clean).
-- KEYS[11] = the flush lock. ARGV: lock token, "1" to release the lock (last batch), entries.
for i = 3, #ARGV, 200 do
  redis.call("ZREM", KEYS[K_PEND], unpack(ARGV, i, math.min(i + 199, #ARGV)))
end
if ARGV[2] == "1" and redis.call("GET", KEYS[11]) == ARGV[1] then
  redis.call("DEL", KEYS[11])
end
return redis.call("ZCARD", KEYS[K_PEND])
