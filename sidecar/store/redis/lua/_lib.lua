-- Shared by every script (prepended when loaded). KEYS[1] is the store's hash tag, "{prefix}";
-- every key below starts with it, so all of them live in one Redis Cluster slot.
-- Times are integer microseconds passed as decimal strings (never Lua numbers: a 16-digit
-- number would be formatted as %.14g when handed back to Redis). Index members are
-- "<16-digit zero-padded micros>:<id>" in sorted sets scored 0, so lexical order is exactly
-- the memory store's (micros, id) order and ZLEXCOUNT counts "created before" in O(log n).
local P = KEYS[1]
local CREATED = P .. ':c'

local function pad(us)
  return string.rep('0', 16 - #us) .. us
end

local function member(us, id)
  return pad(us) .. ':' .. id
end

local function skey(id)
  return P .. ':s:' .. id
end

local function split_csv(text)
  local out = {}
  for item in string.gmatch(text, '[^,]+') do
    out[#out + 1] = item
  end
  return out
end

local function contains(list, value)
  for _, item in ipairs(list) do
    if item == value then
      return true
    end
  end
  return false
end

-- The sum of creation times (for the average age) in two int64 counters: whole seconds and the
-- remaining microseconds, so it cannot overflow at millions of sessions.
local function add_created(us, sign)
  -- string.format, not the number itself: -1 * 0 would be sent as '-0', which Redis refuses.
  local p = pad(us)
  local sec = string.format('%d', sign * tonumber(string.sub(p, 1, 10)))
  local rem = string.format('%d', sign * tonumber(string.sub(p, 11)))
  redis.call('HINCRBY', P .. ':sum', 'sec', sec)
  redis.call('HINCRBY', P .. ':sum', 'us', rem)
end

local function index(id, status, created, updated)
  local m = member(created, id)
  redis.call('ZADD', CREATED, 0, m)
  redis.call('ZADD', P .. ':c:' .. status, 0, m)
  redis.call('ZADD', P .. ':u:' .. status, 0, member(updated, id))
  add_created(created, 1)
end

local function unindex(id, status, created, updated)
  local m = member(created, id)
  redis.call('ZREM', CREATED, m)
  redis.call('ZREM', P .. ':c:' .. status, m)
  redis.call('ZREM', P .. ':u:' .. status, member(updated, id))
  add_created(created, -1)
end

-- Remove one session; its fields as a flat array (what the caller reports), or false.
local function drop(id)
  local key = skey(id)
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then
    return false
  end
  local f = {}
  for i = 1, #fields, 2 do
    f[fields[i]] = fields[i + 1]
  end
  unindex(id, f.st, f.c, f.u)
  redis.call('DEL', key)
  return fields
end

local function id_of(m)
  return string.sub(m, 18)
end

-- Remove up to `limit` sessions created before `cutoff` (all statuses when status is ''),
-- appending {id, fields} to `out`; how many were removed.
local function drop_created_before(status, cutoff, limit, out)
  local key = CREATED
  if status ~= '' then
    key = P .. ':c:' .. status
  end
  local upper = '+'
  if cutoff ~= '' then
    upper = '(' .. pad(cutoff)
  end
  local members = redis.call('ZRANGEBYLEX', key, '-', upper, 'LIMIT', 0, limit)
  for _, m in ipairs(members) do
    local id = id_of(m)
    local fields = drop(id)
    if not fields then
      -- An index entry whose hash is gone (deleted by hand): drop the entry, or it would come
      -- first in every later batch.
      redis.call('ZREM', key, m)
      redis.call('ZREM', CREATED, m)
    end
    out[#out + 1] = {id, fields}
  end
  return #members
end

-- The rules of age-based expiry, "status:cutoff;status:cutoff" ('' status: every session).
local function expire(rules, limit, out)
  local left = limit
  for rule in string.gmatch(rules, '[^;]+') do
    local status, cutoff = string.match(rule, '^([^:]*):(%d+)$')
    if left <= 0 then
      break
    end
    left = left - drop_created_before(status, cutoff, left, out)
  end
end
