"""The task message initiate writes itself must be the one Celery would have sent.

Celery's own ``send_task`` publishes through kombu's in-memory transport here (a
virtual transport like Redis's: the same envelope); the message built by
``delineate.broker.queue.task_message`` must match it field by field, except the values
that are new for every message. Then what ``send_task`` adds with tracing on, and that
the task and queue names defined in ``task_queue`` are the ones Celery and the deploy
files use. (The rest of the broker's layout: ``tests/unit/test_dependency_shapes.py``.)
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from celery import Celery

from delineate.broker import queue as task_queue
from delineate.broker.app import celery_config
from delineate.broker.queue import (
    CELERY_QUEUE,
    DELIVER_WEBHOOK,
    PREPARE_DOWNLOAD,
    SWEEP_QUEUE,
    SWEEP_TASK,
    task_message,
)
from delineate.config import load_settings
from tests.support.shapes import changed

JOB_ID = "0b6f3c1e-7d0a-4c1e-9a57-3f2d1e0c9b8a"


@pytest.fixture()
def celery_message() -> dict[str, Any]:
    app = Celery("probe", broker="memory://")
    app.conf.update(task_serializer="json", accept_content=["json"])
    app.send_task(PREPARE_DOWNLOAD, args=[JOB_ID], task_id=JOB_ID, ignore_result=True)
    with app.connection_for_read() as connection:
        message = connection.default_channel._get(CELERY_QUEUE)
    return message  # type: ignore[no-any-return]


def test_message_matches_celerys_own(celery_message: dict[str, Any]) -> None:
    ours = json.loads(
        task_message(
            PREPARE_DOWNLOAD,
            JOB_ID,
            [JOB_ID],
            origin=celery_message["headers"]["origin"],
            reply_to=celery_message["properties"]["reply_to"],
        )
    )
    theirs = celery_message
    user = "delineate/broker/queue.py (task_message) writes it in initiate's script"
    assert ours.keys() == theirs.keys(), changed("kombu", f"the envelope's fields are {sorted(theirs)}", user)
    assert ours["headers"] == theirs["headers"], changed("celery", "send_task writes other headers", user)
    assert ours["content-type"] == theirs["content-type"]
    assert ours["content-encoding"] == theirs["content-encoding"]
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(base64.b64decode(theirs["body"])), changed(
        "celery", "send_task writes another body", user
    )
    fresh = {"delivery_tag"}  # a new one per message
    assert {k: v for k, v in ours["properties"].items() if k not in fresh} == {
        k: v for k, v in theirs["properties"].items() if k not in fresh
    }, changed("kombu", "the envelope's properties differ", user)
    assert ours["properties"]["delivery_tag"] != theirs["properties"]["delivery_tag"]


def test_extra_headers_carry_the_trace_context() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = json.loads(
        task_message(
            PREPARE_DOWNLOAD, JOB_ID, [JOB_ID], origin="o", reply_to="r", extra_headers={"traceparent": traceparent}
        )
    )
    assert message["headers"]["traceparent"] == traceparent
    assert message["headers"]["task"] == PREPARE_DOWNLOAD


def test_every_message_has_its_own_delivery_tag() -> None:
    tags = {
        json.loads(task_message(PREPARE_DOWNLOAD, JOB_ID, [JOB_ID], origin="o", reply_to="r"))["properties"][
            "delivery_tag"
        ]
        for _ in range(50)
    }
    assert len(tags) == 50


def _sent_message(app: Celery) -> dict[str, Any]:
    with app.connection_for_read() as connection:
        return connection.default_channel._get(CELERY_QUEUE)  # type: ignore[no-any-return]


def test_send_task_carries_the_trace_context_where_celery_is_not_instrumented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # As in the API: tracing on, the Celery instrumentation off (it runs in the worker only).
    monkeypatch.setattr(task_queue, "tracing_ready", lambda: True)
    monkeypatch.setattr(task_queue, "celery_instrumented", lambda: False)
    monkeypatch.setattr(trace, "get_tracer", lambda *_, **__: provider.get_tracer("test"))
    app = Celery("probe", broker="memory://")
    app.conf.update(task_serializer="json", accept_content=["json"])
    task_queue.send_task(app, PREPARE_DOWNLOAD, [JOB_ID], task_id=JOB_ID)
    headers = _sent_message(app)["headers"]
    (span,) = exporter.get_finished_spans()
    assert span.name == f"apply_async/{PREPARE_DOWNLOAD}" and span.kind == trace.SpanKind.PRODUCER
    context = span.get_span_context()
    # The protocol-2 headers, where the worker's instrumentation reads the parent.
    assert headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert headers["id"] == JOB_ID and headers["task"] == PREPARE_DOWNLOAD


def test_send_task_without_tracing_sends_celerys_own_message() -> None:
    app = Celery("probe", broker="memory://")
    app.conf.update(task_serializer="json", accept_content=["json"])
    task_queue.send_task(app, DELIVER_WEBHOOK, [JOB_ID, 1])
    headers = _sent_message(app)["headers"]
    assert headers["task"] == DELIVER_WEBHOOK and headers["ignore_result"] is True
    assert "traceparent" not in headers


def test_the_sweeper_consumes_the_queue_beat_sends_the_sweep_to() -> None:
    from tests.support import deploy_checks as dc

    config = celery_config(load_settings(environ={}, dotenv_path=None))
    assert config["task_routes"][SWEEP_TASK] == {"queue": SWEEP_QUEUE}
    assert config["beat_schedule"]["sweep"]["options"]["queue"] == SWEEP_QUEUE
    assert config["task_default_queue"] == CELERY_QUEUE
    compose = dc.load_compose()["services"]["sweeper"]["command"]
    (k8s,) = [d for d in dc.load_yaml_all(dc.ROOT / "deploy/k8s/sweeper-deployment.yaml") if d["kind"] == "Deployment"]
    for label, command in (("compose", compose), ("k8s", dc._container(k8s)["command"])):
        assert dc.sweep_queue_problems(label, command) == []
        broken = ["delineate.other" if word == SWEEP_QUEUE else word for word in command]
        assert dc.sweep_queue_problems(label, broken), label
