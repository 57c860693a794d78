-- Has the Redis server changed since its copies were last known good? KEYS[1] holds the run id
-- of the server that held them; the other KEYS are generation counters (one per shard) that
-- get.lua compares with each thread's `vg`. A server with another run id (a restart, from an
-- older snapshot or not; a failover) may hold older copies than Postgres: every generation
-- moves, so each thread is checked against Postgres on its next read. Returns 1 when it moved.
local info = redis.call("INFO", "server")
local run_id = string.match(info, "run_id:(%x+)")
if redis.call("GET", KEYS[1]) == run_id then return 0 end
redis.call("SET", KEYS[1], run_id)
for i = 2, #KEYS do redis.call("INCR", KEYS[i]) end
return 1
