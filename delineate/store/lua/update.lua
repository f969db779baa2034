-- Write fields unless the job is terminal; bump version, refresh TTL, return the record.
-- A runner's write is refused unless the lease is free or its own, and takes or renews
-- it (released by the terminal write), so a runner that lost its lease cannot write and
-- renewing costs no round trip of its own.
-- KEYS: [1] the job hash, [2] its lease.
-- ARGV: [1] ttl (s), [2] lease holder ('' = a writer without a lease), [3] lease ttl (s),
--   [4] history margin (s, HISTORY_MARGIN_SECONDS), [5] webhook claim (s, after a job
--   ends its first delivery is due this late unless sent), [6] Celery queue key ('' = the
--   broker is another Redis), [7..] field/value pairs.
-- KEYS[3], only on the write that completes a job with a bundle another job built
-- (jobs/reuse.py): that bundle's bundle-refs; the job joins its users in this same step.
-- Returns {0} when the job does not exist, {1, record, listeners, granted} when written
-- (listeners: the subscribers of the job's events channel, so a write nobody watches is not
-- published; granted: when the write ended a job, the ids its freed slot went to that the
-- caller must publish), {2, record} when refused because the job already reached a
-- terminal state, {3} when refused because another runner holds the lease, {4} when refused
-- because the bundle of KEYS[3] is gone or going.

-- $INCLUDE dispatch
-- $INCLUDE reuse

-- = models.TERMINAL_STATES (checked by tests/unit/test_store.py)
local TERMINAL = {completed = true, failed = true, cancelled = true}

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0} end
if TERMINAL[status] then
  return {2, redis.call('HGETALL', KEYS[1])}
end
local holder = ARGV[2]
if holder ~= '' then
  local leased_to = redis.call('GET', KEYS[2])
  if leased_to and leased_to ~= holder then return {3} end
end
if KEYS[3] then
  local expires = tonumber(redis.call('TIME')[1]) + tonumber(ARGV[1])
  local builder = string.sub(KEYS[3], #REUSE_REFS + 1)
  if not bundle_claim(builder, redis.call('HGET', KEYS[1], 'jobId'), expires) then return {4} end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
-- Read once what both indexes below need.
local new_status = redis.call('HGET', KEYS[1], 'status')
local terminal = TERMINAL[new_status]
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local id = redis.call('HGET', KEYS[1], 'jobId')
-- The owner's history follows the status from one state's set to the next.
if new_status ~= status then
  local who = owner
  if who == '' then who = '-' end
  local created = redis.call('HGET', KEYS[1], 'createdMs')
  redis.call('ZREM', '$PREFIX:history:' .. who .. ':' .. status, id)
  if created then
    redis.call('ZADD', '$PREFIX:history:' .. who .. ':' .. new_status, tonumber(created), id)
  end
end
-- The summary's per-state sets: the job moves with its status, scored with its hash's expiry.
local who_count = owner
if who_count == '' then who_count = '-' end
local clock = redis.call('TIME')
local expires = tonumber(clock[1]) + tonumber(clock[2]) / 1000000 + tonumber(ARGV[1])
local count_set = '$PREFIX:count:' .. who_count .. ':' .. new_status
redis.call('ZADD', count_set, expires, id)
if new_status ~= status then
  redis.call('ZREM', '$PREFIX:count:' .. who_count .. ':' .. status, id)
  redis.call('EXPIRE', count_set, tonumber(ARGV[1]) + tonumber(ARGV[4]))  -- an idle owner's sets go too
end
-- The owner's active set follows: out when terminal, else its expiry moves with the hash's.
-- (Keys built here from the stored owner: fine on one Redis, not on a cluster.)
if owner ~= '' then
  local active = '$PREFIX:active:' .. owner
  if terminal then
    redis.call('ZREM', active, id)
  else
    redis.call('ZADD', active, 'XX', tonumber(redis.call('TIME')[1]) + tonumber(ARGV[1]), id)
  end
end
-- Sweeper indexes: live jobs by last write, every job by expiry, a terminal job's webhook.
local swept_at = tonumber(redis.call('TIME')[1])
if terminal then
  redis.call('ZREM', '$PREFIX:sweep:live', id)
  if redis.call('HEXISTS', KEYS[1], 'callbackUrl') == 1 then
    redis.call('ZADD', '$PREFIX:sweep:webhooks', 'NX', swept_at + tonumber(ARGV[5]), id)
  end
else
  redis.call('ZADD', '$PREFIX:sweep:live', swept_at, id)
end
redis.call('ZADD', '$PREFIX:sweep:expiry', swept_at + tonumber(ARGV[1]), id)
if holder ~= '' then
  if terminal then
    redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], holder, 'EX', ARGV[3])
  end
end
-- The fair share: a job that ends frees its slot (a granted one) and the slot goes on.
local granted = {}
if terminal then
  -- Counted here, with the write itself, so the metrics' total equals the store's whatever
  -- dies or stalls right after (telemetry/metrics.py JOBS_KEY).
  redis.call('HINCRBY', '$PREFIX:metrics:jobs', new_status, 1)
  if redis.call('HGET', KEYS[1], 'dispatch') == 'granted' then
    dispatch_done(who_count, id)
    redis.call('HSET', KEYS[1], 'dispatch', 'done')
  end
  redis.call('DEL', DISPATCH .. 'message:' .. id)  -- (a job that ended while it waited)
  granted = dispatch_grant(ARGV[6], swept_at)
end
local listeners = redis.call('PUBSUB', 'NUMSUB', '$PREFIX:events:' .. id)[2]
return {1, redis.call('HGETALL', KEYS[1]), listeners, granted}
