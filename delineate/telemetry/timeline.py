"""The console's charts: ``/v1/stats/timeline``, figures of the last hour in 10 s steps,
for every API process and worker together, without a Prometheus server.

Each step is one Redis hash, ``metrics:timeline:{step}`` (``step`` = epoch seconds // STEP),
that expires an hour after it ends:

- ``n``, ``e4``, ``e5``: requests answered, 4xx and 5xx among them; ``h{i}``: requests whose
  latency fell in bucket ``i`` of :data:`LATENCY_BOUNDS`. Tallied per API process with the
  request counts it already keeps (:class:`StepTally`, a few additions per request) and
  added with ``HINCRBY`` by that process's flusher, never by the request.
- ``completed``, ``failed``, ``cancelled``: jobs that reached that state, counted by the
  job store's terminal hook in the same round trip as the job metrics
  (:func:`terminal_commands`).
- ``queue``, ``running``: queue depth and jobs in progress, sampled once a step by the API
  processes' flushers (the last sample of a step wins).

A read is at most one pipeline of ``60 * 60 / STEP`` ``HGETALL``\\s, whatever the traffic; in
steady running far fewer: each process keeps the steps that are settled (:class:`StepCache`).
Imports neither Flask nor prometheus-client.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from delineate.telemetry.metrics import PREFIX

STEP_SECONDS = 10
"""Width of one stored step, in seconds."""

KEEP_SECONDS = 3600 + 2 * STEP_SECONDS
"""How long a step's hash lives after it starts, in seconds (the longest window, plus margin)."""

MAX_MINUTES = 60
DEFAULT_MINUTES = 15

MAX_BUCKETS = 120
"""Most buckets one answer holds: longer windows merge steps (60 minutes: 30 s buckets)."""

LATENCY_BOUNDS: tuple[float, ...] = tuple(0.00025 * 1.2**i for i in range(69))
"""Upper bounds of the latency buckets, in seconds: 0.25 ms to ~60 s, each 20 % wider than the
last, so a percentile read from them is within 20 % of the true value. One more bucket
holds what is slower."""

JOB_FIELDS = {"completed": "jobsCompleted", "failed": "jobsFailed", "cancelled": "jobsCancelled"}
"""Stored field of a terminal state → its name in the answer."""


def step_key(step: int) -> str:
    return f"{PREFIX}timeline:{step}"


def current_step(now: float | None = None) -> int:
    return int(time.time() if now is None else now) // STEP_SECONDS


def terminal_commands(state: str, now: float | None = None) -> list[tuple[Any, ...]]:
    """Count a job that reached ``state`` in the current step (sent with the job metrics)."""
    key = step_key(current_step(now))
    return [("HINCRBY", key, state, 1), ("EXPIRE", key, KEEP_SECONDS)]


class StepTally:
    """One API process's request figures per step, not yet added to Redis.

    :meth:`add` runs on every request (a few additions); :meth:`drain` hands the flusher
    the Redis commands for everything added since the last drain.
    """

    __slots__ = ("_bounds", "_pending", "_step", "_values")

    def __init__(self) -> None:
        self._bounds = LATENCY_BOUNDS
        self._pending: dict[int, list[int]] = {}
        self._step = -1
        self._values: list[int] = []

    def add(self, status: int, seconds: float, now: float) -> None:
        step = int(now) // STEP_SECONDS
        if step != self._step:
            self._step = step
            values = self._pending.get(step)
            if values is None:
                values = self._pending[step] = [0] * (4 + len(self._bounds))
            self._values = values
        values = self._values
        values[0] += 1
        if status >= 400:
            values[1 if status < 500 else 2] += 1
        values[3 + bisect.bisect_left(self._bounds, seconds)] += 1

    def drain(self) -> dict[int, list[int]]:
        """Everything added since the last drain, by step; the tally starts afresh."""
        pending, self._pending, self._step = self._pending, {}, -1
        return pending

    def restore(self, pending: dict[int, list[int]]) -> None:
        """Add back what :meth:`drain` took (Redis did not take it); steps past their
        life are dropped, so a long outage keeps at most an hour of steps."""
        oldest = current_step() - KEEP_SECONDS // STEP_SECONDS
        for step, values in pending.items():
            if step < oldest:
                continue
            mine = self._pending.setdefault(step, [0] * len(values))
            for index, count in enumerate(values):
                mine[index] += count
        self._step = -1  # the current step's list may have been replaced

    @staticmethod
    def commands(pending: dict[int, list[int]]) -> list[tuple[Any, ...]]:
        """The ``HINCRBY``\\s (and ``EXPIRE``\\s) that add ``pending`` to the stored steps."""
        commands: list[tuple[Any, ...]] = []
        for step, values in pending.items():
            key = step_key(step)
            for index, count in enumerate(values):
                if count:
                    commands.append(("HINCRBY", key, _field(index), count))
            commands.append(("EXPIRE", key, KEEP_SECONDS))
        return commands


def _field(index: int) -> str:
    return ("n", "e4", "e5")[index] if index < 3 else f"h{index - 3}"


def sample_commands(queue_depth: int, running: int, now: float | None = None) -> list[tuple[Any, ...]]:
    """Record this step's queue depth and jobs in progress."""
    key = step_key(current_step(now))
    return [("HSET", key, "queue", queue_depth, "running", running), ("EXPIRE", key, KEEP_SECONDS)]


def step_for(minutes: int) -> int:
    """Seconds per answered bucket for a window of ``minutes`` (at most MAX_BUCKETS buckets)."""
    steps = minutes * 60 // STEP_SECONDS
    return STEP_SECONDS * max(1, math.ceil(steps / MAX_BUCKETS))


def window_steps(minutes: int, now: float | None = None) -> list[int]:
    """The stored steps of the last ``minutes``, oldest first, ending with the current one."""
    last = current_step(now)
    return list(range(last - minutes * 60 // STEP_SECONDS + 1, last + 1))


def percentile(histogram: Sequence[int], total: int, q: float) -> float | None:
    """The ``q`` quantile (0-1) in milliseconds, interpolated within its bucket; None without requests."""
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = LATENCY_BOUNDS[index - 1] if index > 0 else 0.0
            upper = LATENCY_BOUNDS[index] if index < len(LATENCY_BOUNDS) else LATENCY_BOUNDS[-1] * 1.2
            fraction = (rank - seen) / count
            return round((lower + (upper - lower) * fraction) * 1000, 2)
        seen += count
    return round(LATENCY_BOUNDS[-1] * 1000, 2)


FIELDS: tuple[str, ...] = (
    "n", "e4", "e5", *JOB_FIELDS, "queue", "running", *(f"h{i}" for i in range(len(LATENCY_BOUNDS) + 1)),
)  # fmt: skip
"""A stored step's fields, in the order :func:`parse` lays them out."""
_INDEX = {name: index for index, name in enumerate(FIELDS)}
_QUEUE, _RUNNING, _HISTOGRAM = _INDEX["queue"], _INDEX["running"], _INDEX["h0"]
_JOBS = tuple((_INDEX[state], name) for state, name in JOB_FIELDS.items())
NO_SAMPLE = -1


def parse(stored: Mapping[Any, Any]) -> list[int]:
    """A stored step's hash as one list of :data:`FIELDS` (``queue`` and ``running``:
    :data:`NO_SAMPLE` when the step has none). Unknown fields are ignored."""
    values = [0] * len(FIELDS)
    values[_QUEUE] = values[_RUNNING] = NO_SAMPLE
    index = _INDEX
    for name, value in stored.items():
        at = index.get(name if isinstance(name, str) else name.decode())
        if at is not None:
            values[at] = int(value)
    return values


SETTLED_SECONDS = 2 * STEP_SECONDS
"""A step this long past its end takes no more writes in normal running (a flusher writes
within a second), so its parsed values may be kept and not read again, in seconds."""

CACHE_SECONDS = 60.0
"""How long a settled step is kept before it is read again, in seconds: what a flusher
writes late (after a Redis outage) shows within this."""


class StepCache:
    """This process's parsed steps: a timeline read asks Redis only for the steps it has not
    got (the newest, and those kept past CACHE_SECONDS), at most the whole window."""

    def __init__(self) -> None:
        self._steps: dict[int, tuple[float, list[int]]] = {}
        self._lock = threading.Lock()

    def read(self, client: Any, steps: Sequence[int], now: float | None = None) -> list[list[int]]:
        """The parsed values of ``steps`` (oldest first), from the cache or one pipeline."""
        now = time.time() if now is None else now
        with self._lock:
            known = {step: self._steps.get(step) for step in steps}
        missing = [step for step, entry in known.items() if entry is None or now - entry[0] > CACHE_SECONDS]
        fetched: dict[int, list[int]] = {}
        if missing:
            pipe = client.pipeline(transaction=False)
            for step in missing:
                pipe.hgetall(step_key(step))
            fetched = {step: parse(stored) for step, stored in zip(missing, pipe.execute(), strict=True)}
        settled = current_step(now) - SETTLED_SECONDS // STEP_SECONDS
        with self._lock:
            for step, values in fetched.items():
                if step < settled:
                    self._steps[step] = (now, values)
            oldest = current_step(now) - KEEP_SECONDS // STEP_SECONDS
            for step in [step for step in self._steps if step < oldest]:
                del self._steps[step]
        return [fetched[step] if step in fetched else known[step][1] for step in steps]  # type: ignore[index]


@dataclass
class _Bucket:
    t: int
    values: list[int]

    def add(self, values: list[int]) -> None:
        mine = self.values
        for index in range(_QUEUE):
            mine[index] += values[index]
        for index in range(_HISTOGRAM, len(FIELDS)):
            mine[index] += values[index]
        if values[_QUEUE] != NO_SAMPLE:  # the bucket's latest sample
            mine[_QUEUE], mine[_RUNNING] = values[_QUEUE], values[_RUNNING]

    def to_json(self) -> dict[str, Any]:
        values = self.values
        requests, histogram = values[0], values[_HISTOGRAM:]
        answer: dict[str, Any] = {
            "t": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.t)),
            "requests": requests,
            "errors4xx": values[1],
            "errors5xx": values[2],
            "p50Ms": percentile(histogram, requests, 0.50),
            "p95Ms": percentile(histogram, requests, 0.95),
            "p99Ms": percentile(histogram, requests, 0.99),
        }
        answer.update({name: values[index] for index, name in _JOBS})
        answer["queueDepth"] = None if values[_QUEUE] == NO_SAMPLE else values[_QUEUE]
        answer["inProgress"] = None if values[_RUNNING] == NO_SAMPLE else values[_RUNNING]
        return answer


def build(minutes: int, steps: Sequence[int], parsed: Iterable[list[int]]) -> dict[str, Any]:
    """The answer of ``/v1/stats/timeline`` from the parsed steps (:func:`parse`, oldest first)."""
    width = step_for(minutes)
    per_bucket = width // STEP_SECONDS
    buckets: list[_Bucket] = []
    for index, (step, values) in enumerate(zip(steps, parsed, strict=True)):
        if index % per_bucket == 0:
            empty = [0] * len(FIELDS)
            empty[_QUEUE] = empty[_RUNNING] = NO_SAMPLE
            buckets.append(_Bucket(step * STEP_SECONDS, empty))
        buckets[-1].add(values)
    return {"stepSeconds": width, "buckets": [bucket.to_json() for bucket in buckets]}
