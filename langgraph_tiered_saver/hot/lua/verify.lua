-- Postgres found the thread's Redis copy current: mark it verified under the shard's generation
-- the read was checked against, unless that moved meanwhile. A meta hash this creates takes the
-- TTL the thread's other keys have, so the thread still expires whole.
if redis.call("GET", KEY.vgen) ~= ARG.generation then return 0 end
local ttl = redis.call("PTTL", KEY.idx)
redis.call("HSET", KEY.meta, "vg", ARG.generation)
if ttl > 0 and redis.call("PTTL", KEY.meta) == -1 then redis.call("PEXPIRE", KEY.meta, ttl) end
return 1
