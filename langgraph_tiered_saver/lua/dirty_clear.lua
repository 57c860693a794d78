-- Forget a thread in the outbox index only if nobody wrote to it since the flusher looked
-- (its score is still <= ARG.observed, what the flusher saw).
local score = redis.call("ZSCORE", KEY.dirty, ARG.member)
if score and tonumber(score) <= tonumber(ARG.observed) then
  return redis.call("ZREM", KEY.dirty, ARG.member)
end
return 0
