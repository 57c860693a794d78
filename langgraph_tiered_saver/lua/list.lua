-- One thread's checkpoints for `list`, newest first, in one round trip (see hot.list_stored_op).
-- ARG.ns_mode "all": every namespace, else ARG.ns only. ARG.checkpoint_id / ARG.before_id ("" =
-- none) narrow by id; ARG.limit (0 = none) is applied here (the caller passes 0 with a metadata
-- filter, which only Python can read). Each channel value is sent once however many
-- checkpoints share it. Reply: {entries, fields, values}; an entry is {member, record, refs,
-- write records, lost} (lost as in fetch_checkpoint); values[i] is the value of fields[i].
local members
if ARG.ns_mode == "all" then
  members = redis.call("ZRANGE", KEY.idx, 0, -1)
else
  members = redis.call("ZRANGEBYLEX", KEY.idx, "[" .. ARG.ns .. NUL, "(" .. ARG.ns .. SOH)
end
-- newest checkpoint id first, then namespace (descending), as the merge with Postgres expects
local keyed = {}
for _, member in ipairs(members) do
  local sep = string.find(member, NUL, 1, true)
  local ns, id = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  if (ARG.checkpoint_id == "" or id == ARG.checkpoint_id) and (ARG.before_id == "" or id < ARG.before_id) then
    keyed[#keyed + 1] = {id, ns, member}
  end
end
table.sort(keyed, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return a[2] > b[2]
end)
local limit = tonumber(ARG.limit)
local entries, fields, seen = {}, {}, {}
for _, k in ipairs(keyed) do
  if limit > 0 and #entries >= limit then break end
  local member = k[3]
  local record = redis.call("HGET", KEY.ck, member)
  if record then
    local refs = redis.call("HGET", KEY.cv, member)
    local writes, writes_lost = member_writes(member)
    local parts = split(refs or "", SOH)
    for i = 2, #parts do
      if not seen[parts[i]] then
        seen[parts[i]] = true
        fields[#fields + 1] = parts[i]
      end
    end
    entries[#entries + 1] = {member, record, refs or false, writes, (refs and writes_lost == 0) and 0 or 1}
  end
end
local values = {}
for i = 1, #fields, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #fields) do chunk[#chunk + 1] = fields[j] end
  local got = redis.call("HMGET", KEY.bl, unpack(chunk))
  for j = 1, #chunk do values[i + j - 1] = got[j] or false end
end
if #entries > 0 then touch(ARG.refresh_ttl_ms) end
return {entries, fields, values}
