"""The fault schedule of a chaos run: drawn from a seed, so a failing seed replays exactly.

Faults start a few seconds apart (GAP_SECONDS), so a stall often still lasts when the next
fault begins: they come one at a time and overlapping. Two faults of the same target never
overlap (Redis cannot be paused while it restarts): a fault whose target is still busy
starts once it is free. Everything here is pure; ``bench/chaos/faults.py`` carries it out.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

KILL_JOB_WORKER = "kill-job-worker"
HANG_JOB_WORKER = "hang-job-worker"
KILL_API_WORKER = "kill-api-worker"
KILL_SWEEPER = "kill-sweeper"
STOP_REDIS = "stop-redis"
STOP_S3 = "stop-s3"
RESTART_REDIS = "restart-redis"
WEBHOOK_500 = "webhook-500"
FAILOVER = "failover"

KINDS: tuple[str, ...] = (
    KILL_JOB_WORKER, HANG_JOB_WORKER, KILL_API_WORKER, KILL_SWEEPER, STOP_REDIS, STOP_S3, RESTART_REDIS,
    WEBHOOK_500,
)  # fmt: skip
"""Every kind a run without ``--ha`` draws from (FAILOVER is added with it)."""

TARGET: dict[str, str] = {
    KILL_JOB_WORKER: "job-worker",
    HANG_JOB_WORKER: "job-worker",
    KILL_API_WORKER: "api",
    KILL_SWEEPER: "sweeper",
    STOP_REDIS: "redis",
    RESTART_REDIS: "redis",
    FAILOVER: "redis",
    STOP_S3: "s3",
    WEBHOOK_500: "receiver",
}

DURATION: dict[str, tuple[float, float]] = {
    HANG_JOB_WORKER: (12.0, 16.0),  # past the run's liveness deadline: the worker is replaced
    STOP_REDIS: (1.0, 8.0),
    STOP_S3: (1.0, 10.0),
    WEBHOOK_500: (60.0, 60.0),
}
"""Seconds a lasting fault lasts (drawn between the two); the others are instant."""

GAP_SECONDS = (5.0, 15.0)
"""Between the starts of two faults drawn in turn."""

WARM_UP_SECONDS = 5.0
"""The load runs this long before the first fault."""

QUIET_TAIL_SECONDS = 5.0
"""No fault starts this close to the end of the load."""


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds after the load started."""
    kind: str
    seconds: float = 0.0
    """How long it lasts (0: a kill, a restart or a failover)."""
    which: int = 0
    """Which of several (job workers, API workers) it hits, modulo their number."""

    @property
    def target(self) -> str:
        return TARGET[self.kind]

    def describe(self) -> str:
        lasting = f" for {self.seconds:.1f} s" if self.seconds else ""
        return f"{self.at:6.1f} s  {self.kind}{lasting}"


def make_schedule(seed: int, length: float, ha: bool = False) -> list[Fault]:
    """The faults of a run of ``length`` seconds, the same for the same arguments."""
    rng = random.Random(seed)
    kinds = (*KINDS, FAILOVER) if ha else KINDS
    busy_until: dict[str, float] = {}
    faults: list[Fault] = []
    drawn_at = WARM_UP_SECONDS + rng.uniform(0, GAP_SECONDS[0])
    while drawn_at < length - QUIET_TAIL_SECONDS:
        kind = rng.choice(kinds)
        low, high = DURATION.get(kind, (0.0, 0.0))
        seconds = round(rng.uniform(low, high), 1)
        which = rng.randrange(1_000)
        at = math.ceil(max(drawn_at, busy_until.get(TARGET[kind], 0.0)) * 10) / 10  # never before it is free
        if at < length - QUIET_TAIL_SECONDS:
            faults.append(Fault(at, kind, seconds, which))
            # a restart or a failover keeps its target busy while it comes back
            busy_until[TARGET[kind]] = at + max(seconds, 3.0) + 0.5
        drawn_at += rng.uniform(*GAP_SECONDS)
    return sorted(faults, key=lambda fault: fault.at)


def counts(faults: list[Fault]) -> dict[str, int]:
    """Faults by kind, in the order of KINDS (then FAILOVER), zero counts left out."""
    order = (*KINDS, FAILOVER)
    return {kind: n for kind in order if (n := sum(1 for f in faults if f.kind == kind))}
