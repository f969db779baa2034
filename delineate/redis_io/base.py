"""What the two Redis lanes share: the command type, failover detection, the process's
deadline watchdog, the connection settings of a lane, and scripts by EVALSHA.

The lanes themselves: :mod:`delineate.redis_io.direct` (a connection per call, threads) and
:mod:`delineate.redis_io.pipelined` (shared round trips, gevent); the library's own client
behind the same interface: :mod:`delineate.redis_io.library`. :func:`delineate.redis_io.lane_for`
picks one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, MasterDownError, NoScriptError, ReadOnlyError, ResponseError
from redis.retry import Retry

logger = logging.getLogger(__name__)

Command = Sequence[Any]

WATCHDOG_INTERVAL_SECONDS = 0.1
"""How often the watchdog looks for calls past their deadline, in seconds."""

FAILOVER_ERRORS = (ReadOnlyError, MasterDownError, BusyLoadingError)
"""Error replies of a node that is not (or no longer, or not yet) a writable primary."""


def failover_reply(reply: Any) -> bool:
    """True for an error reply that a failover causes: a demoted primary (READONLY), a
    replica cut off from its primary (MASTERDOWN), a node still loading its data, or a
    blocked command (WAIT) that a role change ended (UNBLOCKED)."""
    if isinstance(reply, FAILOVER_ERRORS):
        return True
    return isinstance(reply, ResponseError) and str(reply).startswith("UNBLOCKED")


def failover_error() -> redis.ConnectionError:
    # As a connection error, so every caller treats it as "Redis away" (the API: 503).
    return redis.ConnectionError("Redis is changing primaries (failover); try again shortly.")


class _Watchdog:
    """One per process: ends calls that Redis does not answer within their deadline."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.inflight: dict[int, tuple[float, Any]] = {}
        self.expired: set[int] = set()
        thread = threading.Thread(target=self._run, name="delineate-redis-watchdog", daemon=True)
        thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL_SECONDS)
            try:
                now = time.monotonic()
                for token, (deadline, connection) in list(self.inflight.items()):
                    if now >= deadline and token not in self.expired:
                        self.expired.add(token)
                        sock = getattr(connection, "_sock", None)
                        if sock is not None:
                            sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
            except Exception:
                logger.debug("redis watchdog", exc_info=True)


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def the_watchdog() -> _Watchdog:
    global _watchdog
    dog = _watchdog
    if dog is None or dog.pid != os.getpid():
        with _watchdog_lock:
            if _watchdog is None or _watchdog.pid != os.getpid():
                _watchdog = _Watchdog()
            dog = _watchdog
    return dog


def lane_connection_kwargs(kwargs: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
    """A pool's connection settings for a lane: no socket timeout (the watchdog keeps the
    deadline), a connect timeout, and no hidden retries (they wait with backoff: a
    caller must hear within its deadline that Redis is away)."""
    kwargs = dict(kwargs)
    kwargs["socket_timeout"] = None
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = timeout_seconds
    kwargs["retry"] = Retry(NoBackoff(), 0)
    return kwargs


def gevent_patched() -> bool:
    """True in a gevent-patched process (the API's workers), False with real threads."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("socket"))


class Lane(Protocol):
    """What the job store, the rate limiter and the replica acknowledgement ask of a lane."""

    timeout_seconds: float

    def execute(self, *commands: Command, raise_on_error: bool = True) -> list[Any]: ...

    def command(self, *args: Any) -> Any: ...

    def script(self, source: str) -> DirectScript: ...

    def disconnect(self) -> None: ...


class DirectScript:
    """A Lua script called by EVALSHA, loaded again by EVAL when Redis lost its cache."""

    def __init__(self, lane: Lane, source: str) -> None:
        self.lane = lane
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        """The EVALSHA command, to send with others in :meth:`DirectRedis.execute`."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def eval_command(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVAL", self.source, len(keys), *keys, *args)

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return self.lane.execute(self.command(keys, args))[0]
        except NoScriptError:
            return self.lane.execute(self.eval_command(keys, args))[0]


def pairs_to_dict(values: Sequence[Any] | dict[str, Any]) -> dict[str, Any]:
    """An HGETALL reply as a dict: a map under RESP3, a flat list under RESP2 (and in Lua)."""
    if isinstance(values, dict):
        return values
    iterator = iter(values)
    return dict(zip(iterator, iterator, strict=True))
