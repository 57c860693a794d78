-- KEYS[1] = a lock key. Compare-and-delete: only the holder (same token) may release.
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
