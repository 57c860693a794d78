-- Store one checkpoint: record, blob refs, changed channel values, run index, outbox entries.
-- ARGV: ttl_ms, fence, track ("1" = record outbox entries), member, record, refs, run_id,
-- now_ms, thread_id, dirty member, then (blob field, value) pairs.
-- KEYS 11 and 12 (tenant registry, outbox index) are given on a single Redis node only: in Redis
-- Cluster they live in other slots and the client updates them beside the script.
local err = check_fence(ARGV[2])
if err then return redis.error_reply(err) end
local track = ARGV[3] == "1"
local member = ARGV[4]
redis.call("ZADD", KEYS[K_IDX], 0, member)
redis.call("HSET", KEYS[K_CK], member, ARGV[5])
redis.call("HSET", KEYS[K_CV], member, ARGV[6])
if ARGV[7] ~= "" then redis.call("ZADD", KEYS[K_RUNS], 0, ARGV[7] .. NUL .. member) end
local pend = {"c" .. NUL .. member}
local blob_args = {}
for i = 11, #ARGV, 2 do
  blob_args[#blob_args + 1] = ARGV[i]
  blob_args[#blob_args + 1] = ARGV[i + 1]
  pend[#pend + 1] = "b" .. NUL .. ARGV[i]
end
if #blob_args > 0 then redis.call("HSET", KEYS[K_BL], unpack(blob_args)) end
if track then zadd_lex(KEYS[K_PEND], pend) end
touch(ARGV[1])
mark_thread(track, ARGV[8], ARGV[9], ARGV[10])
return 1
