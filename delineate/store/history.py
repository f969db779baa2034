"""An owner's jobs, newest first, and their summary: the history part of the job store.

A mixin of :class:`~delineate.store.jobstore.JobStore`; it reads the ``history:`` and
``count:`` sets that the create, update and callback scripts keep (see
:mod:`delineate.store.keys`).
"""

from __future__ import annotations

import time

import redis

from delineate.models import Job, JobState
from delineate.store.keys import active_key, count_key, history_key, job_key

HISTORY_MARGIN_SECONDS = 86_400
"""History entries live this much longer than JOB_TTL_SECONDS (a job's hash outlives its
creation by its run time); past that they are trimmed."""

HISTORY_TRIM_CHANCE = 0.01
"""Share of job creations that also trim the owner's history of entries past their life."""

HISTORY_SCAN_SLACK = 32
"""Extra entries read per page, to step over expired ones and ties in creation time."""


class History:
    """The history reads of the job store (``redis`` and ``ttl_seconds`` are the store's)."""

    redis: redis.Redis
    ttl_seconds: int

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
            # The records the page needs first; the slack's only when some were gone or had
            # moved (a page of 20 read 53 hashes: 60 % of its Redis time, bench/volume.py).
            wanted = limit + 1 - len(found)
            for chunk in (rows[:wanted], rows[wanted:]):
                if chunk and len(found) <= limit:
                    position = self._read_rows(owner, states, chunk, found, limit) or position
            if len(rows) < batch:
                break
        page = found[:limit]
        more = len(found) > limit
        return [job for _, job in page], ((page[-1][0], page[-1][1].job_id) if more and page else None)

    def _read_rows(
        self, owner: str, states: list[JobState], rows: list[tuple[int, str, JobState]],
        found: list[tuple[int, Job]], limit: int,
    ) -> tuple[int, str] | None:  # fmt: skip
        """Read ``rows``' records in one round trip, adding to ``found`` those still in
        ``states`` until it holds ``limit`` + 1; drop the entries whose record expired.
        Returns the position of the last row looked at."""
        pipe = self.redis.pipeline(transaction=False)
        for _, job_id, _ in rows:
            pipe.hgetall(job_key(job_id))
        stale = self.redis.pipeline(transaction=False)
        position = None
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
        return position

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
