-- Record an attempt of a revoked job's `revoked` webhook delivery (its field revokedCallback,
-- written first by revoke.lua) and schedule the next attempt in sweep:webhooks, or end it.
-- KEYS: [1] the job hash, [2] the webhook schedule (sweep:webhooks).
-- ARGV: [1] the delivery's state (JSON), [2] the next attempt (epoch s; '' = no more), [3] the job id.
-- Returns 0 when the job is gone (its schedule entry dropped), else 1.

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
redis.call('HSET', KEYS[1], 'revokedCallback', ARGV[1])
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[2], ARGV[3])
else
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[3])
end
return 1
