-- Remove flushed outbox entries, each only at the version the flush read (REST: entry, version
-- pairs): an entry written again since (a replaced special write) stays for the next flush.
-- Returns how many entries remain (0 = the thread is clean; its keys get their TTL back).
-- ARG.release "1": release the flush lock too (the last batch), if still ours.
for i = REST, #ARGV, 2 do
  if redis.call("ZSCORE", KEY.pend, ARGV[i]) == ARGV[i + 1] then
    redis.call("ZREM", KEY.pend, ARGV[i])
  end
end
if ARG.release == "1" and redis.call("GET", KEY.flush_lock) == ARG.token then
  redis.call("DEL", KEY.flush_lock)
end
local remaining = redis.call("ZCARD", KEY.pend)
if remaining == 0 then
  redis.call("HDEL", KEY.meta, "unflushed")
  touch(ARG.ttl_ms)
end
return remaining
