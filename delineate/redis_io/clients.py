"""The one place that builds Redis clients: straight to REDIS_URL, or through Sentinel.

Without REDIS_SENTINELS every client is ``from_url`` of its URL, as before. With it, every
client is Sentinel's ``master_for(REDIS_SENTINEL_MASTER)``: its connections ask the
sentinels for the primary's address on every (re)connect, and one that meets a demoted
primary (READONLY) is dropped, so after a failover each user finds the new primary by
itself. The URL then gives only the database number and the data nodes' user/password;
its host and port are ignored. Celery gets the same as ``sentinel://`` URLs and
transport options (:func:`celery_url`, :func:`celery_transport_options`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from delineate.config import Settings

SENTINEL_TIMEOUT_SECONDS = 0.5
"""Connect and read timeout of a question to one sentinel, in seconds: a dead sentinel
costs this much before the next one is asked."""

FAILOVER_RETRIES = 2
"""Retries of a redis-py command that met a lost connection, behind Sentinel: each retry
asks the sentinels again. Few and quick (50 ms, then 100 ms) so that a request during a
failover answers 503 within its budget instead of waiting out redis-py's default of ten."""


def failover_retry() -> Retry:
    """Quick retries of a lost connection (a failover), never of a timeout: a stalled primary
    must be reported within one deadline."""
    return Retry(ExponentialBackoff(cap=0.1, base=0.05), FAILOVER_RETRIES, supported_errors=(redis.ConnectionError,))


def no_retry(settings: Settings) -> Retry:
    """The retry policy of a client a request waits on: none (behind Sentinel, the quick
    failover retries of :func:`failover_retry`)."""
    return failover_retry() if settings.redis_sentinels else Retry(NoBackoff(), 0)


def _db_and_credentials(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    path = parts.path.strip("/")
    params: dict[str, Any] = {"db": int(path) if path.isdigit() else 0}
    if parts.username:
        params["username"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    return params


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection settings for the sentinels themselves (not the data nodes)."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    return kwargs


def sentinel_manager(settings: Settings) -> Sentinel:
    """A Sentinel client for the configured sentinels (connections made on first use)."""
    return Sentinel(list(settings.redis_sentinels), sentinel_kwargs=_sentinel_kwargs(settings))


def redis_client(
    settings: Settings, url: str | None = None, *, blocking_timeout: float | None = None, **kwargs: Any
) -> redis.Redis:
    """A client of the primary behind ``url`` (default REDIS_URL) with redis-py ``kwargs``.

    ``blocking_timeout``: without Sentinel, the pool is a BlockingConnectionPool that waits
    this long for a free connection (Sentinel's pool does not block: it raises when full).
    """
    url = url or settings.redis_url
    if not settings.redis_sentinels:
        if blocking_timeout is not None:
            pool = redis.BlockingConnectionPool.from_url(url, timeout=blocking_timeout, **kwargs)
            return redis.Redis(connection_pool=pool)
        return redis.Redis.from_url(url, **kwargs)
    kwargs.setdefault("retry", failover_retry())
    return sentinel_manager(settings).master_for(  # type: ignore[no-any-return]
        settings.redis_sentinel_master,
        redis_class=redis.Redis,
        connection_pool_class=SentinelConnectionPool,
        **_db_and_credentials(url),
        **kwargs,
    )


def sentinel_enabled(settings: Settings) -> bool:
    return bool(settings.redis_sentinels)


def celery_url(settings: Settings, url: str) -> str:
    """``url`` for Celery: as is, or ``sentinel://[:pw@]host:port/db;...`` with Sentinel."""
    if not settings.redis_sentinels:
        return url
    params = _db_and_credentials(url)
    auth = ""
    if "password" in params:
        auth = f"{quote(params.get('username', ''), safe='')}:{quote(params['password'], safe='')}@"
    hosts = [f"[{h}]" if ":" in h else h for h, _ in settings.redis_sentinels]
    return ";".join(
        f"sentinel://{auth}{host}:{port}/{params['db']}"
        for host, (_, port) in zip(hosts, settings.redis_sentinels, strict=True)
    )


def celery_transport_options(settings: Settings) -> dict[str, Any]:
    """What kombu's and Celery's Sentinel transports need beside the URL (empty without it)."""
    if not settings.redis_sentinels:
        return {}
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": _sentinel_kwargs(settings)}
