-- Fetch checkpoints with their blob values and writes in one round trip.
-- ARG.refresh_ttl_ms: 0 = no refresh. ARG.mode "latest": REST is the namespace; "ids": REST
-- are the checkpoint members.
local out = {}
if ARG.mode == "latest" then
  local ns = ARGV[REST]
  local latest = redis.call("ZREVRANGEBYLEX", KEY.idx, "(" .. ns .. SOH, "[" .. ns .. NUL, "LIMIT", 0, 1)
  if latest[1] then out[1] = fetch_checkpoint(latest[1]) end
else
  for i = REST, #ARGV do
    local entry = fetch_checkpoint(ARGV[i])
    if entry then out[#out + 1] = entry end
  end
end
if #out > 0 then touch(ARG.refresh_ttl_ms) end
return out
