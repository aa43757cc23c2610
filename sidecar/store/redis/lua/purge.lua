-- Remove a bounded batch of sessions in a status ('' any), created before a cutoff ('' any age).
-- ARGV: status, cutoff, batch limit. Returns {id, fields} of each removed session.
local out = {}
drop_created_before(ARGV[1], ARGV[2], tonumber(ARGV[3]), out)
return out
