-- Extend the lock only while we still hold it.
if redis.call("GET", KEY.lock) == ARG.token then
  return redis.call("PEXPIRE", KEY.lock, ARG.ttl_ms)
end
return 0
