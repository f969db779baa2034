"""The job store: the only module that knows Redis key and channel names.

Progress is stored state first and an event second: every write goes to the job's
hash (atomically, refusing to touch a terminal job), then a full status snapshot is
published on the job's channel in flask-sse's message format.

Keys (all prefixed ``delineate:``):

- ``job:{id}``      hash, the job record; TTL JOB_TTL_SECONDS, refreshed on write
- ``lease:{id}``    string, the worker currently running the job; short TTL, renewed
- ``events:{id}``   pub/sub channel, one message per status write
- ``active:{owner}`` sorted set, the owner's queued and processing job ids, each scored
  with the time (epoch seconds) its hash expires; kept by the create and update scripts
- ``idem:{owner}:{sha256(Idempotency-Key)}`` string ``"{jobId} {fingerprint}"``; TTL JOB_TTL_SECONDS
- ``ratelimit:{caller}``  rate-limit counters (:data:`RATE_LIMIT_PREFIX`, `delineate/ratelimit.py`)
- ``sweep:live``    sorted set, every queued or processing job id scored by its last write
  (epoch seconds); ``sweep:expiry`` every job id scored by when its hash expires;
  ``sweep:webhooks`` job ids with a webhook delivery due, scored by when (epoch seconds).
  Written by the same scripts that write the job, read by the sweeper
  (``celery_app/sweeper.py``); ``sweep:suspects`` and ``sweep:lock`` are the sweeper's own.
- ``history:{owner}:{state}`` sorted set, the owner's job ids in that state, scored by
  creation time (epoch ms); ``owner`` is ``-`` in open mode. Moved between states by the
  update script; entries whose hash expired are dropped when a page meets them,
  and everything older than JOB_TTL + a day is trimmed as new jobs arrive.
- ``history:{owner}:last`` string, the owner's latest history score: a new job's score is
  bumped past it, so jobs made in the same ms keep their creation order
- ``count:{owner}:{state}`` sorted set, the owner's job ids in that state, each scored with
  the time (epoch seconds) its hash expires; moved and re-scored by the create, update and
  callback scripts, so the summary is one ZCOUNT per state of the entries not yet expired
  (O(log n), never a scan); expired entries are trimmed with the history.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import redis
from redis.exceptions import NoScriptError

from delineate.models import Job, JobState, encode_fields, utcnow
from delineate.redis_direct import DirectRedis, lane_for, pairs_to_dict
from delineate.replica_ack import ReplicaAck

logger = logging.getLogger(__name__)

PREFIX = "delineate:"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def lease_key(job_id: str) -> str:
    return f"{PREFIX}lease:{job_id}"


def events_channel(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def active_key(owner: str) -> str:
    return f"{PREFIX}active:{owner}"


def idempotency_key(owner: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{PREFIX}idem:{owner or '-'}:{digest}"


LIVE_KEY = f"{PREFIX}sweep:live"
EXPIRY_KEY = f"{PREFIX}sweep:expiry"
WEBHOOKS_KEY = f"{PREFIX}sweep:webhooks"
SUSPECTS_KEY = f"{PREFIX}sweep:suspects"
SWEEP_LOCK_KEY = f"{PREFIX}sweep:lock"

WEBHOOK_CLAIM_INTERVALS = 4
"""A webhook delivery sent (or claimed by the sweeper) is due again after this many sweep
intervals (60 s by default) unless its attempt reschedules or ends it: a lost delivery
message costs this much delay."""


def history_key(owner: str, state: str) -> str:
    return f"{PREFIX}history:{owner or '-'}:{state}"


def count_key(owner: str, state: str) -> str:
    return f"{PREFIX}count:{owner or '-'}:{state}"


HISTORY_MARGIN_SECONDS = 86_400
"""History entries live this much longer than JOB_TTL_SECONDS (a job's hash outlives its
creation by its run time); past that they are trimmed."""

HISTORY_TRIM_CHANCE = 0.01
"""Share of job creations that also trim the owner's history of entries past their life."""

HISTORY_SCAN_SLACK = 32
"""Extra entries read per page, to step over expired ones and ties in creation time."""

RATE_LIMIT_PREFIX = f"{PREFIX}ratelimit"
"""Prefix of the rate limiter's counters: ``{prefix}:{caller}``, one per window."""


# Write fields unless the job is terminal; bump version, refresh TTL, return the record.
# KEYS: the job hash, its lease. ARGV: ttl, lease holder ('' = a writer without a lease),
# lease ttl, then field/value pairs. A runner's write is refused unless the lease is free
# or its own, and takes or renews it (released by the terminal write), so a runner that
# lost its lease cannot write and renewing costs no round trip of its own.
# Returns {0} when the job does not exist, {1, record, listeners} when written (listeners:
# the subscribers of the job's events channel, so a write nobody watches is not
# published), {2, record} when refused because the job already reached a terminal state,
# {3} when refused because another runner holds the lease.
_UPDATE_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0} end
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return {2, redis.call('HGETALL', KEYS[1])}
end
local holder = ARGV[2]
if holder ~= '' then
  local leased_to = redis.call('GET', KEYS[2])
  if leased_to and leased_to ~= holder then return {3} end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
-- Read once what both indexes below need.
local new_status = redis.call('HGET', KEYS[1], 'status')
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
  redis.call('EXPIRE', count_set, tonumber(ARGV[1]) + $MARGIN)  -- an idle owner's sets go too
end
-- The owner's active set follows: out when terminal, else its expiry moves with the hash's.
-- (Keys built here from the stored owner: fine on one Redis, not on a cluster.)
if owner ~= '' then
  local active = '$PREFIX:active:' .. owner
  if new_status == 'completed' or new_status == 'failed' or new_status == 'cancelled' then
    redis.call('ZREM', active, id)
  else
    redis.call('ZADD', active, 'XX', tonumber(redis.call('TIME')[1]) + tonumber(ARGV[1]), id)
  end
end
-- Sweeper indexes: live jobs by last write, every job by expiry, a terminal job's webhook.
local swept_at = tonumber(redis.call('TIME')[1])
if new_status == 'completed' or new_status == 'failed' or new_status == 'cancelled' then
  redis.call('ZREM', '$PREFIX:sweep:live', id)
  if redis.call('HEXISTS', KEYS[1], 'callbackUrl') == 1 then
    redis.call('ZADD', '$PREFIX:sweep:webhooks', 'NX', swept_at + $CLAIM, id)
  end
else
  redis.call('ZADD', '$PREFIX:sweep:live', swept_at, id)
end
redis.call('ZADD', '$PREFIX:sweep:expiry', swept_at + tonumber(ARGV[1]), id)
if holder ~= '' then
  if new_status == 'completed' or new_status == 'failed' or new_status == 'cancelled' then
    redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], holder, 'EX', ARGV[3])
  end
end
local listeners = redis.call('PUBSUB', 'NUMSUB', '$PREFIX:events:' .. id)[2]
return {1, redis.call('HGETALL', KEYS[1]), listeners}
""".replace("$PREFIX:", PREFIX).replace("$MARGIN", str(HISTORY_MARGIN_SECONDS))  # $CLAIM: per store

# Create a job in one step: answer an earlier request with the same idempotency key,
# or refuse past the owner's cap on active jobs, or write the hash, note it and push the
# job's task message onto the Celery queue, so a record never exists without its message.
# KEYS: job hash, active set, idempotency key, history set, Celery queue, the owner's
# last history score, the owner's count set of queued jobs. ARGV: ttl, cap (0 = no cap and
# no active set), job id, idempotency value ('' = none), created ms, message ('' = none),
# then field/value pairs.
# The history score (createdMs) is the creation ms, bumped past the owner's previous one
# so that jobs created in the same ms still list in creation order.
# Returns {1} created, {2, earlier "jobId fingerprint"}, {3, active count} over the cap.
_CREATE_SCRIPT = """
local ttl = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
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
redis.call('SET', KEYS[6], created, 'EX', ttl + $MARGIN)
redis.call('HSET', KEYS[1], 'createdMs', created, unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[4], created, ARGV[3])
redis.call('EXPIRE', KEYS[4], ttl + $MARGIN)
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[7], tonumber(clock[1]) + tonumber(clock[2]) / 1000000 + ttl, ARGV[3])
redis.call('EXPIRE', KEYS[7], ttl + $MARGIN)
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[3] .. ' ' .. ARGV[4], 'EX', ttl) end
if ARGV[6] ~= '' then redis.call('LPUSH', KEYS[5], ARGV[6]) end
-- Sweeper indexes (see the update script).
local swept_at = tonumber(redis.call('TIME')[1])
redis.call('ZADD', '$PREFIX:sweep:live', swept_at, ARGV[3])
redis.call('ZADD', '$PREFIX:sweep:expiry', swept_at + ttl, ARGV[3])
return {1}
""".replace("$PREFIX:", PREFIX).replace("$MARGIN", str(HISTORY_MARGIN_SECONDS))

# Take or renew the lease when free or already ours.
_LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# Record a webhook delivery outcome: allowed on a terminal job (the only write that is).
# Bumps version and refreshes the TTL; schedules the next attempt at ARGV[3] (epoch s) or,
# when '', ends the schedule; ARGV[4] is the job id. Returns 0 when the job no longer exists.
_CALLBACK_SCRIPT = """
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
""".replace("$PREFIX:", PREFIX)

# The sweeper claims a due webhook: move its due time forward unless another claimed it.
# KEYS: the webhook index. ARGV: job id, now, claimed until. Returns 1 when claimed.
_CLAIM_WEBHOOK_SCRIPT = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
return 1
""".replace("$PREFIX:", PREFIX)

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class JobGone(LookupError):
    """The job's hash is missing (never existed, or expired)."""


class LeaseLost(Exception):
    """Another runner holds the job's lease: this one must stop."""


class Written(NamedTuple):
    """What :meth:`JobStore.write` did."""

    job: Job  # the record after the call
    written: bool  # False: refused, the job was already terminal
    listeners: int  # subscribers of the job's events channel when it was written


class TooManyActive(Exception):
    """The owner already has as many queued and processing jobs as allowed."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} active jobs")
        self.count = count


@dataclass(frozen=True)
class Replay:
    """An earlier request with the same idempotency key created ``job_id`` for ``fingerprint``."""

    job_id: str
    fingerprint: str


class JobStore:
    def __init__(
        self,
        client: redis.Redis,
        ttl_seconds: int,
        presign: Callable[[Job], str] | None = None,
        direct: DirectRedis | None = None,
        webhook_claim_seconds: int = 60,
        replica_ack: ReplicaAck | None = None,
    ) -> None:
        self.redis = client
        #: Behind Sentinel: creates wait for a replica's acknowledgement (the 202 rule).
        self.replica_ack = replica_ack
        # The per-job reads and writes (every status read, every progress step) go
        # through the direct lane; the rare ones (history, cleanup) through redis-py.
        self.direct = direct or lane_for(client)
        self.ttl_seconds = ttl_seconds
        self.webhook_claim_seconds = webhook_claim_seconds
        self.presign = presign
        #: Called with the record when a write makes a job terminal (webhooks, metrics):
        #: exactly once per job, since the update script refuses a second terminal write.
        self.terminal_hooks: list[Callable[[Job], None]] = []
        self._update = self.direct.script(_UPDATE_SCRIPT.replace("$CLAIM", str(int(webhook_claim_seconds))))
        self._callback = self.direct.script(_CALLBACK_SCRIPT)
        self._create = self.direct.script(_CREATE_SCRIPT)
        self._claim_webhook = client.register_script(_CLAIM_WEBHOOK_SCRIPT)
        self._lease = self.direct.script(_LEASE_SCRIPT)
        self._release = self.direct.script(_RELEASE_SCRIPT)

    # -- reads ------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self.job_from_reply(self.direct.command(*self.read_command(job_id)))

    @staticmethod
    def read_command(job_id: str) -> tuple[str, str]:
        """The command :meth:`get` sends, for callers that send it with others."""
        return ("HGETALL", job_key(job_id))

    @staticmethod
    def job_from_reply(reply: Any) -> Job | None:
        """The job in a reply to :meth:`read_command` (None: no such job)."""
        return Job.from_hash(pairs_to_dict(reply)) if reply else None

    def status(self, job: Job) -> dict[str, Any]:
        return job.to_status(self.presign)

    # -- writes -----------------------------------------------------------------

    def create(
        self,
        job: Job,
        *,
        max_active: int | None = None,
        idempotency: tuple[str, str] | None = None,
        enqueue: tuple[str, str] | None = None,
    ) -> Replay | None:
        """Write a new job record in one atomic step (never half-written).

        ``max_active`` caps the owner's queued and processing jobs (None: no cap, and
        the job is not tracked). ``idempotency`` is ``(client key, fingerprint)``: when
        an earlier job of the same owner was made with that key, nothing is written and
        the earlier job is returned as a :class:`Replay`. ``enqueue`` is ``(queue key,
        message)``: the task message pushed onto the broker's queue in the same script
        (the broker must be this Redis), so the record never exists without it.

        :raise TooManyActive: the owner is at ``max_active``.
        :raise NoReplicaAck: behind Sentinel, no replica acknowledged the write in time.
        """
        now = utcnow()
        created_ms = int(time.time() * 1000)
        job.created_at = job.updated_at = now
        job.version = 1
        history = history_key(job.owner, JobState.QUEUED.value)
        # Counters that start at 0 and empty lists are left out: a missing field reads
        # as its default (Job.from_hash), and every field written here costs on each create.
        fields = encode_fields(
            jobId=job.job_id,
            status=job.status,
            phase=job.phase,
            fileIds=job.file_ids,
            owner=job.owner,
            createdAt=now,
            updatedAt=now,
            version=1,
        )
        if job.callback_url:
            fields.update(encode_fields(callbackUrl=job.callback_url, callback=job.callback))
        if random.random() < HISTORY_TRIM_CHANCE:
            self._trim_history(job.owner, created_ms)
        client_key, fingerprint = idempotency or ("", "")
        queue, message = enqueue or ("", "")
        keys = [
            job_key(job.job_id),
            active_key(job.owner),
            idempotency_key(job.owner, client_key) if idempotency else f"{PREFIX}idem:-:none",
            history,
            queue or f"{PREFIX}no-queue",
            history_key(job.owner, "last"),
            count_key(job.owner, JobState.QUEUED.value),
        ]
        args: list[Any] = [self.ttl_seconds, max_active or 0, job.job_id, fingerprint, created_ms, message]
        for name, value in fields.items():
            args += [name, value]
        if self.replica_ack is None:
            result = self._create(keys=keys, args=args)
        else:
            result, acked = self.replica_ack.execute(self._create, keys, args)
            if result[0] == 1:  # written (a replay or a refusal wrote nothing)
                self.replica_ack.confirm(acked, job.job_id)
        if result[0] == 2:
            earlier_id, _, earlier_fingerprint = str(result[1]).partition(" ")
            return Replay(earlier_id, earlier_fingerprint)
        if result[0] == 3:
            raise TooManyActive(int(result[1]))
        return None

    def delete(self, job_id: str, owner: str = "", idempotency_key_: str | None = None) -> None:
        """Remove a job that never started (and its active-set entry and idempotency key)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(job_key(job_id))
        pipe.zrem(history_key(owner, JobState.QUEUED.value), job_id)
        pipe.zrem(count_key(owner, JobState.QUEUED.value), job_id)
        pipe.zrem(LIVE_KEY, job_id)
        pipe.zrem(EXPIRY_KEY, job_id)
        if owner:
            pipe.zrem(active_key(owner), job_id)
        if idempotency_key_:
            pipe.delete(idempotency_key(owner, idempotency_key_))
        pipe.execute()

    # -- history: an owner's jobs, newest first -------------------------------------------

    def _trim_history(self, owner: str, now_ms: int) -> None:
        oldest = now_ms - (self.ttl_seconds + HISTORY_MARGIN_SECONDS) * 1000
        pipe = self.redis.pipeline(transaction=False)
        for state in JobState:
            pipe.zremrangebyscore(history_key(owner, state.value), "-inf", f"({oldest}")
            pipe.zremrangebyscore(count_key(owner, state.value), "-inf", now_ms // 1000)  # expired
        pipe.execute()

    def _history_candidates(
        self, owner: str, states: list[JobState], before: tuple[int, str] | None, count: int
    ) -> list[tuple[int, str, JobState]]:
        """Up to ``count`` (score, id, state) entries strictly after ``before``, newest first."""
        pipe = self.redis.pipeline(transaction=False)
        top = str(before[0]) if before else "+inf"
        for state in states:
            pipe.zrange(history_key(owner, state.value), top, "-inf", byscore=True, desc=True,
                        offset=0, num=count, withscores=True)  # fmt: skip
        merged: list[tuple[int, str, JobState]] = []
        for state, rows in zip(states, pipe.execute(), strict=True):
            merged += [(int(score), str(job_id), state) for job_id, score in rows]
        merged.sort(key=lambda row: (row[0], row[1]), reverse=True)
        if before:  # same creation ms: order by id, as Redis does in reverse
            merged = [row for row in merged if (row[0], row[1]) < before]
        return merged[:count]

    def history(
        self, owner: str, states: list[JobState], limit: int, before: tuple[int, str] | None = None
    ) -> tuple[list[Job], tuple[int, str] | None]:
        """A page of ``owner``'s jobs in ``states``, newest first, after position ``before``.

        Returns the jobs and the position to continue from (None on the last page). The
        order (creation ms, then id) never changes, so pages neither repeat nor skip a job
        while new ones arrive or jobs change state. Costs O(limit) reads, plus any expired
        entries met on the way, which are removed.
        """
        found: list[tuple[int, Job]] = []
        position = before
        batch = limit + 1 + HISTORY_SCAN_SLACK
        while len(found) <= limit:
            rows = self._history_candidates(owner, states, position, batch)
            if not rows:
                break
            pipe = self.redis.pipeline(transaction=False)
            for _, job_id, _ in rows:
                pipe.hgetall(job_key(job_id))
            stale = self.redis.pipeline(transaction=False)
            for (score, job_id, state), raw in zip(rows, pipe.execute(), strict=True):
                position = (score, job_id)
                if not raw:
                    stale.zrem(history_key(owner, state.value), job_id)
                    continue
                job = Job.from_hash(raw)
                if job.status in states:  # it may have moved since the sets were read
                    found.append((score, job))
                    if len(found) > limit:
                        break
            stale.execute()
            if len(rows) < batch:
                break
        page = found[:limit]
        more = len(found) > limit
        return [job for _, job in page], ((page[-1][0], page[-1][1].job_id) if more and page else None)

    def history_counts(self, owner: str) -> dict[str, int]:
        """Jobs of ``owner`` by state whose record has not expired: one round trip of one
        ZCOUNT per state, O(log n) each however long the history."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for state in JobState:
            pipe.zcount(count_key(owner, state.value), f"({now:.6f}", "+inf")
        return {state.value: int(n) for state, n in zip(JobState, pipe.execute(), strict=True)}

    def active_count(self, owner: str) -> int:
        """How many queued or processing jobs ``owner`` has (expired entries not counted)."""
        return int(self.redis.zcount(active_key(owner), f"({int(time.time())}", "+inf"))

    def update(self, job_id: str, publish: bool = True, **fields: Any) -> Job:
        """Write ``fields`` (camelCase names) unless the job is terminal, then publish
        (when anyone listens).

        Returns the record after the call. A terminal job is returned unchanged, so a
        caller compares ``job.status`` to learn whether its write was refused.

        :raise JobGone: the job does not exist (any more).
        """
        result = self.write(job_id, **fields)
        if result.written and publish and result.listeners:
            self.publish(result.job)
        return result.job

    def write(self, job_id: str, *, lease: tuple[str, int] | None = None, **fields: Any) -> Written:
        """Write ``fields`` unless the job is terminal; publish nothing.

        ``lease`` is ``(holder, ttl seconds)`` for a job's runner: the write is refused
        (:class:`LeaseLost`) while another holder has the lease, and takes or renews it
        otherwise; a terminal write releases it. When the write made the job terminal,
        each of ``terminal_hooks`` is called with the record.

        :raise JobGone: the job does not exist (any more).
        :raise LeaseLost: another runner holds the job's lease.
        """
        fields["updatedAt"] = utcnow()
        status = fields.get("status")
        if status is not None and JobState(status).terminal:
            fields.setdefault("completedAt", fields["updatedAt"])
        holder, lease_seconds = lease or ("", 0)
        args: list[Any] = [self.ttl_seconds, holder, lease_seconds]
        for name, value in encode_fields(**fields).items():
            args += [name, value]
        result = self._update(keys=[job_key(job_id), lease_key(job_id)], args=args)
        if result[0] == 0:
            raise JobGone(job_id)
        if result[0] == 3:
            raise LeaseLost(job_id)
        job = Job.from_hash(pairs_to_dict(result[1]))
        written = result[0] == 1
        if written and job.status.terminal:
            for hook in self.terminal_hooks:
                try:
                    hook(job)
                except Exception:  # the state is written; a lost hook must not undo that
                    logger.exception("job %s: terminal hook failed", job_id)
        return Written(job, written, int(result[2]) if written else 0)

    def set_callback(self, job_id: str, outcome: dict[str, Any], next_attempt_at: float | None = None) -> bool:
        """Store a webhook delivery outcome (also on a terminal job), and schedule the next
        attempt at ``next_attempt_at`` (epoch seconds; None: no more). False: job gone."""
        encoded = encode_fields(callback=outcome)["callback"]
        due = "" if next_attempt_at is None else str(int(next_attempt_at))
        return bool(self._callback(keys=[job_key(job_id)], args=[self.ttl_seconds, encoded, due, job_id]))

    # -- the sweeper's indexes (celery_app/sweeper.py) ----------------------------------

    def stale_live(self, written_before: float, limit: int) -> list[str]:
        """Queued or processing jobs not written since ``written_before`` (epoch s), oldest first."""
        return [str(j) for j in self.redis.zrange(LIVE_KEY, "-inf", written_before, byscore=True, offset=0, num=limit)]

    def sweep_states(self, job_ids: list[str]) -> list[tuple[str | None, int | None, bool]]:
        """Per job: its status (None: no record), creation ms, and whether a lease is held."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(job_key(job_id), "status", "createdMs")
            pipe.exists(lease_key(job_id))
        replies = pipe.execute()
        rows: list[tuple[str | None, int | None, bool]] = []
        for (status, created), leased in zip(replies[::2], replies[1::2], strict=True):
            rows.append((status, int(created) if created else None, bool(leased)))
        return rows

    def forget_live(self, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.zrem(LIVE_KEY, *job_ids)

    def expired(self, now: float, limit: int) -> list[str]:
        """Jobs whose hash expired by ``now`` (epoch s) by the index; a job written since
        without the index noticing is put back with its real expiry, not returned."""
        ids = [str(j) for j in self.redis.zrange(EXPIRY_KEY, "-inf", now, byscore=True, offset=0, num=limit)]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.ttl(job_key(job_id))
        gone: list[str] = []
        later: dict[str, float] = {}
        for job_id, ttl in zip(ids, pipe.execute(), strict=True):
            if ttl is None or ttl < 0:  # -2: no such key (-1, no TTL, cannot happen here)
                gone.append(job_id)
            else:
                later[job_id] = now + ttl
        if later:
            self.redis.zadd(EXPIRY_KEY, later)  # type: ignore[arg-type]
        return gone

    def forget_expired(self, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.zrem(EXPIRY_KEY, *job_ids)

    def due_webhooks(self, now: float, limit: int) -> list[str]:
        return [str(j) for j in self.redis.zrange(WEBHOOKS_KEY, "-inf", now, byscore=True, offset=0, num=limit)]

    def claim_webhook(self, job_id: str, now: float, until: float) -> bool:
        """Move a due delivery's time to ``until``; False when it was not due (any more)."""
        return bool(self._claim_webhook(keys=[WEBHOOKS_KEY], args=[job_id, now, until]))

    def publish(self, job: Job) -> None:
        """Publish the status in flask-sse's format: {"data", "type", "id"}."""
        event = job.status.value if job.status.terminal else "progress"
        message = {"data": self.status(job), "type": event, "id": job.version}
        try:
            self.direct.command("PUBLISH", events_channel(job.job_id), orjson.dumps(message).decode())
        except redis.RedisError as exc:  # the stored state is what counts
            logger.warning("could not publish event for job %s: %s", job.job_id, exc)

    # -- leases: which worker runs a job right now ----------------------------------

    def lease_and_get(self, job_id: str, holder: str, ttl_seconds: int) -> tuple[bool, Job | None]:
        """Take or renew the lease and read the job, in one round trip.

        Returns whether the lease is ours, and the record (None: no such job).
        """
        keys, args = [lease_key(job_id)], [holder, ttl_seconds]
        lease, raw = self.direct.execute(
            self._lease.command(keys, args), self.read_command(job_id), raise_on_error=False
        )
        if isinstance(lease, NoScriptError):  # Redis lost its script cache (restart, failover)
            lease = self.direct.execute(self._lease.eval_command(keys, args))[0]
        elif isinstance(lease, Exception):
            raise lease
        if isinstance(raw, Exception):
            raise raw
        return bool(lease), self.job_from_reply(raw)

    def release_lease(self, job_id: str, holder: str) -> None:
        self._release(keys=[lease_key(job_id)], args=[holder])
