-- One write of a thread, one round trip: the pending writes of a step's tasks and/or the
-- checkpoint that closes the step (ARG.member "" when there is none), with everything they need
-- in Redis: outbox entries (ARG.track "1": durable tier on), the tenant registry and outbox
-- index, the thread's TTL. Returns 1, or 0 when Redis no longer holds the epoch the writer knows
-- (it lost data since: sentinel.py). A run lock the writer holds is renewed or released here.
-- REST: ARG.writes triples (write field, record, overwrite "1"/"0"), then (blob field, value)
-- pairs of the checkpoint's changed channel values.
-- Regular writes (idx >= 0) are never overwritten; special writes (ERROR, INTERRUPT, ... with a
-- negative idx) replace an earlier one, as LangGraph expects.
-- The thread's meta fields this write needs, read once: fence (check_fence, the run lock),
-- expiring (keep_written), unflushed (add_to_outbox). No field at all: meta may be missing.
local meta = redis.call("HMGET", KEY.meta, "fence", "expiring", "unflushed")
local err = check_fence(ARG.fence, meta[1])
if err then return redis.error_reply(err) end
local track = ARG.track == "1"
local born = redis.call("EXISTS", KEY.idx) == 0  -- Redis holds no checkpoint of the thread
local expiring = track and (meta[2] or (not meta[1] and not meta[3] and redis.call("EXISTS", KEY.meta) == 0))
local pend = {}
local last_write = REST + 3 * tonumber(ARG.writes) - 1
if last_write >= REST then
  local index = {}
  for i = REST, last_write, 3 do
    local field = ARGV[i]
    local stored
    if ARGV[i + 2] == "1" then
      redis.call("HSET", KEY.wr, field, ARGV[i + 1])
      stored = 1
    else
      stored = redis.call("HSETNX", KEY.wr, field, ARGV[i + 1])
    end
    if stored == 1 then
      index[#index + 1] = field
      pend[#pend + 1] = outbox(OUTBOX.write, field)
    end
  end
  if #index > 0 then zadd_lex(KEY.wi, index) end
end
local member = ARG.member
if member ~= "" then
  redis.call("ZADD", KEY.idx, 0, member)
  redis.call("HSET", KEY.ck, member, ARG.record)
  redis.call("HSET", KEY.cv, member, ARG.refs)
  if ARG.run_id ~= "" then redis.call("ZADD", KEY.runs, 0, ARG.run_id .. NUL .. member) end
  pend[#pend + 1] = outbox(OUTBOX.checkpoint, member)
  if last_write + 1 <= #ARGV then
    local blob_args = {}
    for i = last_write + 1, #ARGV, 2 do
      blob_args[#blob_args + 1] = ARGV[i]
      blob_args[#blob_args + 1] = ARGV[i + 1]
      pend[#pend + 1] = outbox(OUTBOX.blob, ARGV[i])
    end
    redis.call("HSET", KEY.bl, unpack(blob_args))
  end
end
if born then born_verified() end
-- (a thread that keeps no meta hash, written without a durable tier or a run lock, gets none:
-- a key per thread for it is not worth it; its walks are not kept)
if born and member ~= "" and (track or redis.call("EXISTS", KEY.meta) == 1) then mark_birth() end
-- A thread Postgres holds nothing of (ARG.fresh "1", the writer asked it), born here and now,
-- with no data lost since the writer last knew this Redis: every namespace of it is whole here
-- (list.lua, get.lua `absent`) as long as this member stays its first.
if born and member ~= "" and ARG.fresh == "1" and same_epoch() == 1 then
  redis.call("HSET", KEY.meta, whole_field("all", ""), member)
end
if track then add_to_outbox(pend, meta[3]) end
mark_thread(track)
keep_written(track, expiring, ARG.ttl_ms)
-- The writer's run lock (ARG.fence: it holds the newest one): each write keeps it, and the write
-- that ends the run (ARG.release "1") lets it go, in the same round trip.
if ARG.fence ~= "" and meta[1] == ARG.fence then
  if ARG.release == "1" then
    redis.call("DEL", KEY.lock)
  elseif tonumber(ARG.lock_ttl_ms) > 0 then
    redis.call("PEXPIRE", KEY.lock, ARG.lock_ttl_ms)
  end
end
return same_epoch()
