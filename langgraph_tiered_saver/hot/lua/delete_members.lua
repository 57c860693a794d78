-- Delete checkpoints chosen by the caller (prune) or by run id (delete_for_runs), then drop
-- blob values nothing references any more. ARG.mode: "members" | "runs"; REST: the ids.
local members = {}
if ARG.mode == "runs" then
  for i = REST, #ARGV do
    for _, entry in ipairs(lex_prefix(KEY.runs, ARGV[i])) do
      members[#members + 1] = string.sub(entry, #ARGV[i] + 2)
    end
  end
else
  for i = REST, #ARGV do members[#members + 1] = ARGV[i] end
end
local removed = delete_members(members)
if removed > 0 then clear_whole() end  -- Postgres may keep some until its own deletion runs
local dropped = gc_blobs()
if redis.call("ZCARD", KEY.pend) == 0 then redis.call("HDEL", KEY.meta, "unflushed") end
return {removed, dropped}
