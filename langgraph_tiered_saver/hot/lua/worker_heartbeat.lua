-- Renew a flush worker's membership lease and return the live members (workers.py). Expiry is
-- reckoned on the Redis clock, so workers on hosts whose clocks disagree still agree on who lives.
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call("ZREMRANGEBYSCORE", KEY.workers, "-inf", now_ms)
redis.call("ZADD", KEY.workers, now_ms + tonumber(ARG.lease_ms), ARG.worker)
return redis.call("ZRANGE", KEY.workers, 0, -1)
