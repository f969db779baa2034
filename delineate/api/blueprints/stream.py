"""``GET /v1/download/stream/{jobId}``: a job's progress as Server-Sent Events.

``connected`` (the current status), then ``progress`` events, then exactly one terminal
event (``completed``, ``failed`` or ``cancelled``), then the server closes the stream.
Each event's data is the full status and its id the status ``version``. The stream
subscribes before it reads the snapshot, so a job that ends in between still delivers
its terminal event; events at or below the last version sent are dropped (publishes
can arrive out of order). At each heartbeat a quiet stream re-reads the job (one HGETALL),
so a lost publish (Redis failing over, a worker dying between its write and its
publish) costs at most one heartbeat, never a stream that hangs.

Two caps on open streams, each answered 503 with Retry-After: SSE_MAX_STREAMS per process,
and with API keys each tenant's ``max_streams`` over every API process (counted in Redis,
refreshed at each heartbeat: ``TenantStreams``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis
from flask import Blueprint, Response, current_app, g, request, stream_with_context

from delineate.api.edge.auth import current_owner, load_owned_job
from delineate.api.flask_app import services
from delineate.api.metrics import sse_stream_open
from delineate.api.sse import RESYNC, EventHub, ServerSentEvent, StreamSlots, Subscription, TenantStreams, comment
from delineate.api.validation import parse_job_id
from delineate.errors import ServiceUnavailable
from delineate.models import Job
from delineate.services import REQUEST_ANSWER_SECONDS
from delineate.store import JobStore
from delineate.store.keys import events_channel
from delineate.telemetry.audit import NO_STORE, audit_link

logger = logging.getLogger(__name__)

bp = Blueprint("stream", __name__, url_prefix="/v1/download")

SUBSCRIBE_TIMEOUT_SECONDS = REQUEST_ANSWER_SECONDS
"""How long a new stream waits for Redis to acknowledge its subscription, in seconds: a
stalled Redis is a 503 with Retry-After within a second, as for any request (it was 10 s)."""

DISCONNECT_CHECK_SECONDS = 1.0
"""How often a quiet stream looks whether its client has gone (releasing its slot)."""

RETRY_AFTER_SECONDS = 5
"""Retry-After sent with 503 when the process holds SSE_MAX_STREAMS streams, or the tenant
its ``max_streams``."""

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": NO_STORE,  # its events may carry a presigned link
    "X-Accel-Buffering": "no",  # nginx: do not buffer this response
}


@dataclass
class StreamState:
    """Per process: the shared subscriber and the stream counters (the process's, the tenants')."""

    hub: EventHub
    slots: StreamSlots
    tenants: TenantStreams


_state_lock = threading.Lock()


def stream_state() -> StreamState:
    """This process's hub and slots, created on first use (after gunicorn's fork)."""
    holder: dict[int, StreamState] = current_app.extensions.setdefault("delineate_sse", {})
    pid = os.getpid()
    state = holder.get(pid)
    if state is None:
        with _state_lock:
            state = holder.get(pid)
            if state is None:
                settings = services().settings
                holder.clear()  # a parent's hub is not ours after a fork
                state = StreamState(
                    EventHub.for_settings(settings),
                    StreamSlots(settings.sse_max_streams),
                    TenantStreams(services().redis, settings.sse_heartbeat_seconds),
                )
                holder[pid] = state
    return state


def _event_for(job: Job, store: JobStore, kind: str | None = None) -> ServerSentEvent:
    if kind is None:
        kind = job.status.value if job.status.terminal else "progress"
    return ServerSentEvent.from_status(kind, store.status(job))


def _client_gone(sock: socket.socket | None) -> bool:
    """True when the client closed its end (EOF is readable). Never blocks.

    Peeks with MSG_DONTWAIT on the real socket under gevent's wrapper (whose recv would
    wait for data). Not select(): it fails on descriptors >= 1024, i.e. past ~1,000 streams.
    """
    if sock is None:
        return False
    raw = getattr(sock, "_sock", sock)  # gevent's socket wraps the OS socket as _sock
    try:
        return bool(raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: still there
    except OSError:
        return True  # reset, or closed on our side


def _events(
    sub: Subscription,
    job: Job,
    store: JobStore,
    heartbeat_seconds: float,
    sock: socket.socket | None,
    on_heartbeat: Callable[[], None] | None = None,
    on_link: Callable[[str], None] | None = None,
) -> Iterator[str]:
    last = job.version
    yield _event_for(job, store, "connected").wire
    if job.status.terminal:
        final = _event_for(job, store)
        _audit(final, on_link)
        yield final.wire
        return
    now = time.monotonic()
    next_beat = now + heartbeat_seconds
    next_check = now + DISCONNECT_CHECK_SECONDS
    while True:
        item = sub.get(min(next_beat, next_check) - time.monotonic())
        now = time.monotonic()
        if now >= next_beat:  # whether or not events are flowing
            next_beat = now + heartbeat_seconds
            if on_heartbeat is not None:
                on_heartbeat()  # the tenant's slot is still held
            yield comment("heartbeat")
            if item is None:
                item = RESYNC  # the backstop: a lost publish costs at most one heartbeat
        if now >= next_check:
            next_check = now + DISCONNECT_CHECK_SECONDS
            if _client_gone(sock):
                return
        if item is None:
            continue
        if item is RESYNC:  # events may have been lost (Redis away, a publish dropped)
            try:
                fresh = store.get(job.job_id)
            except redis.RedisError as exc:  # Redis away: the next heartbeat tries again
                logger.debug("job %s: stream re-read failed: %s", job.job_id, exc)
                continue
            if fresh is None:
                return  # expired: nothing more will come
            event = _event_for(fresh, store)
        else:
            assert isinstance(item, ServerSentEvent)
            event = item
        if event.version <= last:
            continue
        last = event.version
        _audit(event, on_link)
        yield event.wire
        if event.terminal:
            return


def _audit(event: ServerSentEvent, on_link: Callable[[str], None] | None) -> None:
    """Hand a presigned link an event carries to ``on_link`` (only a completed job's does)."""
    if on_link is not None and event.terminal and '"downloadUrl":"' in event.data:
        url = json.loads(event.data).get("downloadUrl")
        if isinstance(url, str):
            on_link(url)


@bp.get("/stream/<job_id>")
def stream(job_id: str) -> Response:
    """Stream a job's status.

    :raise 400: not a UUID.  :raise 404: unknown or expired job.
    :raise 503: this process holds SSE_MAX_STREAMS streams, the caller's tenant its
        ``max_streams`` (with API keys), or Redis did not answer.
    """
    job_id = parse_job_id(job_id)
    svc = services()
    state = stream_state()
    if not state.slots.acquire():
        raise ServiceUnavailable(
            f"This server holds its maximum of {state.slots.limit} streams; try again shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    owner = current_owner()
    slot: str | None = None  # the tenant's slot (with API keys)
    sub: Subscription | None = None
    released = False

    def release(wait: bool = True) -> None:
        nonlocal released
        if not released:
            released = True
            if sub is not None:
                sub.close()
            state.slots.release()
            if slot is not None:
                if wait:
                    state.tenants.release(owner, slot)
                else:  # the 503 goes now, not one more Redis deadline later
                    threading.Thread(target=state.tenants.release, args=(owner, slot), daemon=True).start()

    def heartbeat() -> None:
        if slot is not None:
            state.tenants.refresh(owner, slot)

    try:
        tenants = svc.tenants.current
        if tenants.keyed:  # open mode: one tenant, the per-process cap alone
            limit = tenants.tenant(owner).max_streams
            slot = state.tenants.acquire(owner, limit)  # a Redis error: 503 (blueprints/errors.py)
            if slot is None:
                raise ServiceUnavailable(
                    f"This API key's tenant holds its maximum of {limit} open streams; close one or try again shortly.",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
        sub = state.hub.subscribe(events_channel(job_id))
        if not sub.wait_confirmed(SUBSCRIBE_TIMEOUT_SECONDS):
            raise ServiceUnavailable(
                "The event bus (Redis) did not answer; try again shortly.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        sub.ready = True  # from here on, a resubscription means: re-read the snapshot
        job = load_owned_job(job_id)  # read AFTER subscribing: the terminal event cannot slip by
    except BaseException:
        release(wait=False)  # (a stalled Redis is the usual reason: the slot's removal may wait)
        raise
    subscribed = sub  # (a name the generator can keep: the closure's `sub` is not narrowed)
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id:
        logger.debug("job %s: stream resumed after event %s (now %d)", job_id, last_event_id, job.version)
    sock = request.environ.get("gunicorn.socket")
    request_id, client = g.get("request_id"), request.remote_addr

    def on_link(url: str) -> None:
        audit_link(url, job.owner, job.job_id, request_id, client, via="stream")

    def generate() -> Iterator[str]:
        try:
            with sse_stream_open():
                yield from _events(
                    subscribed, job, svc.store, svc.settings.sse_heartbeat_seconds, sock, heartbeat, on_link
                )
        finally:
            release()

    response = Response(stream_with_context(generate()), headers=HEADERS)
    response.call_on_close(release)  # also when the body was never iterated
    return response
