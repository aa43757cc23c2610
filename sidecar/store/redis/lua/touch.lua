-- Read a session and record the access. ARGV: id, now. Returns its fields, or an empty array.
local key = skey(ARGV[1])
if redis.call('EXISTS', key) == 0 then
  return {}
end
redis.call('HSET', key, 'a', ARGV[2])
return redis.call('HGETALL', key)
