-- Revoke a completed job's result: set revokedAt (the state stays completed), bump version,
-- refresh the TTL (moving the summary's and the sweeper's expiry entries with it), and put
-- the job in the revocation index, all in one step: the index is the record that its bundle
-- must go, so a caller that dies before deleting it leaves the deletion to the sweeper
-- (which deletes only bundles/{jobId}.zip, never a source). Idempotent: a job already
-- revoked is returned unchanged. Refused for any other state.
-- A job with a callback URL owes one `revoked` delivery, recorded in the same step (field
-- revokedCallback): when its own delivery is over, its entry in sweep:webhooks is set to
-- the fallback time, so the sweeper sends it if the caller dies before it does; while its
-- own delivery goes on, the attempt that ends that one makes it due (jobs/webhooks.py).
-- KEYS: [1] the job hash, [2] the revocation index (sweep:revoked, job ids by revocation time),
--   [3] the webhook schedule (sweep:webhooks).
-- ARGV: [1] ttl (s), [2] the one state that may be revoked (models.JobState.COMPLETED),
--   [3] now (ISO-8601, the revokedAt and updatedAt written), [4] the revoked delivery's
--   first state (JSON), [5] its fallback time (epoch s).
-- Returns {0} when the job does not exist, {1, record, listeners, send} when this call
-- revoked it (listeners: the subscribers of its events channel; send: 1 when the caller
-- should send the revoked delivery's first attempt now), {2, record} when it was revoked
-- already (nothing written), {3, record} when refused: the job is in another state.

local job = redis.call('HMGET', KEYS[1], 'status', 'revokedAt', 'jobId', 'owner')
local status, revoked_at, id = job[1], job[2], job[3]
if not status then return {0} end
if status ~= ARGV[2] then return {3, redis.call('HGETALL', KEYS[1])} end
if revoked_at and revoked_at ~= '' then return {2, redis.call('HGETALL', KEYS[1])} end
redis.call('HSET', KEYS[1], 'revokedAt', ARGV[3], 'updatedAt', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
-- The summary's entry and the sweeper's expiry entry follow the refreshed TTL (as callback.lua's).
local who = job[4] or ''
if who == '' then who = '-' end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZADD', '$PREFIX:count:' .. who .. ':' .. status, 'XX', now + tonumber(ARGV[1]), id)
redis.call('ZADD', '$PREFIX:sweep:expiry', tonumber(clock[1]) + tonumber(ARGV[1]), id)
redis.call('ZADD', KEYS[2], now, id)
local send = 0
local hook = redis.call('HMGET', KEYS[1], 'callbackUrl', 'callback')
if hook[1] and hook[1] ~= '' then
  redis.call('HSET', KEYS[1], 'revokedCallback', ARGV[4])
  local ok, own = pcall(cjson.decode, hook[2] or '')
  local own_status = ok and type(own) == 'table' and own.status or nil
  -- over: delivered, or given up (a state neither pending nor retrying)
  if own_status and own_status ~= 'pending' and own_status ~= 'retrying' then
    redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[5]), id)
    send = 1
  end
end
local listeners = redis.call('PUBSUB', 'NUMSUB', '$PREFIX:events:' .. id)[2]
return {1, redis.call('HGETALL', KEYS[1]), listeners, send}
