"""The error log behind ``GET /v1/errors``: the newest errors each owner met, shared by
every API process and worker.

One Redis list per owner (``errors:{owner}``), newest first, trimmed to
:data:`ERROR_LOG_LENGTH` by the same round trip that adds to it, so it stays bounded
whatever fails. Who writes what:

- the API, a 5xx answer: queued in the process (:class:`PendingErrors`) and written by
  its metrics flusher, so a request never waits on Redis for it (a stalled Redis is often
  the very error being logged);
- the job store's terminal hook, a job that ended ``failed`` (with the job metrics' round
  trip);
- the webhook sender, a delivery attempt that failed.

An entry is the JSON of ``/v1/errors`` (``time``, ``source``, ``message`` and, where known,
``status``, ``route``, ``jobId``, ``requestId``, ``traceId``, ``sentryEventId``). Imports no
web framework.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import orjson
import redis

from delineate.models import utcnow
from delineate.store.keys import errors_key

logger = logging.getLogger(__name__)

ERROR_LOG_LENGTH = 100
"""Entries kept per owner (the most ``/v1/errors`` answers with)."""

ERROR_LOG_TTL_SECONDS = 7 * 86_400
"""An owner's list is dropped this long after its last error, in seconds."""

MESSAGE_LENGTH = 500
"""Longest message kept, in characters."""

PENDING_LIMIT = 1000
"""Most errors one API process holds while Redis cannot take them (older ones are dropped)."""

SOURCES = ("api", "worker", "webhook")


def entry(source: str, message: str, **fields: Any) -> dict[str, Any]:
    """An error log entry; ``fields`` that are None are left out."""
    record: dict[str, Any] = {"time": utcnow(), "source": source, "message": message[:MESSAGE_LENGTH]}
    record.update((name, value) for name, value in fields.items() if value is not None)
    return record


def add_commands(owner: str, record: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The commands that add ``record`` to ``owner``'s log and keep it bounded."""
    key = errors_key(owner)
    return [
        ("LPUSH", key, orjson.dumps(record)),
        ("LTRIM", key, 0, ERROR_LOG_LENGTH - 1),
        ("EXPIRE", key, ERROR_LOG_TTL_SECONDS),
    ]


def write(client: redis.Redis, owner: str, record: dict[str, Any]) -> None:
    """Add ``record`` to ``owner``'s log now (a worker, outside any request); an error log
    that cannot be written is logged, never raised."""
    try:
        pipe = client.pipeline(transaction=True)
        for command in add_commands(owner, record):
            pipe.execute_command(*command)
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("error log: could not add an entry: %s", exc)


def read_command(owner: str, limit: int) -> tuple[Any, ...]:
    """The one command that reads ``owner``'s ``limit`` newest entries."""
    return ("LRANGE", errors_key(owner), 0, max(1, min(limit, ERROR_LOG_LENGTH)) - 1)


def decode(reply: list[Any]) -> list[dict[str, Any]]:
    """Entries from :func:`read_command`'s reply (an unreadable one is skipped)."""
    entries = []
    for raw in reply or ():
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            entries.append(value)
    return entries


class PendingErrors:
    """Errors an API process met, waiting for its flusher to write them (bounded)."""

    def __init__(self, limit: int = PENDING_LIMIT) -> None:
        self._queue: deque[tuple[str, dict[str, Any]]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, owner: str | None, record: dict[str, Any]) -> None:
        with self._lock:
            self._queue.append((owner or "", record))

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything waiting, oldest first (``(owner, record)``), and the queue emptied."""
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        return items

    def put_back(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Keep ``items`` (from :meth:`drain`) for the next flush: Redis did not take them.
        Past the limit, the oldest go."""
        with self._lock:
            newer = list(self._queue)
            self._queue.clear()
            self._queue.extend(items + newer)  # a bounded deque drops from the left: the oldest
