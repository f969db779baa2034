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

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError

from delineate.redis_io.base import (
    Command,
    DirectScript,
    failover_error,
    failover_reply,
    lane_connection_kwargs,
    the_watchdog,
)

logger = logging.getLogger(__name__)

WAIT_SLICE_SECONDS = 0.005
"""How long a caller sleeps between looks for a free connection when all are taken."""


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
