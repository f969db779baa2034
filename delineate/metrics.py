"""Prometheus metrics: ``GET /metrics`` on the API, for the API and the workers alike.

Two kinds, kept in two places (ARCHITECTURE.md, "Metrics across processes"):

- **API metrics** (requests, latency, open SSE streams) are counted in the process
  that serves the request, with prometheus-client's multiprocess mode when
  PROMETHEUS_MULTIPROC_DIR is set (``deploy/gunicorn.conf.py`` sets it): each gunicorn
  worker writes its own mmap file and ``/metrics``, whichever worker answers, sums
  them. No Redis round trip per request.
- **Worker metrics** (jobs by terminal state, job duration, bundle size, retries,
  webhook deliveries, jobs in progress) are kept in Redis hashes that every Celery
  worker process writes at most a few times per job, and that ``/metrics`` reads at
  scrape time, together with the queue depth (LLEN of the Celery queue). So any
  number of workers on any hosts need no exporter of their own and nothing to discover.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import redis
from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from delineate.config import Settings
from delineate.logs import AccessLog
from delineate.redis_clients import redis_client
from delineate.task_queue import CELERY_QUEUE, PREPARE_DOWNLOAD

logger = logging.getLogger(__name__)

PREFIX = "delineate:metrics:"

WORKER_HEARTBEAT_SECONDS = 10.0
"""How often a worker re-states its running-job count in Redis, in seconds."""

PUBLISH_DELAY_SECONDS = 0.2
"""How soon after a job starts or ends a worker re-states its running-job count, in seconds."""

WORKER_STALE_SECONDS = 35.0
"""A worker silent for this long (killed) no longer counts towards jobs in progress, in seconds."""

SCRAPE_REDIS_TIMEOUT_SECONDS = 1.0
"""Socket timeout of the Redis reads behind /metrics and /v1/stats, in seconds."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency histogram buckets, in seconds."""

JOB_DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
"""Job duration (creation to terminal state) histogram buckets, in seconds."""

BUNDLE_SIZE_BUCKETS = (
    64 * 1024,
    256 * 1024,
    1024**2,
    4 * 1024**2,
    16 * 1024**2,
    64 * 1024**2,
    256 * 1024**2,
    1024**3,
    4 * 1024**3,
)
"""Result size histogram buckets, in bytes."""

# -- per-process metrics (API) ------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "delineate_http_requests_total", "HTTP requests answered, by route and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "delineate_http_request_duration_seconds",
    "Time the app spent on a request (to the response headers), by route and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
SSE_STREAMS_OPEN = Gauge(
    "delineate_sse_streams_open",
    "Server-Sent Event streams open now, over the API processes alive.",
    multiprocess_mode="livesum",
)


@contextmanager
def sse_stream_open() -> Iterator[None]:
    """Count an SSE stream as open while the block runs (wrap the stream generator's body)."""
    SSE_STREAMS_OPEN.inc()
    try:
        yield
    finally:
        SSE_STREAMS_OPEN.dec()


REQUEST_FLUSH_SECONDS = 0.25
"""How often a process adds its request counts to the shared metric files, in seconds."""


class _Tally:
    """One (method, route, status): totals counted so far, and how much is flushed."""

    __slots__ = ("buckets", "count", "flushed_buckets", "flushed_count", "flushed_sum", "sum")

    def __init__(self, size: int) -> None:
        self.count = self.flushed_count = 0
        self.sum = self.flushed_sum = 0.0
        self.buckets = [0] * size
        self.flushed_buckets = [0] * size


class RequestMetrics:
    """Request counts and latencies, tallied in the process and flushed into
    ``delineate_http_requests_total`` / ``delineate_http_request_duration_seconds``
    every REQUEST_FLUSH_SECONDS (and before this process answers a scrape).

    Why not observe each request straight into prometheus-client: in multiprocess mode
    every update takes a lock and writes the mmap'd file, and a counter plus a histogram
    cost about 35,000 interpreter instructions per request (callgrind), a tenth of a
    bare hello-world. A tally is a few additions; a flush is one update per label set
    and bucket that moved. Totals only grow and a flush sends the difference, so no
    request is lost or counted twice; another process's scrape sees a request at most
    REQUEST_FLUSH_SECONDS late.

    The flush writes each histogram bucket and the sum through the histogram child's
    values (prometheus-client keeps them per bucket); ``tests/test_unit_observability.py``
    checks that the exposition equals observing each request.
    """

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str, int], _Tally] = {}
        self._bounds = list(LATENCY_BUCKETS)
        self._pid = 0
        self._lock = threading.Lock()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        tally = self._tallies.get((method, route, status))
        if tally is None:
            tally = self._tallies.setdefault((method, route, status), _Tally(len(self._bounds) + 1))
        tally.count += 1
        tally.sum += seconds
        tally.buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        if self._pid != os.getpid():
            self._start_flusher()

    def _start_flusher(self) -> None:
        self._pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="delineate-request-metrics", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(REQUEST_FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:
                logger.exception("metrics: could not flush request counts")

    def flush(self) -> None:
        with self._lock:
            for (method, route, status), tally in list(self._tallies.items()):
                count, total = tally.count, tally.sum
                if count == tally.flushed_count:
                    continue
                labels = (method, route, str(status))
                HTTP_REQUESTS.labels(*labels).inc(count - tally.flushed_count)
                child = HTTP_LATENCY.labels(*labels)
                child._sum.inc(total - tally.flushed_sum)
                for index, value in enumerate(tally.buckets):
                    if value != tally.flushed_buckets[index]:
                        child._buckets[index].inc(value - tally.flushed_buckets[index])
                        tally.flushed_buckets[index] = value
                tally.flushed_count, tally.flushed_sum = count, total


REQUEST_METRICS = RequestMetrics()


class RequestObserver:
    """Counts, times and logs every request (an ``after_request`` hook)."""

    def __init__(self) -> None:
        self.metrics = REQUEST_METRICS
        self.access = AccessLog()

    def __call__(self, response: Response) -> Response:
        req, ctx = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        started = ctx.get("started")
        duration = time.perf_counter() - started if started is not None else 0.0
        rule = req.url_rule
        route = rule.rule if rule is not None else "unmatched"  # bounded label values: never the raw path
        status, method = response.status_code, req.method
        self.metrics.observe(method, route, status, duration)
        job_id = ctx.get("job_id") or (req.view_args or {}).get("job_id")
        self.access.write(method, route, req.path, status, duration, ctx.get("request_id", ""), job_id)
        return response


def init_app(app: Flask) -> None:
    """Count and log every request, and every job that ends here; serve ``/metrics``
    (no API key: keep it on the internal network)."""
    app.after_request(RequestObserver())
    count_terminal_jobs(app.extensions["delineate"].store)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


def metrics_view() -> Response:
    from delineate.services import services

    REQUEST_METRICS.flush()  # this process's latest requests count in this very scrape
    registry = CollectorRegistry()
    if _multiprocess():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # reads PROMETHEUS_MULTIPROC_DIR itself
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(RedisCollector(scrape_client(services().settings)))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _multiprocess() -> bool:
    """Whether prometheus-client chose multiprocess mode at import (PROMETHEUS_MULTIPROC_DIR was set)."""
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


class _Forward(Collector):
    """The process's default registry, inside a registry of the scrape."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        yield from self.source.collect()


# -- worker metrics, kept in Redis ------------------------------------------------------------

_clients: dict[tuple[str, str], redis.Redis] = {}
_clients_lock = threading.Lock()


def scrape_client(settings: Settings) -> redis.Redis:
    """A short-fused client for the scrape-time reads (one per process and URL)."""
    key = (settings.redis_url, settings.celery_broker_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = redis_client(
                settings,
                None,
                decode_responses=True,
                socket_connect_timeout=SCRAPE_REDIS_TIMEOUT_SECONDS,
                socket_timeout=SCRAPE_REDIS_TIMEOUT_SECONDS,
                max_connections=20,
            )
            client.broker = (  # type: ignore[attr-defined]
                client
                if settings.celery_broker_url == settings.redis_url
                else redis_client(
                    settings,
                    settings.celery_broker_url,
                    socket_connect_timeout=SCRAPE_REDIS_TIMEOUT_SECONDS,
                    socket_timeout=SCRAPE_REDIS_TIMEOUT_SECONDS,
                    max_connections=20,
                )
            )
            _clients[key] = client
        return client


def _bucket_field(bound: float) -> str:
    return f"le:{bound:g}"


def _histogram_commands(key: str, buckets: Sequence[float], value: float) -> list[tuple[Any, ...]]:
    """Count ``value`` into a histogram hash: cumulative buckets, sum and count."""
    commands: list[tuple[Any, ...]] = [("HINCRBY", key, _bucket_field(bound), 1) for bound in buckets if value <= bound]
    return [*commands, ("HINCRBYFLOAT", key, "sum", value), ("HINCRBY", key, "count", 1)]


def _seconds_between(start: str, end: str) -> float | None:
    try:
        return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except (TypeError, ValueError):
        return None


def terminal_job_commands(job: Any) -> list[tuple[Any, ...]]:
    """The Redis commands that count a job that reached a terminal state.

    ``job`` is a :class:`delineate.models.Job`. Sent by the job store's terminal hook,
    which runs exactly once per job (the update script refuses a second terminal write),
    so a redelivered task or a cancel racing a worker never counts twice.
    """
    commands: list[tuple[Any, ...]] = [("HINCRBY", f"{PREFIX}jobs", str(job.status.value), 1)]
    duration = _seconds_between(job.created_at, job.completed_at or job.updated_at)
    if duration is not None:
        commands += _histogram_commands(f"{PREFIX}job_duration", JOB_DURATION_BUCKETS, duration)
    if job.status.value == "completed" and job.size is not None:
        commands += _histogram_commands(f"{PREFIX}bundle_size", BUNDLE_SIZE_BUCKETS, float(job.size))
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
    client.hincrby(f"{PREFIX}counters", "retries", 1)


def record_webhook_delivery(outcome: str, client: redis.Redis | None = None) -> None:
    """Count one webhook delivery attempt by outcome (``delivered``, ``retrying``, ``failed``...).

    Call it from the worker, inside the task (``client`` defaults to the app's Redis).
    """
    if client is None:
        from delineate.services import services

        client = services().redis
    try:
        client.hincrby(f"{PREFIX}webhooks", outcome, 1)
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
            self.client.hset(f"{PREFIX}workers", self.worker_id, value)
        except redis.RedisError as exc:
            logger.warning("could not publish the running-job count: %s", exc)

    def start(self) -> None:
        self.publish()
        threading.Thread(target=self._beat, name="metrics-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(WORKER_HEARTBEAT_SECONDS)
            if self._changed.is_set():
                time.sleep(PUBLISH_DELAY_SECONDS)  # gather the changes of the next moment
                self._changed.clear()
            if not self._stop.is_set():
                self.publish()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.hdel(f"{PREFIX}workers", self.worker_id)
        except redis.RedisError:
            pass


def jobs_in_progress(client: redis.Redis, now: float | None = None) -> int:
    """Sum of the running-job counts of the workers heard from recently (drops stale ones)."""
    now = time.time() if now is None else now
    total = 0
    stale = []
    for worker_id, raw in client.hgetall(f"{PREFIX}workers").items():
        try:
            entry = json.loads(raw)
            running, at = int(entry["running"]), float(entry["at"])
        except (ValueError, KeyError, TypeError):
            stale.append(worker_id)
            continue
        if now - at > WORKER_STALE_SECONDS:
            stale.append(worker_id)
        else:
            total += running
    if stale:
        client.hdel(f"{PREFIX}workers", *stale)
    return total


def queue_depth(client: redis.Redis) -> int:
    """Messages waiting in the Celery queue (the Redis list ``celery`` on the broker)."""
    broker = getattr(client, "broker", client)
    return int(broker.llen(CELERY_QUEUE))


def stats(client: redis.Redis) -> dict[str, Any]:
    """The few live numbers of ``/v1/stats``."""
    jobs = {k: int(v) for k, v in client.hgetall(f"{PREFIX}jobs").items()}
    return {
        "queueDepth": queue_depth(client),
        "jobsInProgress": jobs_in_progress(client),
        "jobsFinished": {state: jobs.get(state, 0) for state in ("completed", "failed", "cancelled")},
    }


class RedisCollector(Collector):
    """The worker metrics, read from Redis at scrape time (nothing when Redis is down)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Any]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for name in ("jobs", "job_duration", "bundle_size", "counters", "webhooks"):
                pipe.hgetall(f"{PREFIX}{name}")
            jobs, duration, size, counters, webhooks = pipe.execute()
            depth = queue_depth(self.client)
            running = jobs_in_progress(self.client)
        except redis.RedisError as exc:
            logger.warning("metrics: Redis unavailable, worker metrics left out: %s", exc)
            return
        family = CounterMetricFamily("delineate_jobs", "Jobs that reached a terminal state.", labels=["status"])
        for state in ("completed", "failed", "cancelled"):
            family.add_metric([state], float(jobs.get(state, 0)))
        yield family
        yield GaugeMetricFamily("delineate_jobs_in_progress", "Jobs running on a worker now.", value=running)
        yield GaugeMetricFamily("delineate_queue_depth", "Messages waiting in the Celery queue.", value=depth)
        yield CounterMetricFamily(
            "delineate_job_retries", "Task retries after transient errors.", value=float(counters.get("retries", 0))
        )
        hooks = CounterMetricFamily("delineate_webhook_deliveries", "Webhook delivery attempts.", labels=["outcome"])
        for outcome, count in sorted(webhooks.items()):
            hooks.add_metric([outcome], float(count))
        yield hooks
        yield _histogram(
            "delineate_job_duration_seconds",
            "Seconds from a job's creation to its terminal state.",
            JOB_DURATION_BUCKETS,
            duration,
        )
        yield _histogram(
            "delineate_bundle_size_bytes", "Size of a completed job's result, in bytes.", BUNDLE_SIZE_BUCKETS, size
        )


def _histogram(name: str, doc: str, buckets: Sequence[float], raw: dict[str, str]) -> HistogramMetricFamily:
    pairs = [(f"{bound:g}", float(raw.get(_bucket_field(bound), 0))) for bound in buckets]
    pairs.append(("+Inf", float(raw.get("count", 0))))
    return HistogramMetricFamily(name, doc, buckets=pairs, sum_value=float(raw.get("sum", 0)))


# -- worker side: Celery signals ----------------------------------------------------------


def connect_worker_signals(get_services: Callable[[], Any]) -> RunningJobs:
    """Count jobs, retries and running jobs from this worker process's Celery signals."""
    from celery.signals import task_postrun, task_prerun, task_retry, worker_shutdown

    svc = get_services()
    running = RunningJobs(svc.redis)

    def ours(sender: Any) -> bool:
        return getattr(sender, "name", None) == PREPARE_DOWNLOAD

    @task_prerun.connect(weak=False)
    def _started(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            running.change(+1)

    @task_postrun.connect(weak=False)
    def _finished(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if ours(sender) and task_id:
            running.change(-1)

    @task_retry.connect(weak=False)
    def _retried(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            try:
                record_retry(svc.redis)
            except redis.RedisError as exc:
                logger.warning("metrics: could not count a retry: %s", exc)

    @worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        running.stop()

    running.start()
    return running
