-- KEYS[1] = the dirty index. Forget a thread only if nobody wrote to it since the flusher
-- looked (its score is still <= what the flusher saw). ARGV: member, observed score.
local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call("ZREM", KEYS[1], ARGV[1])
end
return 0
