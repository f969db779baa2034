"""Prometheus metrics: ``GET /metrics`` on the API, for the API and the workers alike.

Two kinds, kept in two places (ARCHITECTURE.md, "Metrics across processes"):

- **API metrics** (requests, latency, open SSE streams; :mod:`delineate.api.metrics`) are
  counted in the process that serves the request, with prometheus-client's multiprocess
  mode when PROMETHEUS_MULTIPROC_DIR is set (``deploy/gunicorn.conf.py`` sets it): each
  gunicorn worker writes its own mmap file and ``/metrics``, whichever worker answers,
  sums them. No Redis round trip per request.
- **Worker metrics** (jobs by terminal state, job duration, bundle size, retries,
  webhook deliveries, jobs in progress; :mod:`delineate.telemetry.job_metrics`) are kept in Redis
  hashes that every Celery worker process writes at most a few times per job, and that
  ``/metrics`` reads at scrape time, together with the queue depth (LLEN of the Celery
  queue). So any number of workers on any hosts need no exporter of their own and
  nothing to discover.

This module holds what both sides share. It imports neither Flask nor prometheus-client:
prometheus-client chooses its multiprocess mode when it is first imported, so only
``metrics.api`` (the API, after PROMETHEUS_MULTIPROC_DIR is set) may load it.
"""

from __future__ import annotations

import logging

from delineate.store.keys import METRICS_PREFIX

logger = logging.getLogger(__name__)

PREFIX = METRICS_PREFIX
"""The worker metrics' Redis hashes: ``delineate:metrics:*``."""

JOBS_KEY = f"{PREFIX}jobs"
JOB_DURATION_KEY = f"{PREFIX}job_duration"
BUNDLE_SIZE_KEY = f"{PREFIX}bundle_size"
COUNTERS_KEY = f"{PREFIX}counters"
WEBHOOK_DELIVERIES_KEY = f"{PREFIX}webhooks"
WORKERS_KEY = f"{PREFIX}workers"

WORKER_STALE_SECONDS = 35.0
"""A worker silent for this long (killed) no longer counts towards jobs in progress, in seconds."""

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


def bucket_field(bound: float) -> str:
    """The hash field of a histogram bucket kept in Redis (written by workers, read at scrape)."""
    return f"le:{bound:g}"
