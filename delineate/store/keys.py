"""Every Redis key and channel name of delineate: the only place that spells them.

Keys (all prefixed :data:`PREFIX`, ``delineate:``):

- ``job:{id}``      hash, the job record; TTL JOB_TTL_SECONDS, refreshed on write
- ``lease:{id}``    string, the worker currently running the job; short TTL, renewed
- ``events:{id}``   pub/sub channel, one message per status write
- ``active:{owner}`` sorted set, the owner's queued and processing job ids, each scored
  with the time (epoch seconds) its hash expires; kept by the create and update scripts
- ``idem:{owner}:{sha256(Idempotency-Key)}`` string ``"{jobId} {fingerprint}"``; TTL JOB_TTL_SECONDS
- ``ratelimit:{caller}``  rate-limit counters (:data:`RATE_LIMIT_PREFIX`, `delineate/api/edge/ratelimit.py`)
- ``sweep:live``    sorted set, every queued or processing job id scored by its last write
  (epoch seconds); ``sweep:expiry`` every job id scored by when its hash expires;
  ``sweep:webhooks`` job ids with a webhook delivery due, scored by when (epoch seconds;
  a revoked job's ``revoked`` delivery uses its entry once its own delivery is over);
  ``sweep:revoked`` revoked job ids whose bundle may still exist, by revocation time;
  ``sweep:parts`` hash, job id → part count of each bundle written in parts (``store/parts_index.py``).
  Written by the same scripts that write the job, read by the sweeper
  (``delineate/jobs/sweeper.py``); ``sweep:suspects`` and ``sweep:lock`` are the sweeper's own.
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
- ``errors:{owner}`` list, the newest errors the owner's requests and jobs met (5xx answers,
  failed jobs, failed webhook deliveries), JSON each, newest first, at most
  ERROR_LOG_LENGTH (``delineate/store/errorlog.py``); ``owner`` is ``-`` in open mode and for
  requests without a key
- ``dispatch:*``    the fair share of the worker slots (``store/lua/dispatch.lua``, which builds
  them): ``ready:{tenant}`` (list of waiting job ids), ``waiting`` (set of tenants),
  ``running`` and ``running:{tenant}`` (sorted sets of granted jobs), ``tenants`` (hash of
  each tenant's weight and max_running), ``workers`` (hash of registered pools), ``known``,
  ``message:{id}`` (a waiting job's task message);
  ``tenant`` is ``-`` in open mode
- ``streams:{owner}`` sorted set, the owner's open SSE streams (an id per stream) scored by
  their last heartbeat (epoch seconds), across every API process; a stream not refreshed for
  a few heartbeats (its process died) no longer counts (``delineate/api/sse.py``)
- ``reuse:{digest}`` string (JSON), the latest bundle built for one set of file ids
  (``digest``: sha256 of the sorted ids, 32 hex digits): its sources' digest (ids and
  ETags), its builder's job id and result fields; TTL JOB_TTL_SECONDS, refreshed by each job
  completed with it. Only a hint: ``bundle-refs`` says whether the bundle is alive
  (``delineate/store/bundles.py``)
- ``bundle-refs:{jobId}`` sorted set, the jobs completed with the bundle ``jobId`` built,
  each scored with when its hash expires (epoch s); made by the first job that reuses it,
  deleted (and the bundle with it) once none of them is completed and unrevoked any more
- ``resume:{jobId}`` hash, what a job's interrupted bundle needs to continue
  (``delineate/store/resume_state.py``): the sources' fingerprint, each zip's open upload
  (id, acknowledged parts and bytes), each entry written (CRC, size, offset, sha256) and
  each zip completed; TTL JOB_TTL_SECONDS, deleted when the job completes or fails
- ``metrics:*``     the shared metric counters (:data:`METRICS_PREFIX`, `delineate/telemetry/`)

The Lua scripts (``store/lua/*.lua``) build some of these keys themselves from the
stored owner and job id; they write the prefix as ``$PREFIX:``, which
:func:`delineate.store.scripts.source` replaces with :data:`PREFIX`.
"""

from __future__ import annotations

import hashlib

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


def history_key(owner: str, state: str) -> str:
    return f"{PREFIX}history:{owner or '-'}:{state}"


def count_key(owner: str, state: str) -> str:
    return f"{PREFIX}count:{owner or '-'}:{state}"


def errors_key(owner: str) -> str:
    return f"{PREFIX}errors:{owner or '-'}"


def streams_key(owner: str) -> str:
    return f"{PREFIX}streams:{owner or '-'}"


DISPATCH_PREFIX = f"{PREFIX}dispatch:"
"""The fair share's keys (``store/lua/dispatch.lua`` builds them from this prefix)."""
DISPATCH_TENANTS_KEY = f"{DISPATCH_PREFIX}tenants"


def dispatch_tenant(owner: str) -> str:
    """A tenant's name in the dispatch keys (``-`` for the open tenant, as in history keys)."""
    return owner or "-"


def dispatch_message_key(job_id: str) -> str:
    """A waiting job's stored task message (``dispatch.lua`` builds it too)."""
    return f"{DISPATCH_PREFIX}message:{job_id}"


def ready_key(owner: str) -> str:
    return f"{DISPATCH_PREFIX}ready:{dispatch_tenant(owner)}"


def reuse_key(ids_digest: str) -> str:
    return f"{PREFIX}reuse:{ids_digest}"


def bundle_refs_key(job_id: str) -> str:
    """``store/lua/reuse.lua`` builds it too, from the builder's job id."""
    return f"{PREFIX}bundle-refs:{job_id}"


LIVE_KEY = f"{PREFIX}sweep:live"
EXPIRY_KEY = f"{PREFIX}sweep:expiry"
WEBHOOKS_KEY = f"{PREFIX}sweep:webhooks"
REVOKED_KEY = f"{PREFIX}sweep:revoked"
"""Sorted set: revoked job ids whose bundle may still exist, scored by revocation time
(epoch seconds); written by ``revoke.lua``, emptied by the revoking request or the sweeper."""
PARTS_KEY = f"{PREFIX}sweep:parts"
"""Hash: job id → how many parts its bundle was planned in, for the jobs whose bundle is
written in parts; written before the first part is uploaded, emptied by the sweeper when
the job expires (the job's hash, which lists the parts, is gone by then)."""
SUSPECTS_KEY = f"{PREFIX}sweep:suspects"
SWEEP_LOCK_KEY = f"{PREFIX}sweep:lock"

NO_IDEMPOTENCY_KEY = f"{PREFIX}idem:-:none"
"""The create script's idempotency key when the request has none (never read or written)."""

NO_QUEUE_KEY = f"{PREFIX}no-queue"
"""The create script's queue key when the job's message is sent by Celery (never written)."""

RATE_LIMIT_PREFIX = f"{PREFIX}ratelimit"
"""Prefix of the rate limiter's counters: ``{prefix}:{caller}``, one per window."""

METRICS_PREFIX = f"{PREFIX}metrics:"
"""Prefix of the metric hashes every process shares (``delineate/telemetry/``)."""


def resume_key(job_id: str) -> str:
    return f"{PREFIX}resume:{job_id}"
