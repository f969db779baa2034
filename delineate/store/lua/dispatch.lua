-- The fair share of the worker slots: functions pasted into create.lua, update.lua and
-- grant.lua (scripts.source), never run alone.
--
-- A new job waits in its tenant's ready list; a free slot goes to the tenant whose running
-- jobs divided by its weight is lowest (ties: the tenant whose oldest waiting job is
-- oldest), skipping a tenant at its max_running; granting it pushes the job's task message
-- onto Celery's queue (stored beside the job while it waits; a job granted as it is created
-- never stores it). The slots are what the workers registered (their pool
-- sizes, each entry expiring unless renewed); until a worker has ever registered, every
-- job is granted at once, as Celery alone would.
--
-- Keys, $PREFIX:dispatch:...
--   ready:{tenant}    list, the tenant's waiting job ids, oldest first
--   waiting           set, the tenants with a ready list
--   running           sorted set of "{tenant}|{job id}" granted and not ended (score: when)
--   running:{tenant}  sorted set, the same job ids per tenant
--   tenants           hash, tenant -> "{weight} {max_running}" (0: no cap), written from TENANTS_FILE
--   workers           hash, worker -> "{slots} {expires at, epoch s}"; known: set once a worker registered
--   message:{id}      string, a waiting job's task message (kept out of the job hash, which
--                     stays small); TTL the job's

local DISPATCH = '$PREFIX:dispatch:'

-- The slots of the workers heard from recently; nil while none ever registered.
local function dispatch_capacity(now)
  if redis.call('EXISTS', DISPATCH .. 'known') == 0 then return nil end
  local entries = redis.call('HGETALL', DISPATCH .. 'workers')
  local slots = 0
  for i = 1, #entries, 2 do
    local n, expires = string.match(entries[i + 1], '^(%d+) (%d+)$')
    if n and tonumber(expires) >= now then
      slots = slots + tonumber(n)
    else
      redis.call('HDEL', DISPATCH .. 'workers', entries[i])
    end
  end
  return slots
end

-- A new job waits for a slot.
local function dispatch_enqueue(tenant, job_id)
  redis.call('RPUSH', DISPATCH .. 'ready:' .. tenant, job_id)
  redis.call('SADD', DISPATCH .. 'waiting', tenant)
end

-- A granted job ended: its slot is free.
local function dispatch_done(tenant, job_id)
  redis.call('ZREM', DISPATCH .. 'running', tenant .. '|' .. job_id)
  redis.call('ZREM', DISPATCH .. 'running:' .. tenant, job_id)
end

-- Grant the free slots; push each granted job's message onto `queue` ('' = the broker is
-- another Redis: the granted ids are returned for the caller to publish through Celery).
-- `held_id`, `held_message`: a job being created, whose message is in hand (not stored).
-- Returns the ids to publish, and whether the held job was granted.
local function dispatch_grant(queue, now, held_id, held_message)
  local capacity = dispatch_capacity(now)
  local free = math.huge
  if capacity then free = capacity - redis.call('ZCARD', DISPATCH .. 'running') end
  local to_publish = {}
  local held_granted = false
  while free > 0 do
    local best, best_share, best_created
    for _, tenant in ipairs(redis.call('SMEMBERS', DISPATCH .. 'waiting')) do
      local head = redis.call('LINDEX', DISPATCH .. 'ready:' .. tenant, 0)
      if not head then
        redis.call('SREM', DISPATCH .. 'waiting', tenant)
      else
        local weight, cap = 1, 0
        local conf = redis.call('HGET', DISPATCH .. 'tenants', tenant)
        if conf then
          local w, c = string.match(conf, '^(%S+) (%d+)$')
          weight, cap = tonumber(w) or 1, tonumber(c) or 0
        end
        local running = redis.call('ZCARD', DISPATCH .. 'running:' .. tenant)
        if cap == 0 or running < cap then
          local share = running / weight
          local created = tonumber(redis.call('HGET', '$PREFIX:job:' .. head, 'createdMs') or '0')
          if not best or share < best_share or (share == best_share and created < best_created) then
            best, best_share, best_created = tenant, share, created
          end
        end
      end
    end
    if not best then break end
    local job_id = redis.call('LPOP', DISPATCH .. 'ready:' .. best)
    local job = '$PREFIX:job:' .. job_id
    -- A job that ended (or expired) while it waited is dropped here, costing no slot.
    if redis.call('HGET', job, 'dispatch') == 'waiting' and redis.call('HGET', job, 'status') == 'queued' then
      redis.call('ZADD', DISPATCH .. 'running', now, best .. '|' .. job_id)
      redis.call('ZADD', DISPATCH .. 'running:' .. best, now, job_id)
      redis.call('HSET', job, 'dispatch', 'granted')
      local message
      if job_id == held_id then
        message, held_granted = held_message, true
      else
        message = redis.call('GET', DISPATCH .. 'message:' .. job_id)
        if message then redis.call('DEL', DISPATCH .. 'message:' .. job_id) end
      end
      if message and message ~= '' and queue ~= '' then
        redis.call('LPUSH', queue, message)
      else
        table.insert(to_publish, job_id)
      end
      free = free - 1
    end
  end
  return to_publish, held_granted
end
