"""The per-process clients, built once per process: the API keeps them in
``app.extensions["delineate"]``, the worker on its Celery app (``celery.delineate``).

Each client is made on first use (``cached_property``): nothing connects at import or
in the app factory, a process only pays for the clients it uses (the worker never
builds the health-check clients), and a forked child builds its own.
:func:`connect_store` hangs what must happen when a job ends on the store, in the API
and the worker alike. Imports no web framework.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING

from redis import Redis

from delineate.broker.queue import CELERY_QUEUE, broker_is_the_store
from delineate.config import Settings
from delineate.config.tenants import TenantsHolder
from delineate.models import Job
from delineate.redis_io import lane_for
from delineate.redis_io.base import Lane
from delineate.redis_io.clients import no_retry, redis_client, sentinel_enabled
from delineate.redis_io.direct import DirectRedis
from delineate.redis_io.library import LibraryLane
from delineate.storage import Storage
from delineate.store import JobStore
from delineate.store.dispatch import share_workers
from delineate.store.replica_ack import ReplicaAck
from delineate.store.sweep_index import WEBHOOK_CLAIM_INTERVALS
from delineate.telemetry.logs import add_secrets

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from celery import Celery

REDIS_MAX_CONNECTIONS = 1000
"""Connections per process in the Redis pool (redis-py's default of 100 is too few for SSE)."""

REQUEST_ANSWER_SECONDS = 0.8
"""In the API, how long a Redis command may wait for its answer, in seconds: a request that
needs a stalled Redis answers 503 within a second (design.md, "Failure behaviour")."""

WORKER_ANSWER_SECONDS = 5.0
"""In the worker and other processes, the same deadline, in seconds: a job's write may wait
out a short stall (the task retries past it by the retry policy)."""

REQUEST_S3_ATTEMPTS = 1
"""In the API, tries of one object-store request (each within REQUEST_ANSWER_SECONDS): a
request that needs a stalled store answers 503 with Retry-After within a second, and its
client tries again; the worker's requests keep the storage defaults (``storage.client``)."""


def download_name(job: Job) -> str:
    return f"delineate-{job.job_id}.zip"


class Services:
    def __init__(self, settings: Settings, answer_seconds: float = WORKER_ANSWER_SECONDS) -> None:
        self.settings = settings
        self.answer_seconds = answer_seconds
        self.serves_requests = answer_seconds <= REQUEST_ANSWER_SECONDS  # the API's deadline

    @cached_property
    def redis(self) -> Redis:
        """The shared client. No hidden retries (redis-py's default waits with backoff and
        tries again, several deadlines in all): a caller hears within its deadline that Redis
        is away; behind Sentinel, quick retries of a lost connection only (a failover)."""
        return redis_client(
            self.settings,
            blocking_timeout=self.answer_seconds,
            decode_responses=True,
            max_connections=REDIS_MAX_CONNECTIONS,
            socket_connect_timeout=min(2.0, self.answer_seconds),
            socket_timeout=self.answer_seconds,
            health_check_interval=30,
            retry=no_retry(self.settings),
        )

    @cached_property
    def direct_redis(self) -> Lane:
        """The hot path's lane to the same Redis (rate limits, job reads and writes): ours
        with FAST_PATHS (the default), redis-py's client without."""
        return lane_for(self.redis, self.settings.fast_paths)

    @cached_property
    def tenants(self) -> TenantsHolder:
        """The tenants in force in this process (TENANTS_FILE, API_KEYS or open mode), reloaded
        when the file changes. Their keys and secrets never reach a log line.

        :raise ConfigError: the tenants do not load (at start-up: the entry point stops).
        """
        holder = TenantsHolder(self.settings)
        add_secrets(holder.current.secret_values())
        holder.on_change.append(lambda tenants: add_secrets(tenants.secret_values()))
        return holder

    @cached_property
    def storage(self) -> Storage:
        """The object store: in the API, one try within the request's deadline (a stalled
        store is a quick 503, never a request that hangs); elsewhere the storage defaults."""
        if self.serves_requests:
            return Storage(self.settings, timeout_seconds=self.answer_seconds, attempts=REQUEST_S3_ATTEMPTS)
        return Storage(self.settings)

    @cached_property
    def store(self) -> JobStore:
        return JobStore(
            self.redis,
            self.settings.job_ttl_seconds,
            presign=lambda job: self.storage.presign_reused(job.result_key, download_name(job)),
            direct=self.direct_redis,
            webhook_claim_seconds=WEBHOOK_CLAIM_INTERVALS * self.settings.sweep_interval_seconds,
            replica_ack=self.replica_ack,
            queue_key=CELERY_QUEUE if broker_is_the_store(self.settings) else "",
        )

    @cached_property
    def replica_ack(self) -> ReplicaAck | None:
        """Behind Sentinel, initiate's WAIT for a replica (its own lane: a WAIT must not
        hold up the shared one); None without Sentinel (no WAIT at all)."""
        if not sentinel_enabled(self.settings):
            return None
        timeout_ms = self.settings.redis_replica_ack_timeout_ms
        # The lane's deadline covers the WAIT's own timeout, so a long WAIT ends as "no
        # replica acknowledged" (503 not_replicated), never as a lane timeout.
        deadline = self.answer_seconds + timeout_ms / 1000
        if self.settings.fast_paths:
            return ReplicaAck(DirectRedis(self.redis.connection_pool, timeout_seconds=deadline), timeout_ms)
        client = redis_client(
            self.settings, decode_responses=True, socket_timeout=deadline, retry=no_retry(self.settings)
        )
        return ReplicaAck(LibraryLane(client), timeout_ms)

    # Short-fused clients for /health, so a hung dependency answers "error" within the
    # request's deadline (one try each: /health gives up on them at that deadline anyway).
    @cached_property
    def health_redis(self) -> Redis:
        return redis_client(
            self.settings,
            socket_connect_timeout=REQUEST_ANSWER_SECONDS,
            socket_timeout=REQUEST_ANSWER_SECONDS,
            max_connections=20,
            retry=no_retry(self.settings),
        )

    @cached_property
    def health_storage(self) -> Storage:
        return Storage(self.settings, timeout_seconds=REQUEST_ANSWER_SECONDS, attempts=1)


def build_services(settings: Settings, answer_seconds: float = WORKER_ANSWER_SECONDS) -> Services:
    return Services(settings, answer_seconds)


def connect_store(svc: Services, celery: Celery) -> None:
    """What the job store does when a write makes a job terminal, in every process that
    writes jobs: count it (metrics, the console's timeline and error log) and send the
    first webhook delivery."""
    from delineate.broker.queue import TaskQueue
    from delineate.jobs.webhooks import send_first_delivery
    from delineate.telemetry.job_metrics import count_terminal_jobs

    count_terminal_jobs(svc.store)
    send_first_delivery(svc.store, celery)
    if not svc.store.queue_key:  # the broker is another Redis: granted jobs go through Celery
        queue = TaskQueue(svc.settings, celery)

        def publish_granted(ids: list[str]) -> None:
            for job_id in ids:
                queue.send(job_id)

        svc.store.publish_granted = publish_granted
    svc.tenants.on_change.append(lambda tenants: share_workers(svc.store, tenants))
    share_workers(svc.store, svc.tenants.current)
