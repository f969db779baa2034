"""The task message initiate writes itself must be the one Celery would have sent.

Celery's own ``send_task`` publishes through kombu's in-memory transport here (a
virtual transport like Redis's: the same envelope); the message built by
``delineate.task_queue.task_message`` must match it field by field, except the values
that are new for every message.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from celery import Celery

from delineate.task_queue import CELERY_QUEUE, PREPARE_DOWNLOAD, task_message

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
    assert ours.keys() == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert ours["headers"] == theirs["headers"]
    assert ours["content-type"] == theirs["content-type"]
    assert ours["content-encoding"] == theirs["content-encoding"]
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(base64.b64decode(theirs["body"]))
    fresh = {"delivery_tag"}  # a new one per message
    assert {k: v for k, v in ours["properties"].items() if k not in fresh} == {
        k: v for k, v in theirs["properties"].items() if k not in fresh
    }
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
