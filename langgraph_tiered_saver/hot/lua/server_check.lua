-- The run id of the Redis server this script runs on when it differs from the one KEY.server
-- records (the server whose copies are known good), else false. The caller then moves the
-- generations this server holds and records the run id (hotwatch.py).
local run_id = string.match(redis.call("INFO", "server"), "run_id:(%x+)")
if redis.call("GET", KEY.server) == run_id then return false end
return run_id
