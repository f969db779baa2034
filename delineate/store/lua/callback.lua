-- Record a webhook delivery outcome: allowed on a terminal job (the only write that is).
-- Bumps version and refreshes the TTL; schedules the next attempt or ends the schedule.
-- KEYS: [1] the job hash.
-- ARGV: [1] ttl (s), [2] the outcome (JSON), [3] next attempt (epoch s; '' = no more),
--   [4] the job id.
-- Returns 0 when the job no longer exists, else 1.

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', '$PREFIX:sweep:webhooks', ARGV[4])
  return 0
end
redis.call('HSET', KEYS[1], 'callback', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
-- The summary's entry expires with the hash.
local job = redis.call('HMGET', KEYS[1], 'status', 'owner', 'jobId')
local who = job[2] or ''
if who == '' then who = '-' end
local clock = redis.call('TIME')
redis.call('ZADD', '$PREFIX:count:' .. who .. ':' .. job[1], 'XX',
  tonumber(clock[1]) + tonumber(clock[2]) / 1000000 + tonumber(ARGV[1]), job[3])
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', '$PREFIX:sweep:expiry', now + tonumber(ARGV[1]), ARGV[4])
if ARGV[3] == '' then
  redis.call('ZREM', '$PREFIX:sweep:webhooks', ARGV[4])
else
  redis.call('ZADD', '$PREFIX:sweep:webhooks', tonumber(ARGV[3]), ARGV[4])
end
return 1
