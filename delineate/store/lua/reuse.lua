-- Shared bundles (store/bundles.py, jobs/reuse.py): functions included by update.lua and
-- release_bundles.lua, never run alone. The bundle job B built is alive while
-- bundle-refs:{B} exists (made by the first job that reuses it, holding B and that job, each
-- scored by when its hash expires), or, before any reuse, while B itself uses it. A job uses
-- its bundle while its hash exists, has a result (resultKey: written only by the write that
-- ends a job well) and is not revoked. The bundle goes (bundle-refs deleted here, then the
-- object by the caller) only once no job uses it.

local REUSE_JOB = '$PREFIX:job:'
local REUSE_REFS = '$PREFIX:bundle-refs:'

-- Whether job `id` still uses its result: it has one, unrevoked, its hash not expired.
local function bundle_user(id)
  local job = redis.call('HMGET', REUSE_JOB .. id, 'resultKey', 'revokedAt')
  return (job[1] and job[1] ~= '') and (not job[2] or job[2] == '')
end

-- When job `id`'s hash expires (epoch s), at `now`.
local function bundle_expiry(id, now)
  return now + math.max(redis.call('TTL', REUSE_JOB .. id), 0)
end

-- Add job `id` (its hash expiring at `expires`, epoch s) to the users of the bundle `builder`
-- built. False when that bundle is gone or going: nothing written.
local function bundle_claim(builder, id, expires)
  local refs = REUSE_REFS .. builder
  if redis.call('EXISTS', refs) == 0 then
    if not bundle_user(builder) then return false end
    redis.call('ZADD', refs, bundle_expiry(builder, tonumber(redis.call('TIME')[1])), builder)
  end
  redis.call('ZADD', refs, expires, id)
  return true
end

-- Job `gone` stopped using the bundle `builder` built (expired or revoked): drop it, and the
-- other users that stopped, latest expiry first, until one still uses it. Returns that
-- user's expiry (epoch s, re-read from its hash), or false when no job uses the bundle any
-- more: bundle-refs is gone and so must the bundle be. Idempotent.
local function bundle_release(builder, gone, now)
  local refs = REUSE_REFS .. builder
  if redis.call('EXISTS', refs) == 0 then  -- never shared: only its builder may use it
    if builder ~= gone and bundle_user(builder) then return bundle_expiry(builder, now) end
    return false
  end
  redis.call('ZREM', refs, gone)
  while true do
    local top = redis.call('ZREVRANGE', refs, 0, 0)[1]
    if not top then return false end  -- (the last ZREM deleted the set)
    if bundle_user(top) then
      local expires = bundle_expiry(top, now)
      redis.call('ZADD', refs, expires, top)
      return expires
    end
    redis.call('ZREM', refs, top)
  end
end
