"""The index of bundles written in parts (``sweep:parts``), so that the sweeper can delete
every part of a job whose hash has expired: only the hash lists the parts, and it is gone
by the time the sweeper learns the job expired."""

from __future__ import annotations

import redis

from delineate.store.keys import PARTS_KEY


class PartsIndex:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def record(self, job_id: str, count: int) -> None:
        """Before the first part is written: a run that dies half-way leaves parts that the
        sweeper still finds. A later run of the job writes the same keys; should it plan
        fewer parts (a source changed size), the larger count stays, so none is left behind.
        (Only the job's lease holder writes it: a read, then a write, is enough.)"""
        known = self.redis.hget(PARTS_KEY, job_id)
        if known is None or int(known) < count:
            self.redis.hset(PARTS_KEY, job_id, count)

    def counts(self, job_ids: list[str]) -> dict[str, int]:
        """The part counts of those of ``job_ids`` whose bundle was written in parts."""
        if not job_ids:
            return {}
        values = self.redis.hmget(PARTS_KEY, job_ids)
        return {job_id: int(value) for job_id, value in zip(job_ids, values, strict=True) if value}

    def forget(self, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.hdel(PARTS_KEY, *job_ids)
