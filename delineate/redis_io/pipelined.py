"""The hot path's Redis lane under gevent: every greenlet's commands share round trips.

In a gevent worker of the API, dozens of requests wait on Redis at the same moment,
each for one short command (a rate-limit hit, a job read). Sent one round trip each,
every request pays a socket write, a socket read and a wait in the event loop, and
Redis pays the same per request: measured under gunicorn with 50 connections, one
HGETALL per request cost a quarter of the bare hello-world's throughput. Here the
commands that greenlets issue while the event loop goes round are written together
in one write on one connection, and one reader greenlet hands each its replies in
order (what Node's ioredis calls auto-pipelining): the same view then ran at about 0.9
of the hello-world.

- Order: each caller's commands are sent contiguously; replies come back in order
  (Redis answers a connection in order), so the reader resolves callers first-in,
  first-out. A caller never sees another's replies.
- Failure: if the connection breaks, every caller waiting on it gets
  ``redis.ConnectionError`` (the API answers 503); the next command connects again.
  A batch that failed on a connection that had been idle before, with no reply read
  yet, is sent once more on a fresh one (a restarted Redis closes idle connections).
- Deadline: no socket timeout (a gevent timer per wait is what made the plain client
  slow); the process's watchdog (``redis_io.base``) shuts the socket when the oldest
  unanswered batch is older than the deadline, and its callers get ``redis.TimeoutError``.
- The connection is redis-py's (its handshake: HELLO, AUTH, SELECT), but commands are
  packed and replies parsed by hiredis on the socket itself, a batch at a time:
  redis-py's per-reply reading cost more than the command.
- Only for processes whose sockets gevent has patched (the API's gunicorn workers);
  threads use :class:`delineate.redis_io.direct.DirectRedis`.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis
from redis._parsers.base import BaseParser  # redis-py's own reply-error mapping
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


READ_BYTES = 65536
"""Bytes asked of the socket per read: a whole batch of replies usually arrives in one."""

PushNotification = getattr(hiredis, "PushNotification", ())


def _reply_error(message: str) -> Exception:
    """An error reply as redis-py's exception type for it (NOSCRIPT for scripts, READONLY
    and the other failover replies to drop the connection)."""
    return BaseParser.parse_error(message)  # type: ignore[no-any-return]


def _reply_reader(connection: Any) -> hiredis.Reader:
    """A parser for the replies on ``connection``'s socket, decoding as its client does."""
    if getattr(connection.encoder, "decode_responses", False):
        return hiredis.Reader(replyError=_reply_error, encoding=connection.encoder.encoding)
    return hiredis.Reader(replyError=_reply_error)


@dataclass(eq=False)
class _Call:
    commands: tuple[Command, ...]
    result: Any  # gevent.event.AsyncResult
    retried: bool = False
    replies: list[Any] = field(default_factory=list)


class PipelinedRedis:
    """One connection per process; callers' commands share its round trips."""

    def __init__(self, pool: redis.ConnectionPool, timeout_seconds: float | None = None) -> None:
        self._connection_class = pool.connection_class
        kwargs = pool.connection_kwargs
        self.timeout_seconds = float(timeout_seconds or kwargs.get("socket_timeout") or 5.0)
        self._connection_kwargs = lane_connection_kwargs(kwargs, self.timeout_seconds)
        self._pid = 0

    @classmethod
    def for_client(cls, client: redis.Redis) -> PipelinedRedis:
        return cls(client.connection_pool)

    def _start(self) -> None:
        """Per process, on first use: the connection and the writer and reader greenlets."""
        import gevent
        from gevent.event import Event

        self._pid = os.getpid()
        self._connection: Any = None
        self._replies: Any = None
        self._connection_used = False  # a reply has been read on it (so it may have gone stale)
        self._pending: list[_Call] = []
        self._inflight: collections.deque[tuple[_Call, Any]] = collections.deque()
        self._write_wanted = Event()
        self._read_wanted = Event()
        gevent.spawn(self._writer)
        gevent.spawn(self._reader)

    # -- callers' side -----------------------------------------------------------------

    def execute(self, *commands: Command, raise_on_error: bool = True) -> list[Any]:
        """Send ``commands`` (contiguously, in the next shared round trip); their replies.

        :raise redis.ResponseError: the first error reply, unless ``raise_on_error`` is False.
        :raise redis.ConnectionError, redis.TimeoutError: Redis did not answer.
        """
        from gevent.event import AsyncResult

        if self._pid != os.getpid():
            self._start()
        call = _Call(commands, AsyncResult())
        self._pending.append(call)
        self._write_wanted.set()
        replies: list[Any] = call.result.get()  # raises what the reader or writer set
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies

    def command(self, *args: Any) -> Any:
        return self.execute(args)[0]

    def script(self, source: str) -> DirectScript:
        return DirectScript(self, source)  # type: ignore[arg-type]

    def disconnect(self) -> None:
        connection, self._connection = getattr(self, "_connection", None), None
        if connection is not None:
            connection.disconnect()

    # -- the writer: one write per turn of the event loop --------------------------------

    def _writer(self) -> None:
        while True:
            self._write_wanted.wait()
            self._write_wanted.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    self._send(batch)
                except Exception as exc:  # noqa: BLE001 - every caller must hear of it
                    # Those who came while this batch failed to get through (a connect
                    # cut off at the deadline) hear of it too, rather than wait out a
                    # second deadline behind it.
                    late, self._pending = self._pending, []
                    self._fail(batch + late, exc)

    def _send(self, batch: list[_Call]) -> None:
        if self._connection is None:
            self._connection = self._connection_class(**self._connection_kwargs)
            self._connection_used = False
        connection = self._connection
        if connection._sock is None:
            self._connect(connection)
            self._replies = _reply_reader(connection)
        data = b"".join([hiredis.pack_command(tuple(command)) for call in batch for command in call.commands])
        for call in batch:
            self._inflight.append((call, connection))
        if not self._read_wanted.is_set():
            self._read_wanted.set()
        try:
            connection._sock.sendall(data)
        except (redis.ConnectionError, OSError) as exc:
            self._broken(connection, exc)

    def _connect(self, connection: Any) -> None:
        """redis-py's connect and handshake (HELLO, AUTH, SELECT, client name), within the
        deadline: a Redis that accepts the connection but does not answer (stopped, swapped
        out) is cut off by the watchdog like any call, and the batch's callers hear of it.

        :raise redis.TimeoutError: no answer within the deadline.
        """
        dog = the_watchdog()
        token = id(connection)
        dog.inflight[token] = (time.monotonic() + self.timeout_seconds, connection)
        try:
            connection.connect()
        except (redis.ConnectionError, OSError):
            self._connection = None
            connection.disconnect()
            if token in dog.expired:
                raise redis.TimeoutError(f"Redis did not answer within {self.timeout_seconds:g} s") from None
            raise
        finally:
            dog.inflight.pop(token, None)
            dog.expired.discard(token)

    # -- the reader: replies back to callers, in order -----------------------------------

    def _reader(self) -> None:
        while True:
            try:
                self._read_replies()
            except Exception:
                logger.exception("redis: reply reader failed; restarting it")
                time.sleep(0.1)

    def _read_replies(self) -> None:
        dog = the_watchdog()
        token = id(self)
        while True:
            if not self._inflight:
                dog.inflight.pop(token, None)
                self._read_wanted.clear()
                self._read_wanted.wait()
                continue
            call, connection = self._inflight[0]
            dog.inflight[token] = (time.monotonic() + self.timeout_seconds, connection)
            try:
                replies = self._replies
                while len(call.replies) < len(call.commands):
                    reply = replies.gets()
                    if reply is False:  # the rest of the batch is still on its way
                        data = connection._sock.recv(READ_BYTES)
                        if not data:
                            raise redis.ConnectionError("Redis closed the connection.")
                        replies.feed(data)
                    elif not isinstance(reply, PushNotification):
                        call.replies.append(reply)
                        self._connection_used = True
            except Exception as exc:  # noqa: BLE001 - a broken connection fails its callers
                timed_out = token in dog.expired
                dog.expired.discard(token)
                dog.inflight.pop(token, None)
                error: BaseException = exc
                if timed_out:
                    error = redis.TimeoutError(f"Redis did not answer within {self.timeout_seconds:g} s")
                self._broken(connection, error, retry=not timed_out)
                continue
            self._inflight.popleft()
            if any(failover_reply(reply) for reply in call.replies):
                # A primary demoted by a failover: drop the connection (the next one asks
                # Sentinel for the new primary) and report Redis away.
                failover = failover_error()
                self._broken(connection, failover)
                call.result.set_exception(failover)
                continue
            call.result.set(call.replies)

    def _broken(self, connection: Any, exc: BaseException, retry: bool = True) -> None:
        """The connection failed: fail (or resend once) every call sent on it."""
        stale = self._connection_used
        if self._connection is connection:
            self._connection = None
        try:
            connection.disconnect()
        except Exception as err:  # noqa: BLE001 - it is being dropped anyway
            logger.debug("redis: closing a broken connection: %s", err)
        victims = [call for call, conn in self._inflight if conn is connection]
        self._inflight = collections.deque((call, conn) for call, conn in self._inflight if conn is not connection)
        again = [call for call in victims if retry and stale and not call.retried and not call.replies]
        for call in again:
            call.retried = True
        self._fail([call for call in victims if call not in again], exc)
        if again:
            logger.info("redis: connection lost (%s); resending %d waiting calls", exc, len(again))
            self._pending[:0] = again
            self._write_wanted.set()

    @staticmethod
    def _fail(calls: list[_Call], exc: BaseException) -> None:
        if not isinstance(exc, redis.RedisError):
            exc = redis.ConnectionError(f"Redis connection failed: {exc}")
        for call in calls:
            if not call.result.ready():
                call.result.set_exception(exc)
