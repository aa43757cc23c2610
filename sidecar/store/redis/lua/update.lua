-- Change a session if its status allows every part of the change: all or nothing.
-- ARGV: id, now, new status ('' keeps it), statuses it may leave from (csv; with a status),
-- statuses that allow work changes (csv; '' when the change has none), expected scenes ('' any;
-- else the scenes JSON the caller read: a compare-and-set for read-modify-write of scenes),
-- force ('1': recovery, any source status), same status changes nothing ('1': the status asked
-- for is already in force, so nothing else changes either), then field/value pairs (pg, sc, er).
-- Returns {'ok', previous status, fields} (previous = new status: nothing changed) | {'missing'} | {'conflict', current status, what}
-- | {'stale'} (the scenes changed since the caller read them: read again and retry).
local id, now, to, from, work = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local expect, force, same_nothing = ARGV[6], ARGV[7], ARGV[8]
local key = skey(id)
local cur = redis.call('HMGET', key, 'st', 'c', 'u', 'sc')
local status, created, updated, scenes = cur[1], cur[2], cur[3], cur[4]
if not status then
  return {'missing'}
end
if to ~= '' and to ~= status and force ~= '1' and not contains(split_csv(from), status) then
  return {'conflict', status, to}
end
if to == status and same_nothing == '1' then
  return {'ok', status, redis.call('HGETALL', key)}
end
if work ~= '' and not contains(split_csv(work), status) then
  return {'conflict', status, 'work'}
end
if expect ~= '' and expect ~= scenes then
  return {'stale'}
end
local changes = {}
for i = 9, #ARGV, 2 do
  changes[#changes + 1] = ARGV[i]
  changes[#changes + 1] = ARGV[i + 1]
end
local new_status = status
if to ~= '' then
  new_status = to
end
if new_status == status and #changes == 0 then
  -- The status asked for is already in force (another replica may have won the race): no change.
  return {'ok', status, redis.call('HGETALL', key)}
end
if #changes > 0 then
  redis.call('HSET', key, unpack(changes))
end
redis.call('HSET', key, 'st', new_status, 'u', now, 'a', now)
unindex(id, status, created, updated)
index(id, new_status, created, now)
return {'ok', status, redis.call('HGETALL', key)}
