"""Revocation: a completed job's result withdrawn (``DELETE /v1/download/{jobId}``).

A mixin of :class:`~delineate.store.jobstore.JobStore`. One script (``lua/revoke.lua``)
sets ``revokedAt`` (the state stays ``completed``), so no status read presigns a link
again and downloads answer 410, and in the same step puts the job in the revocation index
``sweep:revoked``. That entry is the record that the job's bundle must be deleted: the
caller deletes ``bundles/{jobId}.zip`` and then :meth:`Revocation.forget_revoked` it; if
it dies in between, or the object store does not answer, the sweeper
(``delineate/jobs/sweeper.py``) deletes what the index still holds. A crash after the
write therefore costs at most one sweep interval of a bundle left in the bucket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

import orjson
import redis

from delineate.models import Job, JobState, utcnow
from delineate.redis_io.base import DirectScript, Lane, pairs_to_dict
from delineate.store.keys import REVOKED_KEY, WEBHOOKS_KEY, job_key
from delineate.store.scripts import source

logger = logging.getLogger(__name__)


def pending_state() -> bytes:
    """The first state of a ``revoked`` delivery (``revoke.lua`` writes it as the job's
    ``revokedCallback``; ``store/revocation_hooks.py`` reads and advances it)."""
    return orjson.dumps({"status": "pending", "attempts": 0, "lastError": None, "since": time.time()})


class NotRevocable(Exception):
    """Only a completed job's result can be revoked. ``job`` is the record (in another
    state), or None when there is no such job (never was, or expired)."""

    def __init__(self, job_id: str, job: Job | None) -> None:
        super().__init__(f"job {job_id} is {job.status.value if job else 'gone'}")
        self.job = job


class Revocation:
    """The job store's revocation (``redis``, ``direct``, ``ttl_seconds`` and
    :meth:`publish` are the store's)."""

    redis: redis.Redis
    direct: Lane
    ttl_seconds: int
    webhook_claim_seconds: int

    if TYPE_CHECKING:

        def publish(self, job: Job) -> None: ...

    @cached_property
    def _revoke(self) -> DirectScript:
        return self.direct.script(source("revoke"))

    def revoke(self, job_id: str, on_revoked: Callable[[Job, bool], None] | None = None) -> Job:
        """Revoke a completed job's result, atomically; idempotent.

        Returns the record, ``revoked_at`` set (by this call or an earlier one). Only when
        this call revoked it: the job's events get the new status (when anyone listens) and
        ``on_revoked`` is called with the record and whether the ``revoked`` webhook's first
        attempt is the caller's to send now (its schedule is written either way, so the
        sweeper sends it if the caller cannot).

        :raise NotRevocable: the job is not completed, or does not exist.
        """
        fallback = int(time.time()) + self.webhook_claim_seconds
        result = self._revoke(
            keys=[job_key(job_id), REVOKED_KEY, WEBHOOKS_KEY],
            args=[self.ttl_seconds, JobState.COMPLETED.value, utcnow(), pending_state(), fallback],
        )
        if result[0] == 0:
            raise NotRevocable(job_id, None)
        job = Job.from_hash(pairs_to_dict(result[1]))
        if result[0] == 3:
            raise NotRevocable(job_id, job)
        if result[0] == 1:
            logger.info("job %s revoked", job_id)
            if int(result[2]):
                self.publish(job)
            if on_revoked is not None:
                try:
                    on_revoked(job, bool(int(result[3])))
                except Exception:  # the revocation is written; a lost follow-up must not undo it
                    logger.exception("job %s: revocation follow-up failed", job_id)
        return job

    @cached_property
    def _revoked_webhook(self) -> DirectScript:
        return self.direct.script(source("revoked_webhook"))

    def set_revoked_callback(self, job_id: str, state: bytes, next_attempt_at: float | None) -> bool:
        """Record an attempt of the job's ``revoked`` delivery (``state``, JSON) and schedule
        the next at ``next_attempt_at`` (epoch s; None: no more). False: the job is gone."""
        due = "" if next_attempt_at is None else str(int(next_attempt_at))
        return bool(self._revoked_webhook(keys=[job_key(job_id), WEBHOOKS_KEY], args=[state, due, job_id]))

    # -- the sweeper's side: bundles whose deletion is still owed ---------------------------

    def revoked_bundles(self, limit: int) -> list[str]:
        """Revoked jobs whose bundle may still exist (their revoker died, or the object store
        did not answer it), oldest first."""
        return [str(j) for j in self.redis.zrange(REVOKED_KEY, 0, limit - 1)]

    def forget_revoked(self, job_ids: list[str]) -> None:
        """These jobs' bundles are deleted (or they never had one)."""
        if job_ids:
            self.redis.zrem(REVOKED_KEY, *job_ids)
