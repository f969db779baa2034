"""Server-Sent Events: the wire format, and one Redis subscriber per process.

``ServerSentEvent`` is a value object whose ``str()`` is the wire format.

``EventHub`` owns ONE Redis pub/sub connection per process and fans its messages out
to the streams of that process (one mailbox each). flask-sse opens a connection per
stream (and leaks it when the client leaves); with 2,000 streams that would also
exhaust the API's Redis pool. The hub:

- is created lazily, on the first stream of a process (so after gunicorn forks);
- is the only code that touches its socket: a single listener thread (a greenlet
  under gunicorn's gevent workers, which monkey-patch ``threading`` and ``queue``)
  subscribes, unsubscribes, reads and pings; streams only change a wanted-set and
  wait on their mailbox, so no two greenlets ever use the socket at once;
- confirms a subscription only when Redis acknowledged the SUBSCRIBE, so a stream
  can read its snapshot after it and never miss the terminal event;
- survives Redis restarts: on a connection error it drops the connection, subscribes
  everything again, and tells every stream to re-read its snapshot (events published
  while it was away are lost, the stored state is not).

``StreamSlots`` caps a process's streams; ``TenantStreams`` a tenant's, over every process.

Tuning constants are in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from delineate.config import Settings
from delineate.models import TERMINAL_STATES
from delineate.redis_io.clients import redis_client
from delineate.store.keys import streams_key

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05
"""Longest the listener blocks on the socket before it looks for (un)subscribe work."""

PING_SECONDS = 10.0
"""How often the listener pings Redis while subscribed, to notice a dead connection."""

DEAD_AFTER_SECONDS = 35.0
"""No message or pong for this long: the connection is considered dead and rebuilt."""

RECONNECT_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Waits between reconnection attempts after Redis went away."""

CLIENT_NAME_PREFIX = "delineate-sse-"
"""The hub's Redis connection is named this plus the process id."""

STALE_HEARTBEATS = 3
"""A tenant's stream not refreshed for this many heartbeats (its process died) stops counting."""

TERMINAL_EVENTS = frozenset(state.value for state in TERMINAL_STATES)


@dataclass(frozen=True)
class ServerSentEvent:
    """One event in the ``text/event-stream`` format."""

    data: str
    event: str | None = None
    id: int | str | None = None
    retry_ms: int | None = None

    @classmethod
    def from_status(cls, event: str, status: dict[str, Any]) -> ServerSentEvent:
        return cls(json.dumps(status, separators=(",", ":")), event=event, id=status["version"])

    @classmethod
    def from_message(cls, raw: str) -> ServerSentEvent:
        """Decode a message published in flask-sse's format ``{"data", "type", "id"}``.

        :raise ValueError: not such a message.
        """
        message = json.loads(raw)
        if not isinstance(message, dict) or "data" not in message:
            raise ValueError("not a flask-sse message")
        data = message["data"]
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        return cls(text, event=message.get("type"), id=message.get("id"))

    @property
    def version(self) -> int:
        """The ``id`` as a job status version (-1 when it has none)."""
        try:
            return int(self.id)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return -1

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS

    @cached_property
    def wire(self) -> str:
        # Computed once and shared by every stream that sends the same event.
        lines = []
        if self.event:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry_ms is not None:
            lines.append(f"retry: {self.retry_ms}")
        lines.extend(f"data: {line}" for line in self.data.splitlines() or [""])
        return "\n".join(lines) + "\n\n"

    def __str__(self) -> str:
        return self.wire


def comment(text: str) -> str:
    """A comment line (``: text``): ignored by clients, keeps proxies from timing out."""
    return "".join(f": {line}\n" for line in text.splitlines() or [""]) + "\n"


RESYNC = object()
"""Put in a mailbox when events may have been lost: the stream re-reads the snapshot."""


class Subscription:
    """One stream's interest in one channel; ``get()`` waits for the next item."""

    def __init__(self, hub: EventHub, channel: str) -> None:
        self.hub = hub
        self.channel = channel
        self.mailbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.confirmed = threading.Event()
        self.ready = False  # set once the stream reads its snapshot after confirmation
        self.closed = False

    def wait_confirmed(self, timeout: float) -> bool:
        return self.confirmed.wait(timeout)

    def get(self, timeout: float) -> object | None:
        """The next ServerSentEvent or RESYNC, or None after ``timeout`` seconds."""
        try:
            return self.mailbox.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.unsubscribe(self)


class EventHub:
    """One pub/sub connection per process, fanned out to the streams' mailboxes."""

    def __init__(self, client_factory: Callable[[], redis.Redis]) -> None:
        self.pid = os.getpid()
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._dirty = threading.Event()  # the wanted set changed
        self._closed = False
        self._pubsub: Any = None
        self._active: set[str] = set()  # channels we sent SUBSCRIBE for, not yet UNSUBSCRIBE
        self._unacked: dict[str, int] = {}  # SUBSCRIBEs sent per channel, not yet acknowledged
        self._thread = threading.Thread(target=self._run, name="delineate-event-hub", daemon=True)
        self._thread.start()

    @classmethod
    def for_settings(cls, settings: Settings) -> EventHub:
        """A hub on REDIS_URL's server (through Sentinel when configured: each reconnect
        asks for the current primary)."""

        def factory() -> redis.Redis:
            # No health-check interval (its PINGs would be written from other callers'
            # paths) and no hidden retries: the listener reconnects on its own terms.
            return redis_client(
                settings,
                decode_responses=True,
                socket_connect_timeout=2,
                socket_timeout=10,
                socket_keepalive=True,
                health_check_interval=0,
                retry=Retry(NoBackoff(), 0),
                client_name=f"{CLIENT_NAME_PREFIX}{os.getpid()}",  # visible in CLIENT LIST
            )

        return cls(factory)

    # -- streams' side ------------------------------------------------------------------

    def subscribe(self, channel: str) -> Subscription:
        """Register interest in ``channel``; wait with ``wait_confirmed`` before reading state."""
        sub = Subscription(self, channel)
        with self._lock:
            subs = self._subs.setdefault(channel, set())
            subs.add(sub)
            if channel in self._active and self._unacked.get(channel, 0) == 0:
                sub.confirmed.set()
        self._dirty.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.channel]
        self._dirty.set()

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def close(self) -> None:
        self._closed = True
        self._dirty.set()

    # -- the listener ---------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        last_seen = last_ping = time.monotonic()
        while not self._closed:
            try:
                self._reconcile()
                if self._pubsub is None or not self._active:
                    self._dirty.wait(PING_SECONDS)
                    last_seen = last_ping = time.monotonic()
                    continue
                message = self._pubsub.get_message(timeout=POLL_SECONDS)
                now = time.monotonic()
                if message is not None:
                    last_seen = now
                    self._dispatch(message)
                    failures = 0
                    continue
                if now - last_seen > DEAD_AFTER_SECONDS:
                    raise redis.ConnectionError(f"no answer from Redis for {now - last_seen:.0f} s")
                if now - last_ping > PING_SECONDS:
                    last_ping = now
                    self._pubsub.ping()
            except redis.RedisError as exc:
                wait = RECONNECT_BACKOFF_SECONDS[min(failures, len(RECONNECT_BACKOFF_SECONDS) - 1)]
                failures += 1
                logger.warning("event hub lost Redis (%s); resubscribing in %.1f s", exc, wait)
                self._drop_connection()
                time.sleep(wait)
                last_seen = last_ping = time.monotonic()
            except Exception:  # never let the listener die: every stream depends on it
                logger.exception("event hub listener error")
                self._drop_connection()
                time.sleep(1.0)
        self._drop_connection()

    def _reconcile(self) -> None:
        """Bring Redis's subscriptions in line with what the streams want."""
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        with self._lock:
            wanted = set(self._subs)
        add = sorted(wanted - self._active)
        drop = sorted(self._active - wanted)
        if not add and not drop:
            return
        if self._pubsub is None:
            self._pubsub = self._client_factory().pubsub()
        if add:
            with self._lock:
                for channel in add:
                    self._unacked[channel] = self._unacked.get(channel, 0) + 1
            self._active.update(add)
            self._pubsub.subscribe(*add)
        if drop:
            self._active.difference_update(drop)
            self._pubsub.unsubscribe(*drop)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        if kind == "message" and channel is not None:
            try:
                event = ServerSentEvent.from_message(message["data"])
            except (ValueError, TypeError):
                logger.warning("ignoring a malformed message on %s", channel)
                return
            with self._lock:
                targets = list(self._subs.get(channel, ()))
            for sub in targets:
                sub.mailbox.put(event)
        elif kind == "subscribe" and channel is not None:
            with self._lock:
                left = max(self._unacked.get(channel, 0) - 1, 0)
                self._unacked[channel] = left
                if left:
                    return
                self._unacked.pop(channel, None)
                targets = list(self._subs.get(channel, ()))
            for sub in targets:
                if sub.ready:  # it read its snapshot before this (re)subscription
                    sub.mailbox.put(RESYNC)
                sub.confirmed.set()

    def _drop_connection(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.RedisError, OSError) as exc:  # it is being thrown away anyway
                logger.debug("closing the event hub connection: %s", exc)
        with self._lock:
            self._active.clear()
            self._unacked.clear()
            # Everything must be subscribed again; until then no stream is confirmed.
            for subs in self._subs.values():
                for sub in subs:
                    if not sub.ready:
                        sub.confirmed.clear()
        self._dirty.set()


class StreamSlots:
    """Counts the open streams of one process against SSE_MAX_STREAMS."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.open = max(self.open - 1, 0)


class TenantStreams:
    """Each tenant's open streams across every API process, against its ``max_streams``: a
    sorted set per tenant (``streams_key``) of stream ids scored by their last heartbeat.

    A slot is one MULTI (drop stale entries, add, count): of two processes racing for the last
    one, the one counted past the limit removes its entry. A stream refreshes its score at each
    heartbeat and removes it at its end; a dead process's entries go stale (STALE_HEARTBEATS).
    """

    def __init__(self, client: redis.Redis, heartbeat_seconds: float) -> None:
        self.client = client
        self.stale_seconds = heartbeat_seconds * STALE_HEARTBEATS
        self.ttl_seconds = int(self.stale_seconds) + 1  # the set goes once nothing refreshes it

    def acquire(self, owner: str, limit: int) -> str | None:
        """A new stream's id, or None when ``owner`` holds ``limit`` streams.

        :raise redis.RedisError: Redis did not answer (the caller answers 503).
        """
        key, stream_id, now = streams_key(owner), uuid.uuid4().hex, time.time()
        oldest = f"{now - self.stale_seconds:.3f}"
        pipe = self.client.pipeline(transaction=True)
        pipe.zremrangebyscore(key, "-inf", f"({oldest}")
        pipe.zadd(key, {stream_id: now})
        pipe.zcount(key, oldest, "+inf")
        pipe.expire(key, self.ttl_seconds)
        if int(pipe.execute()[2]) > limit:
            self.client.zrem(key, stream_id)
            return None
        return stream_id

    def refresh(self, owner: str, stream_id: str) -> None:
        """At a heartbeat: still open (added again if Redis lost it); a Redis error is logged only."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(streams_key(owner), {stream_id: time.time()})
            pipe.expire(streams_key(owner), self.ttl_seconds)
            pipe.execute()
        except redis.RedisError as exc:
            logger.debug("stream %s of %r: heartbeat not recorded: %s", stream_id, owner, exc)

    def release(self, owner: str, stream_id: str) -> None:
        """The stream ended (on a Redis error its entry stops counting once stale)."""
        try:
            self.client.zrem(streams_key(owner), stream_id)
        except redis.RedisError as exc:
            logger.debug("stream %s of %r: slot left to go stale: %s", stream_id, owner, exc)
