-- DeltaChannel history (see delta.py): walk the parent chain of a checkpoint in one round trip,
-- collecting for each wanted channel (REST) the write records of every on-path ancestor and
-- the stored value ("seed") at the nearest ancestor that holds one. The walk starts at the
-- target's parent (the target's own writes belong to the next step) and stops for a channel at
-- its seed. ARG.checkpoint_id "" = the latest checkpoint of namespace ARG.ns.
-- ARG.known: the newest ancestor of a walk the caller kept (delta.py), "" for none; ARG.known_from
-- its oldest, ARG.known_count the write fields its range held then, ARG.known_born the thread's
-- birth mark then (mark_birth). Reaching it, the walk stops there if the thread is the same one
-- and the range holds as many fields now (nothing was written to those ancestors, nor deleted).
-- A thread without a birth mark (mark_birth) is always walked whole.
-- Reply: {status, target id, steps, seeds, next, visited ids, count, birth mark}
--   status "done": the walk ended here (every channel seeded, or the root reached);
--          "known": it reached the caller's walk, which goes on from here;
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

local remaining, wanted, needles, left = {}, {}, {}, 0
for i = REST, #ARGV do
  if not remaining[ARGV[i]] then
    remaining[ARGV[i]] = true
    wanted[ARGV[i]] = true
    needles[ARGV[i]] = SOH .. ns .. NUL .. ARGV[i] .. NUL  -- its blob field in a checkpoint's refs
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
local byte, sub, find = string.byte, string.sub, string.find
local EMPTY_TAG = "empty" .. NUL  -- the typed value of a channel with no value (codec.EMPTY)
local function mp_value(s, pos, want)
  local b = byte(s, pos)
  if b < 0x80 or b >= 0xe0 then return 1 end  -- fixint
  if b >= 0xa0 and b <= 0xbf then
    local n = b - 0xa0
    return 1 + n, want and sub(s, pos + 1, pos + n)
  end
  if b == 0xc0 then return 1, false end
  local size = LENGTH_BYTES[b]
  if size then
    local n
    if size == 1 then
      n = byte(s, pos + 1)
    elseif size == 2 then
      local b1, b2 = byte(s, pos + 1, pos + 2)
      n = b1 * 256 + b2
    else
      local b1, b2, b3, b4 = byte(s, pos + 1, pos + 4)
      n = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    end
    return 1 + size + n, want and sub(s, pos + 1 + size, pos + size + n)
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

-- The seeds an ancestor holds for the channels still wanted (flat {channel, value, ...}), or
-- nil when eviction took part of what it needs (then Postgres answers for it and beyond).
-- `empty` remembers the blob fields found holding no value: an ancestor whose channel did not
-- change names its parent's field again, which is not read twice.
local empty = {}
local function seeds_of(member)
  local refs = redis.call("HGET", KEY.cv, member)
  if not refs then return nil end
  -- refs: run id, then one blob field per channel (ns NUL channel NUL version), SOH-separated;
  -- a field holds no SOH, and ns and channel no NUL: a wanted channel's field is found directly
  local seeds = {}
  for channel in pairs(remaining) do
    local start = find(refs, needles[channel], 1, true)
    if start then
      local stop = find(refs, SOH, start + 1, true)
      local field = sub(refs, start + 1, stop and stop - 1 or -1)
      if not empty[field] then
        local value = redis.call("HGET", KEY.bl, field)
        if not value then return nil end
        if sub(value, 1, 6) ~= EMPTY_TAG then
          seeds[#seeds + 1] = channel
          seeds[#seeds + 1] = value
        else
          empty[field] = true
        end
      end
    end
  end
  return seeds
end

-- The walk: first the parent chain and the seeds (the ancestors visited, newest first, and for
-- each the seeds found there), then the writes of all of them at once.
local target_parent = parent_of(target)  -- all the walk needs of the target itself
if target_parent == false then return {"target", target_id, {}, {}, ""} end
local visited, found_at, seeded_at = {}, {}, {}
local status, next_id = "done", ""
local cursor = target_parent
-- A thread written before birth marks existed gets one now, if it keeps a meta hash: a walk
-- kept from here on tells it from a thread built again later, which gets its own at birth.
local born = redis.call("HGET", KEY.meta, "born")
if not born and redis.call("EXISTS", KEY.meta) == 1 then
  mark_birth()
  born = redis.call("HGET", KEY.meta, "born")
end
born = born or ""
local known = ARG.known ~= "" and born ~= "" and born == ARG.known_born and ns .. NUL .. ARG.known or nil
local function write_count(oldest, newest)  -- the write fields of the ancestors in this id range
  return redis.call("ZLEXCOUNT", KEY.wi, "[" .. ns .. NUL .. oldest .. NUL, "(" .. newest .. SOH)
end
while cursor and left > 0 do
  local member = ns .. NUL .. cursor
  if member == known then
    if write_count(ARG.known_from, member) == tonumber(ARG.known_count) then status = "known"; break end
    known = nil  -- changed since: walk on
  end
  local parent = parent_of(member)
  if parent == false then status, next_id = "handoff", cursor; break end
  local found = seeds_of(member)
  if not found then status, next_id = "lost", cursor; break end
  visited[#visited + 1] = member
  found_at[#visited] = found
  for i = 1, #found, 2 do
    remaining[found[i]] = nil
    seeded_at[found[i]] = #visited
    left = left - 1
  end
  cursor = parent
end

-- The write fields of the visited ancestors: one range read over the write index, from the
-- oldest visited to the newest. A checkpoint's fields are contiguous (ns NUL id NUL ...), so
-- each visited ancestor has all of its fields in the range or none; one with none (it wrote
-- nothing, or its id does not sort between the two, as ids need not) is read on its own.
-- Fields of checkpoints off the path (forks) are left out.
local fields_of, on_path = {}, {}
for i = 1, #visited do on_path[visited[i]] = i end
if #visited > 0 then
  local range = redis.call("ZRANGEBYLEX", KEY.wi, "[" .. visited[#visited] .. NUL, "(" .. visited[1] .. SOH)
  for _, field in ipairs(range) do
    local member = sub(field, 1, find(field, NUL, #ns + 2, true) - 1)
    local i = on_path[member]
    if i then
      fields_of[i] = fields_of[i] or {}
      table.insert(fields_of[i], field)
    end
  end
end
local all = {}
for i = 1, #visited do
  if not fields_of[i] then fields_of[i] = lex_prefix(KEY.wi, visited[i]) end
  for _, field in ipairs(fields_of[i]) do all[#all + 1] = field end
end
local records = {}
for first = 1, #all, 1000 do  -- unpack() has a stack limit
  local chunk = redis.call("HMGET", KEY.wr, unpack(all, first, math.min(first + 999, #all)))
  for _, record in ipairs(chunk) do records[#records + 1] = record or false end
end
-- Nothing indexed while writes exist: the write index went and the writes did not, so which
-- writes are whose is unknown (as member_writes)
local index_lost = #all == 0 and #visited > 0 and redis.call("EXISTS", KEY.wr) == 1
  and redis.call("EXISTS", KEY.wi) == 0

-- Steps and seeds, up to the first ancestor eviction took part of: that one and what lies
-- beyond go to Postgres. A channel's writes count up to (and at) the ancestor holding its seed.
local steps, seeds, n = {}, {}, 0
for i = 1, #visited do
  local mine, lost = {}, index_lost
  for _ = 1, #fields_of[i] do
    n = n + 1
    local raw = records[n]
    if not raw then
      lost = true
    else
      local channel = mp_field(raw, 4)
      if wanted[channel] and (not seeded_at[channel] or seeded_at[channel] >= i) then mine[#mine + 1] = raw end
    end
  end
  if lost then return {"lost", target_id, steps, seeds, sub(visited[i], #ns + 2)} end
  steps[i] = mine
  for j = 1, #found_at[i] do seeds[#seeds + 1] = found_at[i][j] end
end
if status ~= "done" and status ~= "known" then return {status, target_id, steps, seeds, next_id} end
refresh(ARG.refresh_ttl_ms)
-- The ids visited, and the write fields of the whole walk's id range (the caller's part
-- included): what the caller keeps to stop a later walk here (it checks the ids' order).
local ids, count = {}, 0
for i = 1, #visited do ids[i] = sub(visited[i], #ns + 2) end
local newest = visited[1] or (status == "known" and known)
if newest then
  local oldest = status == "known" and ARG.known_from or sub(visited[#visited], #ns + 2)
  count = write_count(oldest, newest)
end
return {status, target_id, steps, seeds, "", ids, count, born}
