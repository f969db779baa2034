"""Which of a job's progress writes are also published as events (at most ~10 a second)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from delineate.models import Job

PUBLISH_INTERVAL_SECONDS = 0.1
"""Least time between two progress events of one job, in seconds (at most ~10 events/s).
Phase changes and terminal states always publish; the stored hash is always written."""


@dataclass
class PublishThrottle:
    """Decides which writes of one job are also published as events."""

    interval_seconds: float = PUBLISH_INTERVAL_SECONDS
    clock: Callable[[], float] = time.monotonic
    _last_at: float | None = None
    _last_phase: str | None = None

    def should_publish(self, job: Job) -> bool:
        now = self.clock()
        due = (
            job.status.terminal
            or job.phase.value != self._last_phase
            or self._last_at is None
            or now - self._last_at >= self.interval_seconds
        )
        if due:
            self._last_at, self._last_phase = now, job.phase.value
        return due
