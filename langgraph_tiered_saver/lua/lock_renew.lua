-- KEYS[1] = a lock key. Extend it only while we still hold it. ARGV: token, ttl ms.
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
