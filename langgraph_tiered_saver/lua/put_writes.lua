-- Store pending writes of one task. Regular writes (idx >= 0) are never overwritten; special
-- writes (ERROR, INTERRUPT, ... with negative idx) replace an earlier one, as LangGraph expects.
-- REST: (field, record, overwrite "1"/"0") triples.
local err = check_fence(ARG.fence)
if err then return redis.error_reply(err) end
local pend = {}
local index = {}
local track = ARG.track == "1"
for i = REST, #ARGV, 3 do
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
if #index > 0 then
  zadd_lex(KEY.wi, index)
  if track then add_to_outbox(pend) end
end
mark_thread(track)
touch(ARG.ttl_ms)
return same_epoch()
