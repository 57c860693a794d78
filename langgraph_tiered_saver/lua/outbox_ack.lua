-- Remove flushed outbox entries; returns how many remain (0 = the thread is clean).
for i = 1, #ARGV, 200 do
  redis.call("ZREM", KEYS[K_PEND], unpack(ARGV, i, math.min(i + 199, #ARGV)))
end
return redis.call("ZCARD", KEYS[K_PEND])
