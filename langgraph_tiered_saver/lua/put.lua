-- Store one checkpoint: record, blob refs, changed channel values, run index, outbox entries,
-- tenant registry and outbox index. ARG.track = "1": record outbox entries (durable tier on).
-- REST: (blob field, value) pairs.
local err = check_fence(ARG.fence)
if err then return redis.error_reply(err) end
local track = ARG.track == "1"
local member = ARG.member
redis.call("ZADD", KEY.idx, 0, member)
redis.call("HSET", KEY.ck, member, ARG.record)
redis.call("HSET", KEY.cv, member, ARG.refs)
if ARG.run_id ~= "" then redis.call("ZADD", KEY.runs, 0, ARG.run_id .. NUL .. member) end
local pend = {outbox(OUTBOX.checkpoint, member)}
local blob_args = {}
for i = REST, #ARGV, 2 do
  blob_args[#blob_args + 1] = ARGV[i]
  blob_args[#blob_args + 1] = ARGV[i + 1]
  pend[#pend + 1] = outbox(OUTBOX.blob, ARGV[i])
end
if #blob_args > 0 then redis.call("HSET", KEY.bl, unpack(blob_args)) end
if track then add_to_outbox(pend) end
mark_thread(track)
touch(ARG.ttl_ms)
return same_epoch()
