"""Request rate limits: a fixed window per caller, counted in Redis in one round trip.

RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW_MS, counted per API key's name, or per
client address in open mode (or for a request that has no valid key yet, so guessing
keys is limited too); IPv6 clients per /64, the block one subscriber usually holds.
One window shared by every route and every API process, because the counter lives in
Redis. ``/health``, ``/livez``, ``/metrics``, the docs' static assets and CORS
preflights are not counted.

Why our own and not Flask-Limiter (which this project used before): it made three
Redis round trips per request (the hit, then GET and TTL for the headers) and spent
about a quarter of a status request's CPU. Here one Lua script adds the request's cost
and returns the count and the time left, and the headers are built from that answer.

Headers on every counted response (draft-6, ``RateLimit-Reset`` in seconds):
``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``; a 429 also carries
``Retry-After``.

When Redis is down the limiter fails closed: the request is answered 503 JSON by the
Redis handler in ``delineate/api/blueprints/errors.py``, never a 500 and never an unmetered request.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from delineate.errors import RateLimited
from delineate.redis_io.base import Command, Lane

RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")

IPV6_PREFIX_BITS = 64
"""IPv6 clients are counted per network of this many leading bits."""

# Add ARGV[1] to the caller's counter; start the window (ARGV[2] ms) with the first hit.
# Returns {count, milliseconds until the window resets}.
_HIT_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
return {count, left}
"""


class Window:
    """Where a caller stands in the current window after a hit."""

    __slots__ = ("count", "limit", "reset_ms")

    def __init__(self, limit: int, count: int, reset_ms: int) -> None:
        self.limit, self.count, self.reset_ms = limit, count, reset_ms

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def reset_seconds(self) -> int:
        return max(0, math.ceil(self.reset_ms / 1000))

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset_seconds)),
        ]


def address_key(address: str | None) -> str:
    """The counter name of a client address: an IPv4 address, or an IPv6 /64 network."""
    if not address:
        return "ip:unknown"
    if ":" not in address:
        return f"ip:{address}"
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return f"ip:{address[:64]}"
    if ip.ipv4_mapped is not None:
        return f"ip:{ip.ipv4_mapped}"
    network = ipaddress.IPv6Network((int(ip) >> (128 - IPV6_PREFIX_BITS) << (128 - IPV6_PREFIX_BITS), IPV6_PREFIX_BITS))
    return f"ip:{network}"


class RateLimiter:
    """Counts requests per caller in a fixed window kept in Redis."""

    def __init__(self, lane: Lane, prefix: str, limit: int, window_ms: int) -> None:
        self.lane = lane
        self.prefix = prefix
        self.limit = limit
        self.window_ms = window_ms
        self._hit = lane.script(_HIT_SCRIPT)

    def hit(
        self, caller: str, cost: int = 1, also: Command | None = None, limit: int | None = None
    ) -> tuple[Window, Any]:
        """Count ``cost`` requests for ``caller`` against ``limit`` (default: the service's);
        with ``also``, send that command in the same round trip and return its reply too
        (else None).

        :raise redis.ConnectionError, redis.TimeoutError: Redis is unavailable (fail closed).
        :raise redis.ResponseError: ``also`` got an error reply.
        """
        keys, args = [f"{self.prefix}:{caller}"], [cost, self.window_ms]
        commands = [self._hit.command(keys, args)] + ([also] if also is not None else [])
        replies = self.lane.execute(*commands, raise_on_error=False)
        if isinstance(replies[0], NoScriptError):  # Redis lost its script cache (restart, failover)
            replies[0] = self.lane.execute(self._hit.eval_command(keys, args))[0]
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        count, left = replies[0]
        window = Window(limit or self.limit, int(count), int(left))
        return window, (replies[1] if also is not None else None)

    def refuse(self, window: Window) -> RateLimited:
        seconds = max(1, window.reset_seconds)
        return RateLimited(
            f"Too many requests: at most {window.limit} per {math.ceil(self.window_ms / 1000)} s; "
            f"try again in {seconds} s.",
            retry_after_seconds=seconds,
        )
