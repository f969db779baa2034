"""The per-process clients, built once per process and kept in ``app.extensions``.

Each client is made on first use (``cached_property``): nothing connects at import or
in the app factory, a process only pays for the clients it uses (the worker never
builds the health-check clients), and a forked child builds its own.
"""

from __future__ import annotations

from functools import cached_property

from flask import current_app
from redis import Redis

from delineate.config import Settings
from delineate.models import Job
from delineate.redis_clients import redis_client, sentinel_enabled
from delineate.redis_direct import DirectRedis, lane_for
from delineate.replica_ack import ReplicaAck
from delineate.storage import Storage
from delineate.store import JobStore
from delineate.store.sweep_index import WEBHOOK_CLAIM_INTERVALS

REDIS_MAX_CONNECTIONS = 1000

REDIS_ANSWER_SECONDS = 5
"""How long a command may wait for Redis's answer (the socket timeout of the shared client)."""
"""Connections per process in the Redis pool (redis-py's default of 100 is too few for SSE)."""


def download_name(job: Job) -> str:
    return f"delineate-{job.job_id}.zip"


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis(self) -> Redis:
        return redis_client(
            self.settings,
            blocking_timeout=2,
            decode_responses=True,
            max_connections=REDIS_MAX_CONNECTIONS,
            socket_connect_timeout=2,
            socket_timeout=REDIS_ANSWER_SECONDS,
            health_check_interval=30,
        )

    @cached_property
    def direct_redis(self) -> DirectRedis:
        """The hot path's lane to the same Redis (rate limits, job reads and writes)."""
        return lane_for(self.redis)  # type: ignore[no-any-return]

    @cached_property
    def storage(self) -> Storage:
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
        lane = DirectRedis(self.redis.connection_pool, timeout_seconds=REDIS_ANSWER_SECONDS + timeout_ms / 1000)
        return ReplicaAck(lane, timeout_ms)

    # Short-fused clients for /health, so a hung dependency answers "error" quickly.
    @cached_property
    def health_redis(self) -> Redis:
        return redis_client(self.settings, socket_connect_timeout=0.8, socket_timeout=0.8, max_connections=20)

    @cached_property
    def health_storage(self) -> Storage:
        return Storage(self.settings, timeout_seconds=0.8, retries=1)


def build_services(settings: Settings) -> Services:
    return Services(settings)


def services() -> Services:
    """The current app's services (inside a request, CLI command or task)."""
    return current_app.extensions["delineate"]  # type: ignore[no-any-return]
