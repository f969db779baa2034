"""Tracing (OpenTelemetry) and the ids that tie traces, logs and Sentry events together.

One trace spans a request, the Celery message it sends, the task that runs it and the
task's S3 and Redis calls: Flask, Celery, redis-py and botocore are instrumented, and
the context travels in the message headers (``traceparent``). The Celery instrumentation
runs in the worker only, where the tasks are registered (it ends a publish span by
looking its task up by name); the API's publishes get their span from
:mod:`delineate.broker.queue`, which writes the headers itself.

Set up once per process by an entry point, after any fork: :func:`setup_tracing` in
each gunicorn worker (``delineate.wsgi`` is imported per worker; do not ``--preload``)
and in the Celery worker's ``worker_init`` (threads pool: one process, no fork per task).

Only when OTEL_EXPORTER_OTLP_ENDPOINT is set: without it nothing is instrumented and no
span is made, so tracing costs nothing where nobody collects it (it was a fifth of a
status request's CPU when spans were made for nowhere), and responses, log lines and
Sentry events carry no trace id. Which traces are kept follows the SDK's own variables,
OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (unset: every trace).

Client spans (Redis, S3) are kept only inside a trace that a request or a task
started: kombu's broker polling, lease renewals and the health checks' pings would
otherwise each make a one-span trace every second.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from delineate.config import Settings

logger = logging.getLogger(__name__)

API_SERVICE = "delineate-api"
WORKER_SERVICE = "delineate-worker"

EXPORT_INTERVAL_MILLIS = 2000
"""How often finished spans are sent to the collector, in milliseconds."""

TRACE_ID_HEADER = "X-Trace-Id"

_ready_in_pid: int | None = None
_celery_in_pid: int | None = None


class _DropOrphanClientSpans(Sampler):
    """A trace starts at a request, a task or a publish, never at a client call; the
    rest is decided by the configured sampler (``delegate``)."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind in (SpanKind.CLIENT, SpanKind.INTERNAL):
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"DropOrphanClientSpans({self.delegate.get_description()})"


_SAMPLERS = {
    "always_on": lambda arg: ALWAYS_ON,
    "always_off": lambda arg: ALWAYS_OFF,
    "traceidratio": lambda arg: TraceIdRatioBased(arg),
    "parentbased_always_on": lambda arg: ParentBased(ALWAYS_ON),
    "parentbased_always_off": lambda arg: ParentBased(ALWAYS_OFF),
    "parentbased_traceidratio": lambda arg: ParentBased(TraceIdRatioBased(arg)),
}
"""OTEL_TRACES_SAMPLER's values, as the SDK defines them (its default: parentbased_always_on)."""


def configured_sampler(name: str, ratio: float) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER (and its ratio OTEL_TRACES_SAMPLER_ARG) name."""
    return _SAMPLERS[name or "parentbased_always_on"](ratio)


def tracing_ready() -> bool:
    """Whether :func:`setup_tracing` ran in this process."""
    return _ready_in_pid == os.getpid()


def celery_instrumented() -> bool:
    """Whether the Celery instrumentation traces this process's publishes (the worker)."""
    return _celery_in_pid == os.getpid()


def setup_tracing(settings: Settings, service_name: str) -> bool:
    """With an OTLP endpoint, install the tracer provider and instrument Redis, botocore
    and, in the worker, Celery (once per process). Returns whether tracing is on."""
    global _ready_in_pid, _celery_in_pid
    if tracing_ready():
        return True
    if not settings.otel_exporter_otlp_endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    sampler = configured_sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=_DropOrphanClientSpans(sampler),
    )
    endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=EXPORT_INTERVAL_MILLIS)
    )
    logger.info("tracing: exporting spans of %s to %s (%s)", service_name, endpoint, sampler.get_description())
    trace.set_tracer_provider(provider)
    if service_name == WORKER_SERVICE:
        # Only where the tasks are registered: for a task it cannot find by name, the
        # instrumentation opens a publish span and never ends it. Elsewhere (the API)
        # task_queue.send_task makes the publish span and writes the headers.
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument(tracer_provider=provider)
        _celery_in_pid = os.getpid()
    RedisInstrumentor().instrument(tracer_provider=provider)
    BotocoreInstrumentor().instrument(tracer_provider=provider)
    _ready_in_pid = os.getpid()
    return True


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


RequestIds = Callable[[], "dict[str, str] | None"]
_request_ids: RequestIds | None = None


def use_request_ids(provider: RequestIds) -> None:
    """Where :func:`current_ids` learns the current request's ids: a function that answers
    None outside a request (the API sets it: :mod:`delineate.api.request_context`)."""
    global _request_ids
    _request_ids = provider


def current_ids() -> dict[str, str]:
    """request_id, job_id, trace_id and span_id where known: in a request, a task, a span."""
    in_request = _request_ids() if _request_ids is not None else None
    if in_request is not None:
        ids = dict(in_request)
    else:
        ids = {}
        job_id = _current_task_job_id()
        if job_id:
            ids["job_id"] = job_id
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        ids["trace_id"] = format(context.trace_id, "032x")
        ids["span_id"] = format(context.span_id, "016x")
    return ids


def _current_task_job_id() -> str | None:
    from celery import current_task

    task = current_task._get_current_object() if current_task else None
    if task is None or not getattr(task, "name", "").startswith("delineate."):
        return None
    request_ = task.request
    # Every delineate task takes the job id first (and prepare_download's task id is it).
    args = request_.args or ()
    if args and isinstance(args[0], str):
        return args[0]
    return request_.id  # type: ignore[no-any-return]
