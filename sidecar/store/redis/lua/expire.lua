-- Remove a bounded batch of expired sessions. ARGV: expiry rules ("status:cutoff;...", '' status
-- for every session; cutoff: created strictly before, in microseconds), batch limit.
-- Returns {id, fields} of each removed session: each is removed and reported exactly once.
local out = {}
expire(ARGV[1], tonumber(ARGV[2]), out)
return out
