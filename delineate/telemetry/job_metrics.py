"""Worker metrics, kept in Redis: what a job's end, a retry, a webhook delivery and a
worker's running-job count write (``/metrics`` reads them at scrape time, in
:mod:`delineate.api.metrics`).

Imports redis only, never Flask or Celery: the job store's terminal hook runs in the
worker and in the API alike.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import redis

from delineate.store import errorlog
from delineate.telemetry import timeline
from delineate.telemetry.metrics import (
    BUNDLE_SIZE_BUCKETS,
    BUNDLE_SIZE_KEY,
    COUNTERS_KEY,
    JOB_DURATION_BUCKETS,
    JOB_DURATION_KEY,
    WEBHOOK_DELIVERIES_KEY,
    WORKERS_KEY,
    bucket_field,
)
from delineate.telemetry.tracing import current_trace_id

logger = logging.getLogger(__name__)

WORKER_HEARTBEAT_SECONDS = 10.0
"""How often a worker re-states its running-job count in Redis, in seconds."""

PUBLISH_DELAY_SECONDS = 0.2
"""How soon after a job starts or ends a worker re-states its running-job count, in seconds."""


def _histogram_commands(key: str, buckets: Sequence[float], value: float) -> list[tuple[Any, ...]]:
    """Count ``value`` into a histogram hash: cumulative buckets, sum and count."""
    commands: list[tuple[Any, ...]] = [("HINCRBY", key, bucket_field(bound), 1) for bound in buckets if value <= bound]
    return [*commands, ("HINCRBYFLOAT", key, "sum", value), ("HINCRBY", key, "count", 1)]


def _seconds_between(start: str, end: str) -> float | None:
    try:
        return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except (TypeError, ValueError):
        return None


def terminal_job_commands(job: Any) -> list[tuple[Any, ...]]:
    """The Redis commands that count a job that reached a terminal state (the duration and
    size histograms, the console's timeline, and the error log for a failed job). The count
    by state (JOBS_KEY) is not among them: the update script adds it with the terminal write.

    ``job`` is a :class:`delineate.models.Job`. Sent by the job store's terminal hook,
    which runs exactly once per job (the update script refuses a second terminal write),
    so a redelivered task or a cancel racing a worker never counts twice.
    """
    state = str(job.status.value)
    commands: list[tuple[Any, ...]] = list(timeline.terminal_commands(state))
    if state == "failed":
        record = errorlog.entry("worker", job.error or "The job failed.", jobId=job.job_id, traceId=current_trace_id())
        commands += errorlog.add_commands(job.owner, record)
    duration = _seconds_between(job.created_at, job.completed_at or job.updated_at)
    if duration is not None:
        commands += _histogram_commands(JOB_DURATION_KEY, JOB_DURATION_BUCKETS, duration)
    if job.status.value == "completed" and job.size is not None:
        commands += _histogram_commands(BUNDLE_SIZE_KEY, BUNDLE_SIZE_BUCKETS, float(job.size))
    return commands


def count_terminal_jobs(store: Any) -> None:
    """Count every job ``store`` sees become terminal (API and worker alike), in one round trip."""

    def count(job: Any) -> None:
        try:
            store.direct.execute(*terminal_job_commands(job))
        except redis.RedisError as exc:  # metrics must never fail a job
            logger.warning("metrics: could not count job %s: %s", job.job_id, exc)

    store.terminal_hooks.append(count)


def record_retry(client: redis.Redis) -> None:
    client.hincrby(COUNTERS_KEY, "retries", 1)


def record_webhook_delivery(outcome: str, client: redis.Redis) -> None:
    """Count one webhook delivery attempt by outcome (``delivered``, ``retrying``, ``failed``...)."""
    try:
        client.hincrby(WEBHOOK_DELIVERIES_KEY, outcome, 1)
    except redis.RedisError as exc:
        logger.warning("could not count a webhook delivery: %s", exc)


class RunningJobs:
    """How many jobs this worker process runs now, re-stated in Redis on change and every heartbeat.

    Each process writes its own field (``host:pid``) with a timestamp, so a killed
    worker's count stops counting once it is stale instead of staying forever.
    """

    def __init__(self, client: redis.Redis, worker_id: str | None = None) -> None:
        self.client = client
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.running = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()
        #: Called every WORKER_HEARTBEAT_SECONDS (and at start) from the heartbeat thread:
        #: the worker re-registers its pool with the fair share.
        self.on_heartbeat: list[Callable[[], None]] = []
        self._beaten_at = 0.0

    def change(self, delta: int) -> None:
        """Count a job in or out; the heartbeat thread publishes within PUBLISH_DELAY_SECONDS
        (jobs start and end by the hundred per second: one write per change was a round
        trip per job for a gauge nobody reads that often)."""
        with self._lock:
            self.running = max(0, self.running + delta)
        self._changed.set()

    def publish(self) -> None:
        value = json.dumps({"running": self.running, "at": time.time()})
        try:
            self.client.hset(WORKERS_KEY, self.worker_id, value)
        except redis.RedisError as exc:
            logger.warning("could not publish the running-job count: %s", exc)

    def start(self) -> None:
        self.publish()
        self._heartbeat()
        threading.Thread(target=self._beat, name="metrics-heartbeat", daemon=True).start()

    def _heartbeat(self) -> None:
        self._beaten_at = time.monotonic()
        for hook in self.on_heartbeat:
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - Redis away: the next heartbeat tries again
                logger.warning("worker heartbeat: %s", exc)

    def _beat(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(WORKER_HEARTBEAT_SECONDS)
            if self._changed.is_set():
                time.sleep(PUBLISH_DELAY_SECONDS)  # gather the changes of the next moment
                self._changed.clear()
            if not self._stop.is_set():
                self.publish()
                if time.monotonic() - self._beaten_at >= WORKER_HEARTBEAT_SECONDS:
                    self._heartbeat()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.hdel(WORKERS_KEY, self.worker_id)
        except redis.RedisError:
            pass
