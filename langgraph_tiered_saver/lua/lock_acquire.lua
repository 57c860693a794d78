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
redis.call("HSET", KEY.meta, "fence", string.format("%.0f", fence))
redis.call("PEXPIRE", KEY.meta, math.max(tonumber(ARG.thread_ttl_ms), tonumber(ARG.ttl_ms)))
return string.format("%.0f", fence)
