"""The lanes' interface over redis-py's own client: what every Redis command of the hot path
takes when FAST_PATHS is false (the reference path, for triage after an upgrade).

Several commands go out as one non-transactional pipeline, as the lanes send them in one
round trip; scripts by EVALSHA with EVAL after a NOSCRIPT (:class:`DirectScript`); a node
that answers as a failover does (READONLY, MASTERDOWN, LOADING) drops the client's
connections and is reported as Redis away, as the lanes report it. The deadline is the
client's own socket timeout.
"""

from __future__ import annotations

from typing import Any

import redis

from delineate.redis_io.base import Command, DirectScript, failover_error, failover_reply


class LibraryLane:
    """:class:`delineate.redis_io.base.Lane` on a ``redis.Redis`` client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        kwargs = client.connection_pool.connection_kwargs
        self.timeout_seconds = float(kwargs.get("socket_timeout") or 5.0)

    def execute(self, *commands: Command, raise_on_error: bool = True) -> list[Any]:
        """Send ``commands`` in one pipeline; their replies in order (error replies in place
        when ``raise_on_error`` is False, else the first one raised).

        :raise redis.ConnectionError, redis.TimeoutError: Redis did not answer.
        """
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            replies: list[Any] = pipe.execute(raise_on_error=False)
        except (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError):
            self.disconnect()
            raise failover_error() from None
        if any(failover_reply(reply) for reply in replies):
            self.disconnect()
            raise failover_error()
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, redis.ResponseError):
                    raise reply
        return replies

    def command(self, *args: Any) -> Any:
        return self.execute(args)[0]

    def script(self, source: str) -> DirectScript:
        return DirectScript(self, source)

    def disconnect(self) -> None:
        self.client.connection_pool.disconnect()
