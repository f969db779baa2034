"""API metrics: requests, latency and open SSE streams, counted in this process;
``GET /metrics`` (these, summed over the API processes, plus the worker metrics read
from Redis) and the numbers of ``/v1/stats``.

With PROMETHEUS_MULTIPROC_DIR set (``deploy/gunicorn.conf.py``) each gunicorn worker
writes its own mmap file and ``/metrics``, whichever worker answers, sums them.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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

from delineate.api.recorder import ConsoleRecorder
from delineate.broker.queue import CELERY_QUEUE
from delineate.config import Settings
from delineate.models import TERMINAL_STATES, JobState
from delineate.redis_io.clients import redis_client
from delineate.telemetry.logs import AccessLog
from delineate.telemetry.metrics import (
    BUNDLE_SIZE_BUCKETS,
    BUNDLE_SIZE_KEY,
    COUNTERS_KEY,
    JOB_DURATION_BUCKETS,
    JOB_DURATION_KEY,
    JOBS_KEY,
    LATENCY_BUCKETS,
    WEBHOOK_DELIVERIES_KEY,
    WORKER_STALE_SECONDS,
    WORKERS_KEY,
    bucket_field,
)
from delineate.telemetry.timeline import StepCache

logger = logging.getLogger(__name__)

SCRAPE_REDIS_TIMEOUT_SECONDS = 1.0
"""Socket timeout of the Redis reads behind /metrics and /v1/stats, in seconds."""

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
METRIC_METHODS = frozenset({"GET", "POST", "DELETE", "HEAD", "OPTIONS"})
"""The values the ``method`` label takes, with ``other`` for any other method: the client
chooses the method, and each new one would be a new series in every scrape, for ever."""

ACCESS_METHOD_CHARS = 16
"""The access line keeps the method as sent, cut to this many characters."""

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
    values (prometheus-client keeps them per bucket); ``tests/unit/test_observability.py``
    checks that the exposition equals observing each request.
    """

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str, int], _Tally] = {}
        self._bounds = list(LATENCY_BUCKETS)
        self._pid = 0
        self._lock = threading.Lock()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in METRIC_METHODS:
            method = "other"
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
    """Counts, times and logs every request (an ``after_request`` hook).

    One hook for both: the access line (:class:`delineate.telemetry.logs.AccessLog`, which formats and
    writes it) is handed what the count already looked up; a second hook would fetch the
    request, ``g`` and the route again on every request, a path tuned to microseconds.
    """

    def __init__(self, recorder: ConsoleRecorder | None = None) -> None:
        self.metrics = REQUEST_METRICS
        self.access = AccessLog()
        self.recorder = recorder

    def __call__(self, response: Response) -> Response:
        req, ctx = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        started = ctx.get("started")
        duration = time.perf_counter() - started if started is not None else 0.0
        rule = req.url_rule
        route = rule.rule if rule is not None else "unmatched"  # bounded label values: never the raw path
        job_id = ctx.get("job_id") or (req.view_args or {}).get("job_id")
        self.record(req.method, route, req.path, response.status_code, duration, ctx.get("request_id", ""), job_id)
        return response

    def record(
        self, method: str, route: str, path: str, status: int, seconds: float, request_id: str, job_id: str | None
    ) -> None:
        """Count, time and log one answered request (Flask's or the fast lane's); an odd
        method is counted as ``other`` and logged cut to ACCESS_METHOD_CHARS."""
        self.metrics.observe(method, route, status, seconds)
        if self.recorder is not None:
            self.recorder.request(status, seconds)
        self.access.write(method[:ACCESS_METHOD_CHARS], route, path, status, seconds, request_id, job_id)


def init_app(app: Flask) -> None:
    """Count and log every request; serve ``/metrics`` (no API key: keep it on the
    internal network). Jobs that end here are counted by ``services.connect_store``."""
    client = scrape_client(app.extensions["delineate"].settings)
    recorder = app.extensions["delineate_console"] = ConsoleRecorder(
        client, lambda: (queue_depth(client), jobs_in_progress(client))
    )
    observer = app.extensions["delineate_observer"] = RequestObserver(recorder)
    app.extensions["delineate_timeline"] = StepCache()  # the settled steps /v1/stats/timeline read
    app.after_request(observer)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


def metrics_view() -> Response:
    from delineate.api.flask_app import services

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


# -- worker metrics, read from Redis at scrape time ----------------------------------------------

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


def jobs_in_progress(client: redis.Redis, now: float | None = None) -> int:
    """Sum of the running-job counts of the workers heard from recently (drops stale ones)."""
    now = time.time() if now is None else now
    total = 0
    stale = []
    for worker_id, raw in client.hgetall(WORKERS_KEY).items():
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
        client.hdel(WORKERS_KEY, *stale)
    return total


def queue_depth(client: redis.Redis) -> int:
    """Messages waiting in the Celery queue (the Redis list ``celery`` on the broker)."""
    broker = getattr(client, "broker", client)
    return int(broker.llen(CELERY_QUEUE))


def stats(client: redis.Redis) -> dict[str, Any]:
    """The few live numbers of ``/v1/stats``, of the whole service (open mode)."""
    jobs = {k: int(v) for k, v in client.hgetall(JOBS_KEY).items()}
    return {
        "queueDepth": queue_depth(client),
        "jobsInProgress": jobs_in_progress(client),
        "jobsFinished": {state.value: jobs.get(state.value, 0) for state in TERMINAL_STATES},
    }


def tenant_stats(counts: Mapping[str, int]) -> dict[str, Any]:
    """The same numbers for one tenant, from its jobs by state (``history_counts``): its
    queued jobs as the queue, its processing ones as in progress, its finished jobs whose
    records are kept (JOB_TTL_SECONDS). Nothing of the other tenants or the whole queue."""
    return {
        "queueDepth": counts.get(JobState.QUEUED.value, 0),
        "jobsInProgress": counts.get(JobState.PROCESSING.value, 0),
        "jobsFinished": {state.value: counts.get(state.value, 0) for state in TERMINAL_STATES},
    }


class RedisCollector(Collector):
    """The worker metrics, read from Redis at scrape time (nothing when Redis is down)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Any]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in (JOBS_KEY, JOB_DURATION_KEY, BUNDLE_SIZE_KEY, COUNTERS_KEY, WEBHOOK_DELIVERIES_KEY):
                pipe.hgetall(key)
            jobs, duration, size, counters, webhooks = pipe.execute()
            depth = queue_depth(self.client)
            running = jobs_in_progress(self.client)
        except redis.RedisError as exc:
            logger.warning("metrics: Redis unavailable, worker metrics left out: %s", exc)
            return
        family = CounterMetricFamily("delineate_jobs", "Jobs that reached a terminal state.", labels=["status"])
        for state in (s.value for s in TERMINAL_STATES):
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
    pairs = [(f"{bound:g}", float(raw.get(bucket_field(bound), 0))) for bound in buckets]
    pairs.append(("+Inf", float(raw.get("count", 0))))
    return HistogramMetricFamily(name, doc, buckets=pairs, sum_value=float(raw.get("sum", 0)))
