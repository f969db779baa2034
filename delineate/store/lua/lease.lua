-- Take or renew the lease when free or already ours.
-- KEYS: [1] the job's lease.
-- ARGV: [1] holder, [2] lease ttl (s).
-- Returns 1 when the lease is ours, 0 when another holds it.

local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
