-- KEYS[1] = the thread's run lock, KEYS[2] = the thread's meta hash (same slot).
-- ARGV: token, lock ttl ms, thread ttl ms. Returns the new fencing token, or false if held.
-- The fencing token only grows: it is at least the current time in microseconds, so it stays
-- monotonic even if the meta hash expired with an idle thread.
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return false
end
local now = redis.call("TIME")
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local current = tonumber(redis.call("HGET", KEYS[2], "fence") or "0")
local fence = math.max(current + 1, floor)
redis.call("HSET", KEYS[2], "fence", string.format("%.0f", fence))
redis.call("PEXPIRE", KEYS[2], math.max(tonumber(ARGV[3]), tonumber(ARGV[2])))
return string.format("%.0f", fence)
