-- Take the thread's run lock. Returns the new fencing token, or false if held. The fencing
-- token only grows: it is at least the current time in microseconds, so it stays monotonic
-- even if the meta hash expired with an idle thread.
if not redis.call("SET", KEY.lock, ARG.token, "NX", "PX", ARG.ttl_ms) then
  return false
end
local now = redis.call("TIME")
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local current = tonumber(redis.call("HGET", KEY.meta, "fence") or "0")
local fence = math.max(current + 1, floor)
local persistent = redis.call("PTTL", KEY.meta) == -1  -- a thread with unflushed data keeps no TTL
redis.call("HSET", KEY.meta, "fence", string.format("%.0f", fence))
if not persistent then
  redis.call("PEXPIRE", KEY.meta, math.max(tonumber(ARG.thread_ttl_ms), tonumber(ARG.ttl_ms)))
  redis.call("HSET", KEY.meta, "expiring", "1")
end
return string.format("%.0f", fence)
