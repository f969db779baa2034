"""The retry policy: which errors pass, and how long to wait before the next try (the task's
retries of a job, and the webhook schedule, both by :func:`backoff_seconds`)."""

from __future__ import annotations

import random

import redis

from delineate.errors import SourceUnavailable

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    SourceUnavailable,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)
"""Errors that pass: the task retries these with backoff, and nothing else."""


def backoff_seconds(retries: int, base: float, rng: random.Random | None = None, cap: float | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random.

    Retry ``n`` (0-based) waits between ``base * 2**n / 2`` and ``base * 2**n`` (that
    ceiling capped at ``cap``), so five retries at the default base of 2 s span 31-62 s
    (long enough to ride out a store restart) while workers that failed together do not
    retry in lockstep.
    """
    ceiling = base * (2 ** min(retries, 40))
    if cap is not None:
        ceiling = min(ceiling, cap)
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
