-- Raise the write-through count Redis has seen to ARG.count (never lower it): every tenant's
-- `known` mark then stops matching, until its registry is rebuilt (known.py). 1 if raised.
local seen = tonumber(redis.call("GET", KEY.write_through) or "0")
if tonumber(ARG.count) > seen then
  redis.call("SET", KEY.write_through, ARG.count)
  return 1
end
return 0
