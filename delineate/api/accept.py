"""Accepting a new job: its record and task message, the caps and idempotency.

What ``POST /v1/download/initiate`` does once the body is parsed, with everything it
needs passed in rather than read from Flask's request: both the Flask view
(:mod:`delineate.api.blueprints.downloads`) and the fast lane (:mod:`delineate.api.edge.fast_lane`)
call it, so a job is accepted by the same code whichever answers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from kombu.exceptions import OperationalError

from delineate.broker.queue import TaskQueue
from delineate.config import Settings
from delineate.errors import Conflict, InvalidRequest, JobNotFound, NotReplicated, ServiceUnavailable, TooManyActiveJobs
from delineate.ids import new_uuid
from delineate.jobs.webhooks import pending_callback
from delineate.models import Job, JobState
from delineate.services import Services
from delineate.store import TooManyActive
from delineate.store.replica_ack import NoReplicaAck

logger = logging.getLogger(__name__)

PER_FILE_OVERHEAD_SECONDS = 0.05
"""Estimated seconds of S3 work per file, added to the mean simulated delay."""

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
"""What an Idempotency-Key header may be: 1-255 printable ASCII characters."""


def estimate_seconds(settings: Settings, file_count: int) -> int:
    """A job's expected duration: the mean simulated delay plus S3 work per file."""
    delay = settings.download_delay_enabled
    mean_delay = (settings.download_delay_min_ms + settings.download_delay_max_ms) / 2000 if delay else 0
    return math.ceil(mean_delay + PER_FILE_OVERHEAD_SECONDS * file_count)


def idempotency_key(value: str | None) -> str | None:
    """A request's Idempotency-Key header, checked. :raise InvalidRequest: it is malformed."""
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces.",
            details=[{"path": "header Idempotency-Key", "message": "1-255 printable characters"}],
        )
    return value


def fingerprint(ids: list[int]) -> str:
    """The same for the same set of ids, whatever their order or repeats."""
    return hashlib.sha256(",".join(map(str, sorted(set(ids)))).encode()).hexdigest()


@dataclass(slots=True)
class Accepted:
    """The answer to an initiate: the new job (202), or the earlier one of the same
    Idempotency-Key (200, ``replayed``)."""

    job: Job
    replayed: bool
    settings: Settings

    @property
    def status(self) -> int:
        return 200 if self.replayed else 202

    def body(self) -> dict[str, Any]:
        job = self.job
        return {
            "jobId": job.job_id,
            "status": job.status.value,
            "totalFileIds": job.total_files,
            "estimatedTimeSeconds": estimate_seconds(self.settings, job.total_files),
        }

    def headers(self) -> list[tuple[str, str]]:
        headers = [("Location", f"/v1/download/status/{self.job.job_id}")]
        return [*headers, ("Idempotent-Replayed", "true")] if self.replayed else headers


def accept(
    svc: Services, queue: TaskQueue, ids: list[int], owner: str, idem_key: str | None, callback_url: str = ""
) -> Accepted:
    """Store a new job of ``ids`` for ``owner`` with its task message, under the caller's caps;
    or answer with the earlier job of ``idem_key``.

    :raise Conflict: ``idem_key`` was used before with other ids.
    :raise NotReplicated: behind Sentinel, no replica acknowledged the new job in time (503).
    :raise TooManyActiveJobs: the caller's key has MAX_ACTIVE_JOBS_PER_KEY jobs running.
    :raise ServiceUnavailable: the broker (not this Redis) refused the message; the job is removed.
    """
    job = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=ids, owner=owner, callback_url=callback_url)
    if callback_url:
        job.callback = pending_callback()
    with queue.message(job.job_id) as enqueue:
        # The record and its task message in one script (when the broker is this Redis);
        # the message goes onto Celery's queue when a worker slot is granted (at once, in
        # the same script, when one is free).
        try:
            earlier = _create_or_replay(svc, job, idem_key, enqueue)
        except (OperationalError, ConnectionError, OSError) as exc:
            # The broker is another Redis and refused what was granted: never leave a job
            # that no worker will ever see (what else was granted, the sweeper republishes).
            svc.store.delete(job.job_id, job.owner, idem_key)
            logger.error("could not enqueue job %s: %s", job.job_id, exc)
            raise ServiceUnavailable(
                "The job queue is unavailable; try again shortly.", headers={"Retry-After": "5"}
            ) from None
    if earlier is not None:
        return Accepted(earlier, True, svc.settings)
    logger.debug("job %s queued with %d files (owner %r)", job.job_id, len(ids), job.owner)
    return Accepted(job, False, svc.settings)


def _create_or_replay(svc: Services, job: Job, idem_key: str | None, enqueue: tuple[str, str] | None) -> Job | None:
    tenants = svc.tenants.current
    cap = tenants.tenant(job.owner).max_active_jobs if tenants.keyed else None
    ids_fingerprint = fingerprint(job.file_ids) if idem_key else ""
    try:
        replay = svc.store.create(
            job, max_active=cap, idempotency=(idem_key, ids_fingerprint) if idem_key else None, enqueue=enqueue
        )
    except NoReplicaAck:
        # The record and message exist on the primary only: a failover could lose them,
        # so no 202. (The job may still run; an Idempotency-Key retry replays it.)
        raise NotReplicated(
            "The new job could not be confirmed on a replica in time; try again shortly.",
            headers={"Retry-After": "1"},
        ) from None
    except TooManyActive as exc:
        raise TooManyActiveJobs(
            f"This API key already has {exc.count} queued or processing jobs "
            f"(limit {cap}); wait for one to finish or cancel one.",
            retry_after_seconds=5,
        ) from None
    if replay is None:
        return None
    if replay.fingerprint != ids_fingerprint:
        raise Conflict(
            "This Idempotency-Key was already used with other file_ids; use a new key for a new request.",
            details={"jobId": replay.job_id},
        )
    earlier = svc.store.get(replay.job_id)
    if earlier is None:  # expired between the two reads
        raise JobNotFound(f"No job {replay.job_id}.")
    return earlier
