-- Fetch checkpoints with their blob values and writes in one round trip.
-- ARGV: refresh_ttl_ms (0 = no refresh), mode ("latest" | "ids"), then the namespace (latest)
-- or the checkpoint members (ids).
local out = {}
if ARGV[2] == "latest" then
  local ns = ARGV[3]
  local latest = redis.call("ZREVRANGEBYLEX", KEYS[K_IDX], "(" .. ns .. SOH, "[" .. ns .. NUL, "LIMIT", 0, 1)
  if latest[1] then out[1] = fetch_checkpoint(latest[1]) end
else
  for i = 3, #ARGV do
    local entry = fetch_checkpoint(ARGV[i])
    if entry then out[#out + 1] = entry end
  end
end
if #out > 0 then touch(ARGV[1]) end
return out
