"""Redis commands of the hot path, written and read straight on redis-py's connections.

Why not the ``redis.Redis`` client: under gevent it spends about 100 µs of CPU per
command beyond the round trip itself (a ``poll()`` of the socket before every command
to make sure it is clean, a gevent Timeout per wait, per-command observability hooks,
three retries with backoff). Measured on this machine: a PING cost 150 µs through
``Redis.execute_command``, 50 µs sent and read on the same ``Connection`` object, and
33 µs on a connection without a socket timeout. Every request pays for its rate-limit
check and most for a job read or write, so those go through this lane:

- redis-py's own ``Connection`` objects, built with the client pool's class and
  settings, so AUTH, SELECT, TLS, unix sockets, Sentinel-managed connections, the
  hiredis parser and the error types are all redis-py's;
- no socket timeout on them (under gevent each wait with a timeout builds a timer), but
  a watchdog that shuts down the socket of any call older than ``timeout_seconds``,
  which then fails with ``redis.TimeoutError``: one check every 0.1 s per process
  instead of a timer per wait;
- a LIFO list of idle connections per process, taken and given back without a lock
  (list ``pop``/``append`` are atomic), with the count of open connections bounded;
  no health poll: a connection that fails is dropped, and a command that failed on a
  reused connection before any reply came back is sent once more on a new one (that is
  what a Redis restart looks like);
- several commands per round trip (:meth:`DirectRedis.execute`), and scripts by
  EVALSHA with EVAL as the fallback after a script cache flush (a restart, a failover).

Errors are redis-py's: ``redis.ConnectionError`` / ``redis.TimeoutError`` when Redis is
unreachable (the API answers those 503), ``redis.ResponseError`` for error replies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, MasterDownError, NoScriptError, ReadOnlyError, ResponseError
from redis.retry import Retry

from delineate.fanout import gevent_patched

logger = logging.getLogger(__name__)

Command = Sequence[Any]

WATCHDOG_INTERVAL_SECONDS = 0.1
"""How often the watchdog looks for calls past their deadline, in seconds."""

WAIT_SLICE_SECONDS = 0.005
"""How long a caller sleeps between looks for a free connection when all are taken."""


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


def lane_for(client: redis.Redis) -> Any:
    """The hot path's lane to ``client``'s server: shared round trips under gevent
    (:class:`~delineate.redis_pipelined.PipelinedRedis`), a connection per call with
    threads (:class:`DirectRedis`)."""
    if gevent_patched():
        from delineate.redis_pipelined import PipelinedRedis

        return PipelinedRedis.for_client(client)
    return DirectRedis.for_client(client)


class DirectRedis:
    """Pipelined commands on redis-py connections, at most ``max_connections`` open."""

    def __init__(
        self,
        pool: redis.ConnectionPool,
        max_connections: int | None = None,
        timeout_seconds: float | None = None,
        wait_seconds: float = 2.0,
    ) -> None:
        self._connection_class = pool.connection_class
        kwargs = dict(pool.connection_kwargs)
        self.timeout_seconds = float(timeout_seconds or kwargs.get("socket_timeout") or 5.0)
        self._connection_kwargs = lane_connection_kwargs(kwargs, self.timeout_seconds)
        limit = max_connections or getattr(pool, "max_connections", None) or 1000
        self.max_connections = int(min(limit, 100_000))
        self.wait_seconds = wait_seconds
        self._reset()

    @classmethod
    def for_client(cls, client: redis.Redis) -> DirectRedis:
        """A lane to the server ``client`` talks to, with the same connection settings."""
        return cls(client.connection_pool)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._idle: list[Any] = []
        self._open = 0
        self._open_lock = threading.Lock()

    # -- connections ---------------------------------------------------------------------

    def _take(self) -> tuple[Any, bool]:
        """An idle connection (reused=True) or a new one; waits while all are in use."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._reset()
        try:
            return self._idle.pop(), True
        except IndexError:
            pass
        deadline = time.monotonic() + self.wait_seconds
        while True:
            with self._open_lock:
                if self._open < self.max_connections:
                    self._open += 1
                    break
            try:
                return self._idle.pop(), True
            except IndexError:
                if time.monotonic() >= deadline:
                    raise redis.ConnectionError("No Redis connection available (the lane is at its limit).") from None
                time.sleep(WAIT_SLICE_SECONDS)
        return self._new_connection(), False

    def _new_connection(self) -> Any:
        return self._connection_class(**self._connection_kwargs)

    def _drop(self, connection: Any) -> None:
        try:
            connection.disconnect()
        except Exception as exc:  # noqa: BLE001 - it is being dropped anyway
            logger.debug("redis: closing a dropped connection: %s", exc)
        with self._open_lock:
            self._open = max(0, self._open - 1)

    def disconnect(self) -> None:
        """Close every idle connection (after a failover, or on shutdown)."""
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return
            self._drop(connection)

    # -- commands --------------------------------------------------------------------------

    def execute(self, *commands: Command, raise_on_error: bool = True) -> list[Any]:
        """Send ``commands`` in one round trip; their replies in order.

        :raise redis.ResponseError: the first error reply (after every reply was read),
            unless ``raise_on_error`` is False: then error replies are returned in place.
        :raise redis.ConnectionError, redis.TimeoutError: Redis did not answer.
        """
        connection, reused = self._take()
        replies: list[Any] = []
        try:
            try:
                self._round_trip(connection, commands, replies)
            except redis.ConnectionError:
                if not reused or replies:
                    raise  # a reply came back: the batch ran, at least in part; never twice
                # A connection that sat idle may have been closed by a restarted server;
                # nothing was read back, so send once more on a fresh one.
                connection.disconnect()
                self._round_trip(connection, commands, replies)
        except BaseException:
            self._drop(connection)
            raise
        # A primary demoted by a failover answers writes with READONLY: drop what points
        # at it (the next connection asks Sentinel again) and report Redis as unavailable.
        if any(failover_reply(reply) for reply in replies):
            self._drop(connection)
            self.disconnect()
            raise failover_error()
        self._idle.append(connection)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies

    def _round_trip(self, connection: Any, commands: Sequence[Command], replies: list[Any]) -> None:
        """Send ``commands`` and append their replies to ``replies`` as they arrive (so a
        caller sees how far a broken round trip got)."""
        dog = the_watchdog()
        token = id(connection)
        dog.inflight[token] = (time.monotonic() + self.timeout_seconds, connection)
        try:
            connection.connect()
            if len(commands) == 1:
                connection.send_packed_command(connection.pack_command(*commands[0]), check_health=False)
            else:
                connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:  # keep reading: the connection must end clean
                    replies.append(exc)
        except (redis.ConnectionError, OSError) as exc:
            if token in dog.expired:
                raise redis.TimeoutError(f"Redis did not answer within {self.timeout_seconds:g} s") from None
            if isinstance(exc, redis.ConnectionError):
                raise
            raise redis.ConnectionError(str(exc)) from exc
        finally:
            dog.inflight.pop(token, None)
            dog.expired.discard(token)

    def command(self, *args: Any) -> Any:
        """One command, one reply."""
        return self.execute(args)[0]

    def script(self, source: str) -> DirectScript:
        return DirectScript(self, source)


class DirectScript:
    """A Lua script called by EVALSHA, loaded again by EVAL when Redis lost its cache."""

    def __init__(self, lane: DirectRedis, source: str) -> None:
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
