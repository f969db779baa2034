"""Reading the broker: which jobs have a message waiting in Celery's queue, and which a worker
holds unacknowledged (kombu's Redis transport layout), and putting one held message back.

The sweeper (:mod:`delineate.jobs.sweeper`) asks this once per sweep. The layout is kombu's,
not a public API: ``tests/unit/test_dependency_shapes.py`` (the key names) and
``tests/integration/test_dependency_layouts.py`` (what a real publish, take and put-back
leave in Redis) pin it against the installed kombu; the message itself is Celery's protocol 2
(``tests/unit/test_task_queue.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import redis

from delineate.broker.queue import CELERY_QUEUE, DELIVER_WEBHOOK, PREPARE_DOWNLOAD

UNACKED_LIST = "unacked"
UNACKED_INDEX = "unacked_index"
"""kombu's Redis transport: taken but unacknowledged messages, and when each was taken."""

PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
"""kombu's Redis transport: a queue's other priority lists are ``{queue}{PRIORITY_SEP}{step}``
(priority 0 is the queue itself)."""

_TASK_ID = re.compile(r'"id": ?"([0-9a-f-]{36})"')
_TASK_NAME = re.compile(r'"task": ?"([^"]+)"')
_FIRST_ARG = re.compile(r"\"argsrepr\": ?\"\['([0-9a-f-]{36})'")

# Put one unacknowledged message back at the head of its queue, unless it was meanwhile
# acknowledged or restored (as kombu's own restore does, but for one message, now).
RESTORE_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
"""


@dataclass
class Held:
    """A prepare_download message a worker holds unacknowledged."""

    tag: str
    taken_at: float
    eta: float | None
    payload: dict[str, Any]
    queue: str


@dataclass
class BrokerView:
    """Which jobs have a message waiting in the queue, and which a worker holds."""

    queued: set[str] = field(default_factory=set)
    #: jobs with a deliver_webhook message waiting in the queue
    webhooks_queued: set[str] = field(default_factory=set)
    held: dict[str, Held] = field(default_factory=dict)


def _eta_seconds(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def read_broker(broker: redis.Redis) -> BrokerView:
    """The broker's view of prepare_download messages (job id = task id), and of the
    deliver_webhook messages waiting (job id = first argument)."""
    view = BrokerView()
    for queue in (CELERY_QUEUE, *(f"{CELERY_QUEUE}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS)):
        start = 0
        while True:
            chunk = broker.lrange(queue, start, start + 999)
            for raw in chunk:
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                name, task_id = _TASK_NAME.search(text), _TASK_ID.search(text)
                if name and task_id and name[1] == PREPARE_DOWNLOAD:
                    view.queued.add(task_id[1])
                elif name and name[1] == DELIVER_WEBHOOK and (arg := _FIRST_ARG.search(text)):
                    view.webhooks_queued.add(arg[1])
            if len(chunk) < 1000:
                break
            start += 1000
    rows: Any = broker.zrange(UNACKED_INDEX, 0, -1, withscores=True)
    taken = {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in rows}
    for tag, raw in broker.hgetall(UNACKED_LIST).items():
        try:
            payload, _exchange, routing_key = orjson.loads(raw)
            headers = payload.get("headers") or {}
        except (ValueError, TypeError, AttributeError):
            continue
        if headers.get("task") != PREPARE_DOWNLOAD or not headers.get("id"):
            continue
        tag = tag.decode() if isinstance(tag, bytes) else str(tag)
        view.held[str(headers["id"])] = Held(
            tag, taken.get(tag, 0.0), _eta_seconds(headers.get("eta")), payload, routing_key or CELERY_QUEUE
        )
    return view
