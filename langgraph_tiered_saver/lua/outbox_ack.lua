-- Remove flushed outbox entries (REST); returns how many remain (0 = the thread is clean).
-- ARG.release "1": release the flush lock too (the last batch), if still ours.
for i = REST, #ARGV, 200 do
  redis.call("ZREM", KEY.pend, unpack(ARGV, i, math.min(i + 199, #ARGV)))
end
if ARG.release == "1" and redis.call("GET", KEY.flush_lock) == ARG.token then
  redis.call("DEL", KEY.flush_lock)
end
return redis.call("ZCARD", KEY.pend)
