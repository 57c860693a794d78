-- Compare-and-delete: only the holder (same token) may release.
if redis.call("GET", KEY.lock) == ARG.token then
  return redis.call("DEL", KEY.lock)
end
return 0
