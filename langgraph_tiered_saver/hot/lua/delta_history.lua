-- DeltaChannel history (see delta.py): walk the parent chain of a checkpoint in one round trip,
-- collecting for each wanted channel (REST) the write records of every on-path ancestor and
-- the stored value ("seed") at the nearest ancestor that holds one. The walk starts at the
-- target's parent (the target's own writes belong to the next step) and stops for a channel at
-- its seed. ARG.checkpoint_id "" = the latest checkpoint of namespace ARG.ns.
-- Reply: {status, target id, steps, seeds, next}
--   status "done": the walk ended here (every channel seeded, or the root reached);
--          "handoff": Redis lacks ancestor `next`: continue from it in Postgres;
--          "lost": Redis holds ancestor `next` only in part (evicted): Postgres must have it;
--          "target": Redis lacks the target itself: walk it all in Postgres.
--   steps: one per ancestor visited, newest first: the write records of the wanted channels;
--   seeds: flat {channel, typed value, ...} for the channels seeded here.
local ns = ARG.ns
local target
if ARG.checkpoint_id == "" then
  target = redis.call("ZREVRANGEBYLEX", KEY.idx, "(" .. ns .. SOH, "[" .. ns .. NUL, "LIMIT", 0, 1)[1]
  if not target then return {"target", "", {}, {}, ""} end
else
  target = ns .. NUL .. ARG.checkpoint_id
end
local target_id = string.sub(target, #ns + 2)

local remaining, left = {}, 0
for i = REST, #ARGV do
  if not remaining[ARGV[i]] then
    remaining[ARGV[i]] = true
    left = left + 1
  end
end

-- Just enough msgpack to read one field of a record (codec.py packs them with ormsgpack; the
-- server's cmsgpack rejects bin types): the byte length of the value at `pos` and, when `want`
-- and it is a string or nil, the value (false for nil). Records are arrays of ints, strings,
-- bins, floats and nil. A field skipped is never copied out of the record.
local FIXED = {[0xca] = 5, [0xcb] = 9, [0xcc] = 2, [0xcd] = 3, [0xce] = 5, [0xcf] = 9,
  [0xd0] = 2, [0xd1] = 3, [0xd2] = 5, [0xd3] = 9, [0xc2] = 1, [0xc3] = 1}
local LENGTH_BYTES = {[0xd9] = 1, [0xc4] = 1, [0xda] = 2, [0xc5] = 2, [0xdb] = 4, [0xc6] = 4}
local function mp_value(s, pos, want)
  local b = string.byte(s, pos)
  if b < 0x80 or b >= 0xe0 then return 1 end  -- fixint
  if b >= 0xa0 and b <= 0xbf then
    local n = b - 0xa0
    return 1 + n, want and string.sub(s, pos + 1, pos + n)
  end
  if b == 0xc0 then return 1, false end
  local size = LENGTH_BYTES[b]
  if size then
    local n = 0
    for i = 1, size do n = n * 256 + string.byte(s, pos + i) end
    return 1 + size + n, want and string.sub(s, pos + 1 + size, pos + size + n)
  end
  if FIXED[b] then return FIXED[b] end
  error("unexpected msgpack type " .. b .. " in a stored record")
end

-- Field `n` (1-based) of a packed record (a fixarray), as mp_value returns it.
local function mp_field(s, n)
  local pos = 2  -- past the fixarray header
  for _ = 1, n - 1 do pos = pos + mp_value(s, pos, false) end
  local _, value = mp_value(s, pos, true)
  return value
end

-- The parent id of a checkpoint (nil at the root), or false when Redis lacks its record.
local function parent_of(member)
  local record = redis.call("HGET", KEY.ck, member)
  if not record then return false end
  return mp_field(record, 6) or nil
end

-- One ancestor: its writes to the channels still wanted and the seeds it holds, or nil when
-- eviction took part of what it needs (then Postgres answers for it and what lies beyond).
local function visit(member)
  local refs = redis.call("HGET", KEY.cv, member)
  if not refs then return nil end
  local writes, lost = member_writes(member)
  if lost == 1 then return nil end
  local mine = {}
  for i = 1, #writes do
    local raw = writes[i]
    if remaining[mp_field(raw, 4)] then mine[#mine + 1] = raw end
  end
  -- refs: run id, then one blob field per channel (ns NUL channel NUL version), SOH-separated;
  -- a field holds no SOH, and ns and channel no NUL: a wanted channel's field is found directly
  local seeds = {}
  for channel in pairs(remaining) do
    local start = string.find(refs, SOH .. ns .. NUL .. channel .. NUL, 1, true)
    if start then
      local stop = string.find(refs, SOH, start + 1, true)
      local value = redis.call("HGET", KEY.bl, string.sub(refs, start + 1, stop and stop - 1 or -1))
      if not value then return nil end
      if string.sub(value, 1, 6) ~= "empty" .. NUL then
        seeds[#seeds + 1] = channel
        seeds[#seeds + 1] = value
      end
    end
  end
  return mine, seeds
end

local target_parent = parent_of(target)  -- all the walk needs of the target itself
if target_parent == false then return {"target", target_id, {}, {}, ""} end
local steps, seeds = {}, {}
local cursor = target_parent
while cursor and left > 0 do
  local member = ns .. NUL .. cursor
  local parent = parent_of(member)
  if parent == false then return {"handoff", target_id, steps, seeds, cursor} end
  local mine, found = visit(member)
  if not mine then return {"lost", target_id, steps, seeds, cursor} end
  steps[#steps + 1] = mine
  for i = 1, #found, 2 do
    seeds[#seeds + 1] = found[i]
    seeds[#seeds + 1] = found[i + 1]
    remaining[found[i]] = nil
    left = left - 1
  end
  cursor = parent
end
touch(ARG.refresh_ttl_ms)
return {"done", target_id, steps, seeds, ""}
