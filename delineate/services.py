"""The per-process clients, built once by the app factory and kept in ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from redis import Redis

from delineate.config import Settings
from delineate.models import Job
from delineate.progress import JobStore
from delineate.storage import Storage

REDIS_MAX_CONNECTIONS = 1000
"""Connections per process in the Redis pool (redis-py's default of 100 is too few for SSE)."""


@dataclass
class Services:
    settings: Settings
    redis: Redis
    storage: Storage
    store: JobStore
    # Short-fused clients for /health, so a hung dependency answers "error" quickly.
    health_redis: Redis
    health_storage: Storage


def download_name(job: Job) -> str:
    return f"delineate-{job.job_id}.zip"


def build_services(settings: Settings) -> Services:
    """Clients are lazy: nothing connects until first used (safe before a fork)."""
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=2,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )
    client = redis.Redis(connection_pool=pool)
    storage = Storage(settings)
    store = JobStore(
        client,
        settings.job_ttl_seconds,
        presign=lambda job: storage.presign(job.result_key, download_name(job)),
    )
    health_redis = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=1, socket_timeout=1, max_connections=20
    )
    return Services(
        settings=settings,
        redis=client,
        storage=storage,
        store=store,
        health_redis=health_redis,
        health_storage=Storage(settings, timeout_seconds=1.0, retries=1),
    )


def services() -> Services:
    """The current app's services (inside a request, CLI command or task)."""
    return current_app.extensions["delineate"]  # type: ignore[no-any-return]
