"""The sweeper's indexes (``delineate/jobs/sweeper.py``): the sweep part of the job store.

A mixin of :class:`~delineate.store.jobstore.JobStore`; it reads the ``sweep:`` sets
that the create, update and callback scripts keep (see :mod:`delineate.store.keys`).
"""

from __future__ import annotations

import redis
from redis.commands.core import Script

from delineate.store.keys import EXPIRY_KEY, LIVE_KEY, WEBHOOKS_KEY, job_key, lease_key

WEBHOOK_CLAIM_INTERVALS = 4
"""A webhook delivery sent (or claimed by the sweeper) is due again after this many sweep
intervals (60 s by default) unless its attempt reschedules or ends it: a lost delivery
message costs this much delay."""


class SweepIndex:
    """The sweeper's reads of the job store (``redis`` and the claim script are the store's)."""

    redis: redis.Redis
    _claim_webhook: Script  # claim_webhook.lua, through redis-py

    def stale_live(self, written_before: float, limit: int) -> list[str]:
        """Queued or processing jobs not written since ``written_before`` (epoch s), oldest first."""
        return [str(j) for j in self.redis.zrange(LIVE_KEY, "-inf", written_before, byscore=True, offset=0, num=limit)]

    def sweep_states(self, job_ids: list[str]) -> list[tuple[str | None, int | None, bool, bool]]:
        """Per job: its status (None: no record), creation ms, whether a lease is held, and
        whether it still waits for a worker slot (the fair share has no message out for it)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(job_key(job_id), "status", "createdMs", "dispatch")
            pipe.exists(lease_key(job_id))
        replies = pipe.execute()
        rows: list[tuple[str | None, int | None, bool, bool]] = []
        for (status, created, dispatch), leased in zip(replies[::2], replies[1::2], strict=True):
            rows.append((status, int(created) if created else None, bool(leased), dispatch == "waiting"))
        return rows

    def forget_live(self, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.zrem(LIVE_KEY, *job_ids)

    def seen_alive(self, job_ids: list[str], at: float) -> None:
        """Move these live jobs' sweep time to ``at`` (epoch s): a sweep found their message
        waiting, so the next sweeps look at the jobs behind them first. Only jobs still in
        the index (XX): one that ended meanwhile is not put back."""
        if job_ids:
            self.redis.zadd(LIVE_KEY, dict.fromkeys(job_ids, at), xx=True)

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
