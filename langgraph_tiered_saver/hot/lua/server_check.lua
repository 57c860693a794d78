-- {run id, replica}: the run id of the Redis server this script runs on when it differs from
-- the one KEY.server records (the server whose copies are known good), else false; and 1 when
-- the server is a replica (it serves reads and refuses writes: demoted in a failover the client
-- was not told of), else 0. The caller then moves the generations this server holds and records
-- the run id (hot/watch.py).
local run_id = string.match(redis.call("INFO", "server"), "run_id:(%x+)")
local replica = string.match(redis.call("INFO", "replication"), "role:(%a+)") == "slave" and 1 or 0
if redis.call("GET", KEY.server) == run_id then return {false, replica} end
return {run_id, replica}
