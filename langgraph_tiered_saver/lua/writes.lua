-- Pending writes of some checkpoints without their channel values, in one round trip (see
-- legacy.py: the TASKS writes of the parents of checkpoints LangGraph wrote before format 4).
-- ARGV: checkpoint members. Reply, one per member: {present (0/1), write records, lost (0/1)}.
local out = {}
for i = 1, #ARGV do
  if redis.call("HEXISTS", KEYS[K_CK], ARGV[i]) == 0 then
    out[i] = {0, {}, 0}
  else
    local writes, lost = member_writes(ARGV[i])
    out[i] = {1, writes, lost}
  end
end
return out
