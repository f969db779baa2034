-- Create a job in one step: answer an earlier request with the same idempotency key,
-- or refuse past the owner's cap on active jobs, or write the hash, note it and push the
-- job's task message onto the Celery queue, so a record never exists without its message.
-- The history score (createdMs) is the creation ms, bumped past the owner's previous one
-- so that jobs created in the same ms still list in creation order.
-- The job then waits for a worker slot in its tenant's ready list (the fair share,
-- dispatch.lua), its message kept beside it until a slot is granted; a free slot is
-- granted at once, here (and the message never stored).
-- KEYS: [1] job hash, [2] active set, [3] idempotency key, [4] history set, [5] Celery
--   queue, [6] the owner's last history score, [7] the owner's count set of queued jobs.
-- ARGV: [1] ttl (s), [2] cap (0 = no cap and no active set), [3] job id, [4] idempotency
--   value ('' = none), [5] created ms, [6] message ('' = the broker is another Redis: the
--   caller publishes what is granted), [7] history margin (s, HISTORY_MARGIN_SECONDS),
--   [8] the tenant ('-' in open mode), [9..] field/value pairs.
-- Returns {1, granted ids to publish...} created, {2, earlier "jobId fingerprint"},
--   {3, active count} over the cap.

-- $INCLUDE dispatch

local ttl = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local margin = tonumber(ARGV[7])
if ARGV[4] ~= '' then
  local earlier = redis.call('GET', KEYS[3])
  if earlier then
    local earlier_id = string.match(earlier, '^(%S+)')
    if redis.call('EXISTS', '$PREFIX:job:' .. earlier_id) == 1 then return {2, earlier} end
  end
end
if cap > 0 then
  local now = tonumber(redis.call('TIME')[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local count = redis.call('ZCARD', KEYS[2])
  if count >= cap then return {3, count} end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
  redis.call('EXPIRE', KEYS[2], ttl)
end
local created = tonumber(ARGV[5])
local last = tonumber(redis.call('GET', KEYS[6]) or '0')
if created <= last then created = last + 1 end
redis.call('SET', KEYS[6], created, 'EX', ttl + margin)
redis.call('HSET', KEYS[1], 'createdMs', created, 'dispatch', 'waiting', unpack(ARGV, 9))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[4], created, ARGV[3])
redis.call('EXPIRE', KEYS[4], ttl + margin)
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[7], tonumber(clock[1]) + tonumber(clock[2]) / 1000000 + ttl, ARGV[3])
redis.call('EXPIRE', KEYS[7], ttl + margin)
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[3] .. ' ' .. ARGV[4], 'EX', ttl) end
-- Sweeper indexes (see update.lua).
local swept_at = tonumber(redis.call('TIME')[1])
redis.call('ZADD', '$PREFIX:sweep:live', swept_at, ARGV[3])
redis.call('ZADD', '$PREFIX:sweep:expiry', swept_at + ttl, ARGV[3])
dispatch_enqueue(ARGV[8], ARGV[3])
local queue = ''
if ARGV[6] ~= '' then queue = KEYS[5] end
local granted, held_granted = dispatch_grant(queue, swept_at, ARGV[3], ARGV[6])
if ARGV[6] ~= '' and not held_granted then
  redis.call('SET', DISPATCH .. 'message:' .. ARGV[3], ARGV[6], 'EX', ttl)
end
return {1, unpack(granted)}
