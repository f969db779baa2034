-- Grant the free worker slots (the fair share, dispatch.lua), after registering a worker's
-- slots and dropping the slots of jobs that ended without saying so (their hash expired).
-- KEYS: none (the dispatch keys are built here; one Redis, not a cluster).
-- ARGV: [1] Celery queue key ('' = the broker is another Redis), [2] worker id ('' = none),
--   [3] its slots, [4] how long its entry lives (s), [5] '1' to check the running jobs.
-- Returns the ids granted that the caller must publish (only when ARGV[1] is '').

-- $INCLUDE dispatch

local now = tonumber(redis.call('TIME')[1])
if ARGV[2] ~= '' then
  redis.call('HSET', DISPATCH .. 'workers', ARGV[2], ARGV[3] .. ' ' .. (now + tonumber(ARGV[4])))
  redis.call('SET', DISPATCH .. 'known', '1')
end
if ARGV[5] == '1' then
  for _, member in ipairs(redis.call('ZRANGE', DISPATCH .. 'running', 0, -1)) do
    local tenant, job_id = string.match(member, '^(.*)|([^|]+)$')
    -- update.lua marks an ended job 'done'; a hash that expired or was deleted has none
    if redis.call('HGET', '$PREFIX:job:' .. job_id, 'dispatch') ~= 'granted' then
      dispatch_done(tenant, job_id)
    end
  end
end
local granted = dispatch_grant(ARGV[1], now)
return granted
