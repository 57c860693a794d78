-- Write a whole thread's content into this thread's keys (copy_thread, re-warming from Postgres).
-- ARG.mark_pending "1": the outbox must carry it to Postgres. REST: sections
--   "ck", n, (member, record, refs) * n
--   "bl", n, (field, value) * n
--   "wr", n, (field, record) * n
local mark = ARG.mark_pending == "1"
clear_whole()  -- part of a thread comes in: Postgres may hold checkpoints it does not (list.lua)
local fresh = redis.call("EXISTS", KEY.idx) == 0  -- Redis held no checkpoint of the thread
local i = REST
local pend = {}
while i <= #ARGV do
  local section, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, n do
    if section == "ck" then
      local member, refs = ARGV[i], ARGV[i + 2]
      redis.call("ZADD", KEY.idx, 0, member)
      redis.call("HSET", KEY.ck, member, ARGV[i + 1])
      redis.call("HSET", KEY.cv, member, refs)
      local run_id = split(refs, SOH)[1]
      if run_id and run_id ~= "" then redis.call("ZADD", KEY.runs, 0, run_id .. NUL .. member) end
      if mark then pend[#pend + 1] = outbox(OUTBOX.checkpoint, member) end
      i = i + 3
    elseif section == "bl" then
      redis.call("HSET", KEY.bl, ARGV[i], ARGV[i + 1])
      if mark then pend[#pend + 1] = outbox(OUTBOX.blob, ARGV[i]) end
      i = i + 2
    else
      redis.call("HSET", KEY.wr, ARGV[i], ARGV[i + 1])
      redis.call("ZADD", KEY.wi, 0, ARGV[i])
      if mark then pend[#pend + 1] = outbox(OUTBOX.write, ARGV[i]) end
      i = i + 2
    end
  end
end
if #pend > 0 then add_to_outbox(pend) end
-- re-warmed from Postgres into a thread Redis did not hold: as new as Postgres by definition
if fresh and not mark then born_verified() end
if fresh then mark_birth() end
touch(ARG.ttl_ms)
return 1
