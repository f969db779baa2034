-- Jobs that stopped using their bundle: for the janitor, jobs whose hash expired; for
-- revocation, revoked jobs (a job that reused a bundle stops using that one: its field
-- reusedFrom names the builder). Returns the bundles no job uses any more, to be deleted
-- by the caller; a bundle that other jobs still use stays (reuse.lua).
-- KEYS: [1] sweep:expiry.
-- ARGV: [1] 'expired' or 'revoked', [2..] job ids.
-- Returns {bundles, kept}: bundles, the job ids whose bundles/{id} must go; kept ('expired'
-- only), the expired jobs whose bundle others still use: put back in sweep:expiry, scored
-- with the expiry of one that does, so the janitor looks again then (not to be forgotten).

-- $INCLUDE reuse

local now = tonumber(redis.call('TIME')[1])
local revoked = ARGV[1] == 'revoked'
local bundles, kept = {}, {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local builder = id
  if revoked then builder = redis.call('HGET', REUSE_JOB .. id, 'reusedFrom') or id end
  local expires = bundle_release(builder, id, now)
  if not expires then
    bundles[#bundles + 1] = builder
  elseif not revoked then
    redis.call('ZADD', KEYS[1], expires, id)
    kept[#kept + 1] = id
  end
end
return {bundles, kept}
