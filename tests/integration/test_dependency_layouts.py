"""What kombu and redis-py leave on a real Redis, read the way our code reads it.

The shapes only behaviour proves, beside the pure ones in
``tests/unit/test_dependency_shapes.py``; failures name the library, its version and what
changed (``tests/support/shapes.py``). Related, and not repeated here: kombu's channel with
one shared client (``test_celery_transport.py``) and the lanes under a hung or restarted
Redis (``test_redis_lanes.py``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import hiredis
import orjson
import pytest
import redis
from celery import Celery

from delineate.broker.app import make_celery
from delineate.broker.queue import CELERY_QUEUE, DELIVER_WEBHOOK, PREPARE_DOWNLOAD, send_task
from delineate.broker.queues import PRIORITY_SEP, RESTORE_SCRIPT, UNACKED_INDEX, UNACKED_LIST, read_broker
from delineate.config import load_settings
from delineate.ids import new_uuid
from delineate.redis_io.direct import DirectRedis
from delineate.redis_io.pipelined import _reply_reader
from tests.support.shapes import changed
from tests.support.stack import start_redis

SWEEPER = "delineate/broker/queues.py reads it for the sweeper (delineate/jobs/sweeper.py)"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service, port = start_redis(tmp_path_factory.mktemp("layouts"))
    yield f"redis://127.0.0.1:{port}/0"
    service.stop()


@pytest.fixture()
def broker(redis_url: str) -> Iterator[redis.Redis]:
    """The broker as the sweeper reads it (``sweeper_for``: replies decoded)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture()
def celery(redis_url: str, broker: redis.Redis, request: pytest.FixtureRequest) -> Celery:
    """The project's Celery app on this Redis, with the transport ``--fast-paths`` picks."""
    fast = request.config.getoption("--fast-paths") == "true"
    settings = load_settings(environ={}, overrides={"redis_url": redis_url, "fast_paths": fast}, dotenv_path=None)
    return make_celery(settings, None, "layouts")


def _marked(payload: dict[str, Any]) -> dict[str, Any]:
    """A held message's payload as the sweeper puts it back (marked redelivered, as kombu does)."""
    marked: dict[str, Any] = orjson.loads(orjson.dumps(payload))
    marked["headers"]["redelivered"] = True
    marked["properties"]["delivery_info"]["redelivered"] = True
    return marked


def test_kombu_keeps_queued_and_held_messages_where_the_sweeper_reads_them(celery: Celery, broker: redis.Redis) -> None:
    job, hook = new_uuid(), new_uuid()
    celery.send_task(PREPARE_DOWNLOAD, args=[job], task_id=job, countdown=60, ignore_result=True)
    send_task(celery, DELIVER_WEBHOOK, [hook, 1])
    view = read_broker(broker)
    waiting = broker.lrange(CELERY_QUEUE, 0, -1)
    assert job in view.queued and hook in view.webhooks_queued, changed(
        "kombu", f"a published message is not found on the list {CELERY_QUEUE!r} as JSON: {waiting!r}", SWEEPER
    )
    with celery.connection_for_read() as connection:
        channel = connection.default_channel
        before = time.time()
        message = channel.basic_get(CELERY_QUEUE, no_ack=False)  # taken as a worker takes it (acks_late)
        after = time.time()
        assert message is not None and message.headers["id"] == job  # first in, first out
        held = read_broker(broker).held.get(job)
        raw = broker.hgetall(UNACKED_LIST)
        assert held is not None, changed(
            "kombu", f"a taken message is not in the hash {UNACKED_LIST!r} as [payload, exchange, key]: {raw}", SWEEPER
        )
        assert held.tag == message.delivery_tag and held.queue == CELERY_QUEUE, changed(
            "kombu", f"the hash {UNACKED_LIST!r} is not keyed by delivery tag, or holds another routing key", SWEEPER
        )
        assert before - 1 <= held.taken_at <= after + 1, changed(
            "kombu", f"the sorted set {UNACKED_INDEX!r} does not score a held message by when it was taken", SWEEPER
        )
        assert held.eta is not None and abs(held.eta - (before + 60)) < 5, changed(
            "celery", f"the eta header is not an ISO time: {held.payload['headers'].get('eta')!r}", SWEEPER
        )

        # kombu's own restore and the sweeper's put the same message on the same end of the list.
        channel.qos.restore_by_tag(message.delivery_tag)
        restored = orjson.loads(broker.lindex(CELERY_QUEUE, -1))  # type: ignore[arg-type]
        assert restored == _marked(held.payload), changed(
            "kombu", "its restore now writes the message otherwise than the sweeper does", SWEEPER
        )
        message = channel.basic_get(CELERY_QUEUE, no_ack=False)
        assert message is not None and message.headers["id"] == job
        held = read_broker(broker).held[job]
        restore = broker.register_script(RESTORE_SCRIPT)
        assert restore(
            keys=[UNACKED_LIST, UNACKED_INDEX, held.queue], args=[held.tag, orjson.dumps(_marked(held.payload))]
        )
        assert broker.hlen(UNACKED_LIST) == 0 and broker.zcard(UNACKED_INDEX) == 0
        again = channel.basic_get(CELERY_QUEUE, no_ack=True)
        assert again is not None and again.headers["id"] == job, changed(
            "kombu", "a message pushed onto the right end of the list is no longer the next one taken", SWEEPER
        )
        assert again.delivery_info.get("redelivered") is True, changed(
            "kombu",
            "properties.delivery_info.redelivered no longer reaches the consumer",
            "celery_app/tasks.py reads it",
        )
        assert again.decode()[0] == [job]


def test_kombu_names_priority_lists_as_the_sweeper_reads_them(celery: Celery, broker: redis.Redis) -> None:
    job = new_uuid()
    celery.send_task(PREPARE_DOWNLOAD, args=[job], task_id=job, priority=5, ignore_result=True)
    keys = sorted(broker.keys(f"{CELERY_QUEUE}*"))
    assert keys == [f"{CELERY_QUEUE}{PRIORITY_SEP}3"] and job in read_broker(broker).queued, changed(
        "kombu", f"a priority-5 message went to {keys} (expected {CELERY_QUEUE!r} + sep + '3')", SWEEPER
    )


def test_redis_connection_socket_carries_the_lanes_round_trips(redis_url: str) -> None:
    """The pipelined lane writes and reads on ``Connection._sock`` after redis-py's own
    connect; the watchdog ends a call past its deadline by shutting that socket."""
    user = "delineate/redis_io/ (pipelined.py writes and reads on it, base.py's watchdog shuts it)"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    pool = client.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    connection.connect()  # HELLO, AUTH, SELECT: redis-py's handshake
    sock = connection._sock
    assert isinstance(sock, socket.socket), changed("redis", "Connection._sock is not the socket after connect()", user)
    commands = [("SET", "layouts:k", "v"), ("EVALSHA", "0" * 40, 0), ("GET", "layouts:k")]
    sock.sendall(b"".join(hiredis.pack_command(command) for command in commands))
    reader, replies = _reply_reader(connection), []
    while len(replies) < len(commands):
        reply = reader.gets()
        if reply is False:
            reader.feed(sock.recv(65536))
        else:
            replies.append(reply)
    assert replies[0] == "OK" and isinstance(replies[1], redis.exceptions.NoScriptError) and replies[2] == "v", changed(
        "redis", f"replies read on Connection._sock came back as {replies!r}", user, switch=True
    )
    connection.disconnect()
    assert connection._sock is None, changed("redis", "Connection._sock is not None after disconnect()", user)

    lane = DirectRedis(pool, timeout_seconds=0.3)
    began = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        lane.command("BLPOP", "layouts:never", 0)  # blocks until the watchdog shuts the socket
    assert time.monotonic() - began < 1.5, changed(
        "redis", "shutting Connection._sock no longer ends a blocked read_response", user, switch=True
    )
