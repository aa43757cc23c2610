-- Change a session if its status allows every part of the change: all or nothing.
-- ARGV: id, now, new status ('' keeps it), statuses it may leave from (csv; with a status),
-- statuses that allow work changes (csv), expected scenes ('' any; else the scenes JSON the
-- caller read: a compare-and-set for read-modify-write of scenes), updated before ('' any; else
-- the change applies only to a session last updated strictly before these micros: recovery),
-- then field/value pairs (pg, sc, er). A message equal to the stored one is no change (a retry
-- sends it again); a finished session refuses a work field (pg, sc, er) that would change.
-- Returns {'ok', previous status, fields} (previous = new status and nothing changed: the
-- status asked for is already in force) | {'missing'} | {'conflict', current status, what}
-- | {'stale'} (the scenes changed since the caller read them: read again and retry).
local id, now, to, from, work = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local expect, before = ARGV[6], ARGV[7]
local key = skey(id)
local cur = redis.call('HMGET', key, 'st', 'c', 'u', 'sc')
local status, created, updated, scenes = cur[1], cur[2], cur[3], cur[4]
if not status then
  return {'missing'}
end
local message = redis.call('HGET', key, 'er')
if to ~= '' and to ~= status and not contains(split_csv(from), status) then
  return {'conflict', status, to}
end
if before ~= '' and pad(updated) >= pad(before) then
  return {'conflict', status, (to ~= '' and to) or status}
end
local changes = {}
local changed_work = nil
for i = 8, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if not (field == 'er' and value == message) then
    changes[#changes + 1] = field
    changes[#changes + 1] = value
    changed_work = changed_work or field
  end
end
local new_status = status
if to ~= '' then
  new_status = to
end
if new_status == status and #changes == 0 then
  -- Nothing would change (the status is in force, another replica may have won the race).
  return {'ok', status, redis.call('HGETALL', key)}
end
if changed_work and not contains(split_csv(work), status) then
  return {'conflict', status, 'work:' .. changed_work}
end
if expect ~= '' and expect ~= scenes then
  return {'stale'}
end
if #changes > 0 then
  redis.call('HSET', key, unpack(changes))
end
redis.call('HSET', key, 'st', new_status, 'u', now, 'a', now)
unindex(id, status, created, updated)
index(id, new_status, created, now)
return {'ok', status, redis.call('HGETALL', key)}
