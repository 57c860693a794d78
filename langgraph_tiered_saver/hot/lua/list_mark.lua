-- Mark a namespace of the thread (or all of them, ARG.ns_mode "all") whole in Redis (see
-- list.lua): the caller listed it with Postgres, which held nothing Redis did not, and
-- ARG.oldest was its first member then. The mark goes on only if that is still so, and never
-- creates a meta hash (a key without the thread's TTL). Postgres holding nothing newer, the
-- copy is also verified under the ARG.generation list.lua saw (as verify.lua; "" = it was
-- verified already).
local first = first_member(ARG.ns_mode, ARG.ns)
if first ~= ARG.oldest or redis.call("EXISTS", KEY.meta) == 0 then return 0 end
redis.call("HSET", KEY.meta, whole_field(ARG.ns_mode, ARG.ns), first)
if ARG.generation ~= "" then redis.call("HSET", KEY.meta, "vg", ARG.generation) end
return 1
