-- Fetch checkpoints with their blob values and writes in one round trip.
-- ARG.refresh_ttl_ms: 0 = no refresh. ARG.mode "latest": REST is the namespace; "ids": REST
-- are the checkpoint members. Returns {status, entries, generation, fence}: "hit"; "unverified"
-- (with the shard's generation) when Redis may
-- have come back from an older copy since the thread was last checked (verify.lua: Postgres
-- decides); "evicted" when Redis lost part of what was asked; "miss" when it holds none of it;
-- "absent" when it holds none of it and vouches that no tier does.
-- ARG.lock_token "": a plain read; else the read starts a graph run, which takes the thread's run
-- lock first (take_lock): {"locked", {}} when another holder has it, else the reply ends with
-- the fencing token.
local fence = ""
if ARG.lock_token ~= "" then
  fence = take_lock(ARG.lock_token, ARG.lock_ttl_ms, ARG.thread_ttl_ms)
  if not fence then return {"locked", {}, "", ""} end
end
local out = {}
local evicted = false  -- indexed but gone: eviction took part of the thread
if ARG.mode == "latest" then
  local ns = ARGV[REST]
  local latest = redis.call("ZREVRANGEBYLEX", KEY.idx, "(" .. ns .. SOH, "[" .. ns .. NUL, "LIMIT", 0, 1)
  if latest[1] then
    out[1] = fetch_checkpoint(latest[1])
    evicted = out[1] == nil
  end
else
  for i = REST, #ARGV do
    local entry = fetch_checkpoint(ARGV[i])
    if entry then
      out[#out + 1] = entry
    elseif redis.call("ZSCORE", KEY.idx, ARGV[i]) then
      evicted = true
    end
  end
end
if #out == 0 then
  -- "absent": the thread's copy is whole for every namespace (write.lua `fresh`, list_mark.lua)
  -- and verified, so what it lacks exists nowhere (only the tier that knows says not found)
  if not evicted then
    local first = redis.call("ZRANGE", KEY.idx, 0, 0)[1]
    if first and redis.call("HGET", KEY.meta, whole_field("all", "")) == first and not unverified() then
      return {"absent", out, "", fence}
    end
  end
  return {evicted and "evicted" or "miss", out, "", fence}
end
refresh(ARG.refresh_ttl_ms)
local generation = unverified()
if generation then return {"unverified", out, generation, fence} end
return {"hit", out, "", fence}
