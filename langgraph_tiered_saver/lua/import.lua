-- Write a whole thread's content into this thread's keys (copy_thread, re-warming from Postgres).
-- ARGV: ttl_ms, mark_pending ("1" = the outbox must carry it to Postgres), then sections:
--   "ck", n, (member, record, refs) * n
--   "bl", n, (field, value) * n
--   "wr", n, (field, record) * n
local ttl, mark = ARGV[1], ARGV[2] == "1"
local i = 3
local pend = {}
while i <= #ARGV do
  local section, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, n do
    if section == "ck" then
      local member, refs = ARGV[i], ARGV[i + 2]
      redis.call("ZADD", KEYS[K_IDX], 0, member)
      redis.call("HSET", KEYS[K_CK], member, ARGV[i + 1])
      redis.call("HSET", KEYS[K_CV], member, refs)
      local run_id = split(refs, SOH)[1]
      if run_id and run_id ~= "" then redis.call("ZADD", KEYS[K_RUNS], 0, run_id .. NUL .. member) end
      if mark then pend[#pend + 1] = "c" .. NUL .. member end
      i = i + 3
    elseif section == "bl" then
      redis.call("HSET", KEYS[K_BL], ARGV[i], ARGV[i + 1])
      if mark then pend[#pend + 1] = "b" .. NUL .. ARGV[i] end
      i = i + 2
    else
      redis.call("HSET", KEYS[K_WR], ARGV[i], ARGV[i + 1])
      redis.call("ZADD", KEYS[K_WI], 0, ARGV[i])
      if mark then pend[#pend + 1] = "w" .. NUL .. ARGV[i] end
      i = i + 2
    end
  end
end
if #pend > 0 then zadd_lex(KEYS[K_PEND], pend) end
touch(ttl)
return 1
