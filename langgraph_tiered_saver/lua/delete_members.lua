-- Delete checkpoints chosen by the caller (prune) or by run id (delete_for_runs), then drop
-- blob values nothing references any more. ARGV: mode ("members" | "runs"), then ids.
local members = {}
if ARGV[1] == "runs" then
  for i = 2, #ARGV do
    for _, entry in ipairs(lex_prefix(KEYS[K_RUNS], ARGV[i])) do
      members[#members + 1] = string.sub(entry, #ARGV[i] + 2)
    end
  end
else
  for i = 2, #ARGV do members[#members + 1] = ARGV[i] end
end
local removed = delete_members(members)
local dropped = gc_blobs()
return {removed, dropped}
