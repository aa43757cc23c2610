-- Create a pending session, keeping the capacity across every replica in one atomic step.
-- ARGV: id, now, capacity, policy (reject | evict_oldest), eviction order (groups of statuses,
-- "completed,failed;pending;processing": the oldest session of the first non-empty group goes),
-- expiry rules (see expire), expiry batch limit, request JSON.
-- Returns {outcome, expired, evicted}: outcome 'created' or 'rejected'; the lists hold
-- {id, fields} of every session this call removed, so only this caller counts and reports them.
local id, now, capacity, policy = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local order, rules, limit, request = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local expired, evicted = {}, {}
if redis.call('ZCARD', CREATED) >= capacity then
  expire(rules, limit, expired)
end
while redis.call('ZCARD', CREATED) >= capacity do
  if policy == 'reject' then
    return {'rejected', expired, evicted}
  end
  local victim = false
  for group in string.gmatch(order, '[^;]+') do
    for _, status in ipairs(split_csv(group)) do
      local first = redis.call('ZRANGE', P .. ':c:' .. status, 0, 0)[1]
      if first and (not victim or first < victim) then
        victim = first
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
  evicted[#evicted + 1] = {vid, drop(vid)}
end
if redis.call('EXISTS', skey(id)) == 1 then
  return redis.error_reply('session id already stored: ' .. id)
end
redis.call('HSET', skey(id), 'st', 'pending', 'c', now, 'u', now, 'a', now, 'rq', request,
  'sc', '[]', 'pg', '', 'er', '')
index(id, 'pending', now, now)
return {'created', expired, evicted}
