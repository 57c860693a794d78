-- Store pending writes of one task. Regular writes (idx >= 0) are never overwritten; special
-- writes (ERROR, INTERRUPT, ... with negative idx) replace an earlier one, as LangGraph expects.
-- ARGV: ttl_ms, fence, track ("1" = record outbox entries), now_ms, thread_id, dirty member,
-- then (field, record, overwrite) triples. KEYS 11/12 as in put.lua.
local err = check_fence(ARGV[2])
if err then return redis.error_reply(err) end
local pend = {}
local index = {}
local track = ARGV[3] == "1"
for i = 7, #ARGV, 3 do
  local field = ARGV[i]
  local stored
  if ARGV[i + 2] == "1" then
    redis.call("HSET", KEYS[K_WR], field, ARGV[i + 1])
    stored = 1
  else
    stored = redis.call("HSETNX", KEYS[K_WR], field, ARGV[i + 1])
  end
  if stored == 1 then
    index[#index + 1] = field
    pend[#pend + 1] = "w" .. NUL .. field
  end
end
if #index > 0 then
  zadd_lex(KEYS[K_WI], index)
  if track then zadd_lex(KEYS[K_PEND], pend) end
end
touch(ARGV[1])
mark_thread(track, ARGV[4], ARGV[5], ARGV[6])
return 1
