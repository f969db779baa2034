"""The job store: a job's record, its atomic writes, its events and its lease.

Progress is stored state first and an event second: every write goes to the job's
hash (atomically, refusing to touch a terminal job), then a full status snapshot is
published on the job's channel in flask-sse's message format. The keys are listed in
:mod:`delineate.store.keys`, the scripts in ``store/lua/``.
"""

from __future__ import annotations

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
from delineate.redis_io import lane_for
from delineate.redis_io.base import Lane, pairs_to_dict
from delineate.store.bundles import BundleGone, Bundles
from delineate.store.dispatch import Dispatch, Publish
from delineate.store.history import HISTORY_MARGIN_SECONDS, HISTORY_TRIM_CHANCE, History
from delineate.store.keys import (
    EXPIRY_KEY,
    LIVE_KEY,
    NO_IDEMPOTENCY_KEY,
    NO_QUEUE_KEY,
    active_key,
    count_key,
    dispatch_message_key,
    dispatch_tenant,
    events_channel,
    history_key,
    idempotency_key,
    job_key,
    lease_key,
)
from delineate.store.replica_ack import ReplicaAck
from delineate.store.revocation import Revocation
from delineate.store.scripts import source
from delineate.store.sweep_index import SweepIndex

logger = logging.getLogger(__name__)


class JobGone(LookupError):
    """The job's hash is missing (never existed, or expired)."""


class LeaseLost(Exception):
    """Another runner holds the job's lease: this one must stop."""


class Written(NamedTuple):
    """What :meth:`JobStore.write` did."""

    job: Job  # the record after the call
    written: bool  # False: refused, the job was already terminal
    listeners: int  # subscribers of the job's events channel when it was written
    granted: tuple[str, ...] = ()  # jobs the write's freed slot went to (the caller publishes them)


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


class JobStore(History, SweepIndex, Dispatch, Revocation, Bundles):
    def __init__(
        self,
        client: redis.Redis,
        ttl_seconds: int,
        presign: Callable[[Job], str] | None = None,
        direct: Lane | None = None,
        webhook_claim_seconds: int = 60,
        replica_ack: ReplicaAck | None = None,
        queue_key: str = "",
    ) -> None:
        self.redis = client
        #: Celery's queue when the broker is this Redis (the scripts push granted jobs' messages
        #: onto it); "" when it is another, and ``publish_granted`` sends them through Celery.
        self.queue_key = queue_key
        self.publish_granted: Publish | None = None
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
        # The update script's fixed ARGV[4..6] (update.lua), taken once, as when they were
        # written into the script.
        self._update_constants = (HISTORY_MARGIN_SECONDS, int(webhook_claim_seconds), queue_key)
        self._update = self.direct.script(source("update"))
        self._callback = self.direct.script(source("callback"))
        self._create = self.direct.script(source("create"))
        self._claim_webhook = client.register_script(source("claim_webhook"))
        self._lease = self.direct.script(source("lease"))
        self._release = self.direct.script(source("release"))
        self._init_dispatch()

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
            idempotency_key(job.owner, client_key) if idempotency else NO_IDEMPOTENCY_KEY,
            history,
            queue or NO_QUEUE_KEY,
            history_key(job.owner, "last"),
            count_key(job.owner, JobState.QUEUED.value),
        ]
        args: list[Any] = [self.ttl_seconds, max_active or 0, job.job_id, fingerprint, created_ms, message]
        args += [HISTORY_MARGIN_SECONDS, dispatch_tenant(job.owner)]  # ARGV[7], ARGV[8] (create.lua)
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
        self._granted(list(result[1:]))
        return None

    def delete(self, job_id: str, owner: str = "", idempotency_key_: str | None = None) -> None:
        """Remove a job that never started (and its active-set entry and idempotency key)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(job_key(job_id), dispatch_message_key(job_id))
        pipe.zrem(history_key(owner, JobState.QUEUED.value), job_id)
        pipe.zrem(count_key(owner, JobState.QUEUED.value), job_id)
        pipe.zrem(LIVE_KEY, job_id)
        pipe.zrem(EXPIRY_KEY, job_id)
        if owner:
            pipe.zrem(active_key(owner), job_id)
        if idempotency_key_:
            pipe.delete(idempotency_key(owner, idempotency_key_))
        pipe.execute()

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

    def write(
        self, job_id: str, *, lease: tuple[str, int] | None = None, claim: str | None = None, **fields: Any
    ) -> Written:
        """Write ``fields`` unless the job is terminal; publish nothing.

        ``lease`` is ``(holder, ttl seconds)`` for a job's runner: the write is refused
        (:class:`LeaseLost`) while another holder has the lease, and takes or renews it
        otherwise; a terminal write releases it. ``claim``: the job id whose bundle this
        write completes the job with; the job joins that bundle's users in the same step
        (``store/bundles.py``). When the write made the job terminal, each of
        ``terminal_hooks`` is called with the record.

        :raise JobGone: the job does not exist (any more).
        :raise LeaseLost: another runner holds the job's lease.
        :raise BundleGone: ``claim``'s bundle is gone or going (nothing written).
        """
        fields["updatedAt"] = utcnow()
        status = fields.get("status")
        if status is not None and JobState(status).terminal:
            fields.setdefault("completedAt", fields["updatedAt"])
        holder, lease_seconds = lease or ("", 0)
        args: list[Any] = [self.ttl_seconds, holder, lease_seconds, *self._update_constants]
        for name, value in encode_fields(**fields).items():
            args += [name, value]
        keys = [job_key(job_id), lease_key(job_id)] + ([self.claim_key(claim)] if claim else [])
        result = self._update(keys=keys, args=args)
        if result[0] == 0:
            raise JobGone(job_id)
        if result[0] == 3:
            raise LeaseLost(job_id)
        if result[0] == 4:
            raise BundleGone(claim)
        job = Job.from_hash(pairs_to_dict(result[1]))
        written = result[0] == 1
        granted = tuple(str(i) for i in result[3]) if written and len(result) > 3 and result[3] else ()
        if granted:
            self._granted(list(granted))
        if written and job.status.terminal:
            for hook in self.terminal_hooks:
                try:
                    hook(job)
                except Exception:  # the state is written; a lost hook must not undo that
                    logger.exception("job %s: terminal hook failed", job_id)
        return Written(job, written, int(result[2]) if written else 0, granted)

    def set_callback(self, job_id: str, outcome: dict[str, Any], next_attempt_at: float | None = None) -> bool:
        """Store a webhook delivery outcome (also on a terminal job), and schedule the next
        attempt at ``next_attempt_at`` (epoch seconds; None: no more). False: job gone."""
        encoded = encode_fields(callback=outcome)["callback"]
        due = "" if next_attempt_at is None else str(int(next_attempt_at))
        return bool(self._callback(keys=[job_key(job_id)], args=[self.ttl_seconds, encoded, due, job_id]))

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
