-- Release the lease, only when it is ours.
-- KEYS: [1] the job's lease.
-- ARGV: [1] holder.
-- Returns 1 when released, 0 when it was not ours (or already gone).

if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
