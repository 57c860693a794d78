-- Pending writes of some checkpoints (REST: their members) without their channel values, in
-- one round trip (see legacy.py: the TASKS writes of the parents of checkpoints LangGraph wrote
-- before format 4). Reply, one per member: {present (0/1), write records, lost (0/1)}.
local out = {}
for i = REST, #ARGV do
  if redis.call("HEXISTS", KEY.ck, ARGV[i]) == 0 then
    out[#out + 1] = {0, {}, 0}
  else
    local writes, lost = member_writes(ARGV[i])
    out[#out + 1] = {1, writes, lost}
  end
end
return out
