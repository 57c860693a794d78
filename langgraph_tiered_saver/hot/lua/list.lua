-- One thread's checkpoints for `list`, newest first, in one round trip (see hot.list_stored_op).
-- ARG.ns_mode "all": every namespace, else ARG.ns only. ARG.checkpoint_id / ARG.before_id ("" =
-- none) narrow by id; ARG.limit (0 = none) is applied here (the caller passes 0 with a metadata
-- filter, which only Python can read). Each channel value is sent once however many
-- checkpoints share it. Reply: {entries, fields, values, whole, oldest, generation}; an entry is
-- {member, record, refs, write records, lost} (lost as in fetch_checkpoint); values[i] is the
-- value of fields[i]. `oldest` is the first member listed by the index (of the namespace, or
-- of the thread with ns_mode "all"), `generation` the shard
-- generation to verify the copy under ("" when verified, see get.lua), and `whole` 1 when Redis
-- holds all Postgres has of them: list_mark.lua recorded that oldest member after Postgres had
-- nothing more (anything that drops or re-imports part of the thread loses the mark, see
-- whole_field), the copy is verified (hotwatch.py) and every listed checkpoint is there whole.
local members
if ARG.ns_mode == "all" then
  members = redis.call("ZRANGE", KEY.idx, 0, -1)
else
  members = redis.call("ZRANGEBYLEX", KEY.idx, "[" .. ARG.ns .. NUL, "(" .. ARG.ns .. SOH)
end
-- newest checkpoint id first, then namespace (descending), as the merge with Postgres expects;
-- one namespace's members are in id order already
local keyed = {}
local function keep(member, id, ns)
  if (ARG.checkpoint_id == "" or id == ARG.checkpoint_id) and (ARG.before_id == "" or id < ARG.before_id) then
    keyed[#keyed + 1] = {id, ns, member}
  end
end
if ARG.ns_mode == "all" then
  for _, member in ipairs(members) do
    local sep = string.find(member, NUL, 1, true)
    keep(member, string.sub(member, sep + 1), string.sub(member, 1, sep - 1))
  end
  table.sort(keyed, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    return a[2] > b[2]
  end)
else
  local from = #ARG.ns + 2
  for i = #members, 1, -1 do keep(members[i], string.sub(members[i], from), ARG.ns) end
end
local limit = tonumber(ARG.limit)
-- records and refs by HMGET, a chunk of candidates at a time (a candidate whose record is gone
-- is skipped, so a limited list may need a second chunk)
local entries, fields, seen = {}, {}, {}
local complete = true  -- every candidate read had its record
local pos = 1
while pos <= #keyed and (limit <= 0 or #entries < limit) do
  local chunk = {}
  local want = limit > 0 and math.min(limit - #entries, 500) or 500
  for i = pos, math.min(pos + want - 1, #keyed) do chunk[#chunk + 1] = keyed[i][3] end
  pos = pos + #chunk
  local records = redis.call("HMGET", KEY.ck, unpack(chunk))
  local refs_of = redis.call("HMGET", KEY.cv, unpack(chunk))
  for i, member in ipairs(chunk) do
    if not records[i] then complete = false end
    if records[i] then
      local refs = refs_of[i]
      local parts = split(refs or "", SOH)
      for j = 2, #parts do
        if not seen[parts[j]] then
          seen[parts[j]] = true
          fields[#fields + 1] = parts[j]
        end
      end
      entries[#entries + 1] = {member, records[i], refs or false, {}, refs and 0 or 1}
    end
  end
end
-- Write records. One namespace: the write index holds a checkpoint's write fields under
-- "<member>\0", and the listed checkpoints are a run of that namespace's ids, so one range read
-- covers them all; every namespace: per checkpoint (member_writes).
if ARG.ns_mode == "all" then
  for _, entry in ipairs(entries) do
    local writes, writes_lost = member_writes(entry[1])
    entry[4] = writes
    if writes_lost == 1 then entry[5] = 1 end
  end
elseif #entries > 0 then
  local by_member = {}
  for _, entry in ipairs(entries) do by_member[entry[1]] = entry end
  local low, high = entries[#entries][1], entries[1][1]  -- oldest and newest listed
  local indexed = redis.call("ZRANGEBYLEX", KEY.wi, "[" .. low .. NUL, "(" .. high .. SOH)
  local wanted, owners = {}, {}
  local from = #ARG.ns + 2  -- past "<ns>\0": the NUL that ends the checkpoint id
  for _, wf in ipairs(indexed) do
    local stop = string.find(wf, NUL, from, true)
    local entry = stop and by_member[string.sub(wf, 1, stop - 1)]
    if entry then
      wanted[#wanted + 1] = wf
      owners[#owners + 1] = entry
    end
  end
  for i = 1, #wanted, 500 do
    local chunk = {}
    for j = i, math.min(i + 499, #wanted) do chunk[#chunk + 1] = wanted[j] end
    local got = redis.call("HMGET", KEY.wr, unpack(chunk))
    for j = 1, #chunk do
      local entry = owners[i + j - 1]
      if got[j] then
        entry[4][#entry[4] + 1] = got[j]
      else
        entry[5] = 1  -- indexed, gone: eviction took part of its writes
      end
    end
  end
  -- a checkpoint without indexed writes lost them if the index went and the writes did not
  local bare = false
  for _, entry in ipairs(entries) do
    if #entry[4] == 0 then bare = true end
  end
  if bare and redis.call("EXISTS", KEY.wr) == 1 and redis.call("EXISTS", KEY.wi) == 0 then
    for _, entry in ipairs(entries) do
      if #entry[4] == 0 then entry[5] = 1 end
    end
  end
end
local values = {}
for i = 1, #fields, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #fields) do chunk[#chunk + 1] = fields[j] end
  local got = redis.call("HMGET", KEY.bl, unpack(chunk))
  for j = 1, #chunk do values[i + j - 1] = got[j] or false end
end
local whole, oldest, generation = 0, "", ""
if members[1] then
  oldest = members[1]  -- ZRANGE and ZRANGEBYLEX: lexicographic, oldest id of the namespace first
  generation = unverified() or ""
  if complete and generation == "" and redis.call("HGET", KEY.meta, whole_field(ARG.ns_mode, ARG.ns)) == oldest then
    whole = 1
    for _, entry in ipairs(entries) do
      if entry[5] == 1 then whole = 0 end
    end
  end
end
if #entries > 0 then refresh(ARG.refresh_ttl_ms) end
return {entries, fields, values, whole, oldest, generation}
