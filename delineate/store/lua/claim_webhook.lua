-- The sweeper claims a due webhook: move its due time forward unless another claimed it.
-- KEYS: [1] the webhook index (sweep:webhooks).
-- ARGV: [1] job id, [2] now (epoch s), [3] claimed until (epoch s).
-- Returns 1 when claimed, 0 when it was not due (any more).

local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
return 1
