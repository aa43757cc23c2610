-- Create a pending session, keeping the capacity across every replica in one atomic step.
-- ARGV: id, now, capacity, policy (reject | evict_oldest), eviction order (groups of statuses,
-- "completed,failed;pending;processing": the oldest session of the first non-empty group goes),
-- expiry rules (see expire), expiry batch limit, request JSON, then the Idempotency-Key ('' for
-- none), its request fingerprint, the time before which keys are forgotten, the most keys kept.
-- Returns {outcome, expired, evicted, original id, fields}: outcome 'created' or 'rejected'
-- (the lists hold {id, fields} of every session this call removed, so only this caller counts
-- and reports them), or for a remembered key 'replayed' (the fields of its session), 'reused'
-- (another request) or 'spent' (its session is gone), having changed nothing.
-- Keys: hash {p}:ik, key -> "<16-digit recorded micros>:<session id>:<fingerprint>", and
-- {p}:it, "<16-digit recorded micros>:<key>" scored 0, to forget the oldest first.
local id, now, capacity, policy = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local order, rules, limit, request = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local key, fingerprint, forget_before, max_keys = ARGV[9], ARGV[10], ARGV[11], tonumber(ARGV[12])
local KEYS_BY_NAME, KEYS_BY_TIME = P .. ':ik', P .. ':it'
local expired, evicted = {}, {}

local function forget(name, recorded)
  redis.call('HDEL', KEYS_BY_NAME, name)
  redis.call('ZREM', KEYS_BY_TIME, member(recorded, name))
end

if key ~= '' then
  local old = redis.call('ZRANGEBYLEX', KEYS_BY_TIME, '-', '(' .. pad(forget_before), 'LIMIT', 0,
    limit)
  for _, m in ipairs(old) do
    forget(id_of(m), string.sub(m, 1, 16))
  end
  local found = redis.call('HGET', KEYS_BY_NAME, key)
  if found then
    local recorded = string.sub(found, 1, 16)
    local original, known = string.match(string.sub(found, 18), '^([^:]*):(.*)$')
    if recorded < pad(forget_before) then -- left by the batch bound: forgotten now
      forget(key, recorded)
    elseif known ~= fingerprint then
      return {'reused', expired, evicted, original, {}}
    else
      local fields = redis.call('HGETALL', skey(original))
      if #fields == 0 then
        return {'spent', expired, evicted, original, {}}
      end
      return {'replayed', expired, evicted, original, fields}
    end
  end
end
if redis.call('ZCARD', CREATED) >= capacity then
  expire(rules, limit, expired)
end
while redis.call('ZCARD', CREATED) >= capacity do
  if policy == 'reject' then
    return {'rejected', expired, evicted, '', {}}
  end
  local victim, victim_index = false, false
  for group in string.gmatch(order, '[^;]+') do
    for _, status in ipairs(split_csv(group)) do
      local first = redis.call('ZRANGE', P .. ':c:' .. status, 0, 0)[1]
      if first and (not victim or first < victim) then
        victim, victim_index = first, P .. ':c:' .. status
      end
    end
    if victim then
      break
    end
  end
  if not victim then
    return redis.error_reply('eviction order names no status that holds a session')
  end
  local vid = id_of(victim)
  local fields = drop(vid)
  if fields then
    evicted[#evicted + 1] = {vid, fields}
  else
    -- An index entry whose hash is gone (deleted by hand): drop the entry, or this loop would
    -- pick it again forever and hold the server (every client answered BUSY).
    redis.call('ZREM', victim_index, victim)
    redis.call('ZREM', CREATED, victim)
  end
end
if redis.call('EXISTS', skey(id)) == 1 then
  return redis.error_reply('session id already stored: ' .. id)
end
redis.call('HSET', skey(id), 'st', 'pending', 'c', now, 'u', now, 'a', now, 'rq', request,
  'sc', '[]', 'pg', '', 'er', '')
index(id, 'pending', now, now)
if key ~= '' then
  redis.call('HSET', KEYS_BY_NAME, key, pad(now) .. ':' .. id .. ':' .. fingerprint)
  redis.call('ZADD', KEYS_BY_TIME, 0, member(now, key))
  local over = math.min(redis.call('ZCARD', KEYS_BY_TIME) - max_keys, limit)
  if over > 0 then
    for _, m in ipairs(redis.call('ZRANGE', KEYS_BY_TIME, 0, over - 1)) do
      forget(id_of(m), string.sub(m, 1, 16))
    end
  end
end
return {'created', expired, evicted, id, {}}
