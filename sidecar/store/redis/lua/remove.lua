-- Remove one session. ARGV: id. Returns its fields (the caller counts it), or false if absent.
return drop(ARGV[1])
