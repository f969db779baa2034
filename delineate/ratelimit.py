"""Request rate limits (Flask-Limiter on the shared Redis) and their headers.

RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW_MS, counted per API key's name, or per
client IP in open mode (or for a request that has no valid key yet, so guessing keys
is limited too). One fixed window shared by every route and every API process,
because the counters live in Redis. ``/health``, ``/metrics``, the docs' static assets
and CORS preflights are not counted.

Headers on every counted response (draft-6, ``RateLimit-Reset`` in seconds):
``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``; a 429 also carries
``Retry-After``.

When Redis is down the limiter fails closed: the request is answered 503 JSON
(``service_unavailable``, ``Retry-After: 5``) by the Redis handler in
``delineate/errors.py``, never a 500 and never an unmetered request.
"""

from __future__ import annotations

import logging
import math
import time

import redis
from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter, RequestLimit

from delineate.errors import RateLimited
from delineate.progress import RATE_LIMIT_PREFIX
from delineate.services import REDIS_MAX_CONNECTIONS

logger = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/health", "/metrics"})
EXEMPT_PREFIXES = ("/docs/assets/",)

RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")

STORAGE_TIMEOUT_SECONDS = 1.0
"""How long the limiter waits for Redis before the request fails with 503, in seconds."""


def client_key() -> str:
    """Whom a request counts against: the API key's name, else the client's address.

    The address is ``request.remote_addr`` after ProxyFix, so X-Forwarded-For counts
    only for the TRUSTED_PROXY_HOPS proxies in front of us.
    """
    owner = g.get("owner")
    if owner:
        return f"key:{owner}"
    return f"ip:{request.remote_addr or 'unknown'}"


def _exempt() -> bool:
    path = request.path
    return request.method == "OPTIONS" or path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def _seconds_until(reset_at: float) -> int:
    return max(0, math.ceil(reset_at - time.time()))


def _on_breach(limit: RequestLimit) -> None:
    seconds = max(1, _seconds_until(limit.window[0]))
    raise RateLimited(
        f"Too many requests: at most {limit.limit.amount} per {limit.limit.get_expiry()} s; try again in {seconds} s.",
        retry_after_seconds=seconds,
    )


def _limiter() -> Limiter:
    return current_app.extensions["delineate_limiter"]  # type: ignore[no-any-return]


def _add_headers(response: Response) -> Response:
    current = _limiter().current_limit
    if current is None:
        return response
    try:
        reset_at, remaining = current.window  # (RequestLimit.reset_at rounds up a second)
    except redis.RedisError as exc:  # Redis went away mid-request: the answer still stands
        logger.warning("rate limit headers skipped: %s", exc)
        return response
    seconds = _seconds_until(reset_at)
    response.headers["RateLimit-Limit"] = str(current.limit.amount)
    response.headers["RateLimit-Remaining"] = str(remaining)
    response.headers["RateLimit-Reset"] = str(seconds)
    if response.status_code == 429:
        response.headers.setdefault("Retry-After", str(max(1, seconds)))
    return response


def _storage_uri(redis_url: str) -> str:
    # limits names Redis-over-a-socket "redis+unix://"; redis-py calls it "unix://".
    return "redis+unix://" + redis_url[len("unix://") :] if redis_url.startswith("unix://") else redis_url


def init_rate_limits(app: Flask) -> Limiter:
    """Count every request (but the exempt ones) before its view runs.

    Call after the API key is identified (``g.owner``) and before it is enforced.
    """
    settings = app.extensions["delineate"].settings
    window_seconds = max(1, math.ceil(settings.rate_limit_window_ms / 1000))
    limiter = Limiter(
        key_func=client_key,
        application_limits=[f"{settings.rate_limit_max_requests} per {window_seconds} second"],
        storage_uri=_storage_uri(settings.redis_url),
        storage_options={
            # Sized like the app's own pool, and blocking: under a burst (2,000 streams
            # opening at once on one gevent worker) requests wait briefly for a connection
            # instead of failing with "Too many connections" (redis-py's default cap is 100).
            "connection_pool": redis.BlockingConnectionPool.from_url(  # type: ignore[dict-item]
                settings.redis_url,
                max_connections=REDIS_MAX_CONNECTIONS,
                timeout=STORAGE_TIMEOUT_SECONDS,
                socket_connect_timeout=STORAGE_TIMEOUT_SECONDS,
                socket_timeout=STORAGE_TIMEOUT_SECONDS,
            ),
        },
        strategy="fixed-window",
        key_prefix=RATE_LIMIT_PREFIX,
        headers_enabled=False,  # ours below: Flask-Limiter's Reset is a timestamp, draft-6 wants seconds
        swallow_errors=False,
        in_memory_fallback_enabled=False,
        on_breach=_on_breach,  # type: ignore[arg-type]
        # Count unrouted requests too (404, 405): else a 401-or-not answer there would let
        # anyone test API keys without limit.
        request_identifier=lambda: request.endpoint or "unrouted",
    )
    limiter.request_filter(_exempt)
    limiter.init_app(app)
    app.extensions["delineate_limiter"] = limiter
    app.after_request(_add_headers)
    return limiter
