"""Putting ``prepare_download`` on the Celery queue, together with the job's record.

When the broker is the job store's own Redis (the default: CELERY_BROKER_URL follows
REDIS_URL), initiate writes the record and pushes the task's message in ONE Lua script
(``JobStore.create``). That closes the window in which a crash between the two left a
queued job no worker would ever see, and it saves Celery's publish, which cost about a
fifth of an initiate's CPU (kombu builds a Redis client object per publish).

The message is Celery's protocol 2 as kombu's Redis transport stores it (a JSON
envelope with the base64 body, headers and properties, LPUSHed onto the queue's list);
``tests/unit/test_task_queue.py`` compares it field by field with what Celery's own
``send_task`` produces, so an upgrade that changes the format fails a test. When the
broker is another Redis, the task is sent with ``send_task`` after the record is written.

With tracing on, the publish gets its PRODUCER span and the trace context goes into
the message headers, as the Celery instrumentation does for ``send_task``. Only the
worker instruments Celery (the instrumentation needs the task in the process's registry
to end its publish span); the API's publishes go through :func:`send_task`, which makes
that span itself.

The task and queue names are defined here, once; ``celery_app`` and the API both use them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from celery import Celery
from celery.utils.nodenames import anon_nodename

from delineate.config import Settings
from delineate.ids import new_uuid
from delineate.telemetry.tracing import celery_instrumented, tracing_ready

PREPARE_DOWNLOAD = "delineate.prepare_download"
"""The task that runs a job (its Celery task id is the job id)."""

DELIVER_WEBHOOK = "delineate.deliver_webhook"
"""The task that makes one webhook delivery attempt (args: job id, attempt number)."""

SWEEP_TASK = "delineate.sweep"
"""The task of one sweep (``delineate/jobs/sweeper.py``), sent by beat."""

CELERY_QUEUE = "celery"
"""The queue (a Redis list on the broker) Celery's workers consume by default."""

SWEEP_QUEUE = "delineate.sweep"
"""The sweeper's own queue: only the sweeper process (``worker --beat -Q delineate.sweep``)
consumes it, so a sweep never waits behind downloads."""

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(
    task: str,
    task_id: str,
    args: list[Any],
    *,
    origin: str,
    reply_to: str,
    extra_headers: dict[str, str] | None = None,
) -> str:
    """The broker message of ``task(*args)``, as kombu's Redis transport stores it."""
    body = orjson.dumps([args, {}, _EMBED])
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": origin,
        "ignore_result": True,  # the job hash is the truth; nobody waits on Celery's result
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    if extra_headers:
        headers.update(extra_headers)
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": CELERY_QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": new_uuid(),
        },
    }
    return orjson.dumps(envelope).decode()


BEFORE_SEND_HOOKS: list[Callable[[str], None]] = []
"""Called with the job id just before its message is published through Celery. Empty in
every production process; ``tests/support/fault_api.py`` puts a crash here."""


def broker_is_the_store(settings: Settings) -> bool:
    """Whether Celery's broker is the job store's own Redis (and database): then the store's
    scripts push task messages themselves."""
    return settings.celery_broker_url == settings.redis_url


class TaskQueue:
    """Sends ``prepare_download`` for a job: inside the job store's script, or by Celery."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.celery = celery
        #: Whether the message can go in the job store's script (same Redis, same database).
        self.atomic = broker_is_the_store(settings)
        self._origin = anon_nodename()
        self._reply_to = str(celery.thread_oid)

    @contextmanager
    def message(self, job_id: str) -> Iterator[tuple[str, str] | None]:
        """``(queue, message)`` for ``JobStore.create(enqueue=...)``, or None when not atomic.

        Use it around the write: with tracing on, the write is the publish span.
        """
        if not self.atomic:
            yield None
            return
        if not tracing_ready():
            yield CELERY_QUEUE, self._message(job_id, None)
            return
        with publish_span(PREPARE_DOWNLOAD, job_id) as carrier:
            yield CELERY_QUEUE, self._message(job_id, carrier)

    def _message(self, job_id: str, headers: dict[str, str] | None) -> str:
        return task_message(
            PREPARE_DOWNLOAD, job_id, [job_id], origin=self._origin, reply_to=self._reply_to, extra_headers=headers
        )

    def send(self, job_id: str) -> None:
        """Publish through Celery (when the broker is not the job store's Redis)."""
        for hook in BEFORE_SEND_HOOKS:  # empty, unless the fault tests' entry point armed one
            hook(job_id)
        send_task(self.celery, PREPARE_DOWNLOAD, [job_id], task_id=job_id)


@contextmanager
def publish_span(task: str, task_id: str) -> Iterator[dict[str, str]]:
    """The PRODUCER span of publishing ``task``, named and described as the Celery
    instrumentation does (``apply_async/<task>``); yields the headers that carry the
    trace context into the message. Only with tracing on."""
    from opentelemetry import propagate, trace

    tracer = trace.get_tracer(__name__)
    queue = SWEEP_QUEUE if task == SWEEP_TASK else CELERY_QUEUE
    attributes = {"celery.action": "apply_async", "celery.task_name": task,
                  "messaging.message.id": task_id, "messaging.destination.name": queue}  # fmt: skip
    with tracer.start_as_current_span(f"apply_async/{task}", kind=trace.SpanKind.PRODUCER, attributes=attributes):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier


def send_task(celery: Celery, task: str, args: list[Any], *, task_id: str | None = None) -> None:
    """Publish ``task(*args)`` through Celery, fire and forget.

    ignore_result: nobody waits on Celery's result (the job hash is the truth), and
    asking for it would subscribe to a result channel per message. With tracing on in a
    process where Celery is not instrumented (the API), the publish gets its span here
    and the trace context goes in the message headers, where the worker's
    instrumentation reads it; where Celery is instrumented (the worker), it does both.
    """
    if not tracing_ready() or celery_instrumented():
        celery.send_task(task, args=args, task_id=task_id, ignore_result=True)
        return
    task_id = task_id or new_uuid()
    with publish_span(task, task_id) as carrier:
        celery.send_task(task, args=args, task_id=task_id, ignore_result=True, headers=carrier)
