"""Server-Sent Events and webhooks against the real stack: gunicorn (gevent), Celery, Redis, S3.

One module stack on its own Redis database: two Celery workers and one gunicorn with two
gevent workers, a 1 s heartbeat and webhooks allowed to 127.0.0.1. Jobs that must stay
open ("parked") are written to the store without being queued, and the test drives them
through the same JobStore writes a worker makes.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks.webhooks import Webhook

from delineate.api.sse import CLIENT_NAME_PREFIX
from delineate.broker.queue import PREPARE_DOWNLOAD
from delineate.config import Settings
from delineate.jobs.webhooks import verify
from delineate.models import TERMINAL_STATES, Job, JobState, Phase
from delineate.services import build_services
from delineate.store import JobStore
from delineate.store.keys import events_channel
from tests.support.receivers import WebhookReceiver as Receiver
from tests.support.stack import Service, free_port, poll_status, start_api, start_sweeper, start_worker, wait_for

pytestmark = pytest.mark.contract  # run in both FAST_PATHS modes by `make test`

SECRET = "test-webhook-secret"
TERMINAL = {state.value for state in TERMINAL_STATES}
STATUS_KEYS = {
    "jobId", "status", "progress", "completedFiles", "totalFiles", "availableFiles", "missingFileIds",
    "attempts", "downloadUrl", "size", "error", "createdAt", "updatedAt", "completedAt", "version",
    "phase", "bytesDone", "bytesTotal", "callback", "parts",
}  # fmt: skip


@dataclass
class Stack:
    settings: Settings
    base: str
    workers: list[Service]
    api: Service
    store: JobStore
    redis: redis.Redis


@pytest.fixture(scope="module")
def stack(make_settings: Callable[..., Settings], workdir: Path) -> Iterator[Stack]:
    settings = make_settings(
        # Receivers listen on these ports: a bare host would allow only 80 and 443.
        callback_allowed_hosts=tuple(f"127.0.0.1:{port}" for port in RECEIVER_PORTS),
        callback_secret=SECRET,
        download_delay_min_ms=800,
        download_delay_max_ms=1200,
        # Webhook retries are sent by the sweeper: a short schedule and a sweep a second.
        sweep_interval_seconds=1,
        webhook_retry_base_seconds=0.2,
        webhook_retry_max_delay_seconds=0.5,
    )
    workers = [start_worker(settings, workdir, f"worker-sse-{n}", concurrency=2) for n in (1, 2)]
    workers.append(start_sweeper(settings, workdir, "sweeper-sse"))
    api, base = start_api(settings, workdir, "api-sse", workers=2, SSE_HEARTBEAT_SECONDS="1")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield Stack(settings, base, workers, api, build_services(settings).store, client)
    api.stop()
    for worker in workers:
        worker.stop()


# -- a small SSE client that parses the raw byte stream ------------------------------------


@dataclass
class Block:
    """One block of the stream (up to a blank line): an event or comments."""

    raw: str
    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def event(self) -> str | None:
        return self.fields.get("event")

    @property
    def id(self) -> int:
        return int(self.fields["id"])

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.fields["data"])  # type: ignore[no-any-return]


def parse_block(raw: str) -> Block:
    block = Block(raw)
    for line in raw.split("\n"):
        if line.startswith(":"):
            block.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        assert name in {"event", "id", "data", "retry"}, f"unexpected line {line!r} in {raw!r}"
        assert name not in block.fields, f"repeated field in {raw!r}"
        block.fields[name] = value[1:] if value.startswith(" ") else value
    return block


class StreamReader:
    """Reads blocks from an open streaming response; ``closed`` once the server ended it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.iter_raw()
        self._buffer = ""
        self.closed = False

    def next_block(self) -> Block | None:
        while "\n\n" not in self._buffer:
            try:
                self._buffer += next(self._chunks).decode()
            except StopIteration:
                self.closed = True
                assert self._buffer == "", f"stream ended inside a block: {self._buffer!r}"
                return None
        raw, self._buffer = self._buffer.split("\n\n", 1)
        return parse_block(raw)

    def next_event(self) -> Block | None:
        while (block := self.next_block()) is not None:
            if block.fields:
                return block
        return None

    def rest(self) -> list[Block]:
        """Every event until the server closes the stream."""
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events


def open_stream(client: httpx.Client, job_id: str, **headers: str) -> Any:
    return client.stream("GET", f"/v1/download/stream/{job_id}", headers=headers)


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base, timeout=30) as client:
        yield client


def initiate(http: httpx.Client, ids: list[int], **extra: Any) -> str:
    response = http.post("/v1/download/initiate", json={"file_ids": ids, **extra})
    assert response.status_code == 202, response.text
    return str(response.json()["jobId"])


def park(stack: Stack, **job_fields: Any) -> Job:
    """A job in the store that no worker will run; the test writes its progress."""
    job_fields.setdefault("file_ids", [70000, 70007])
    job = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, **job_fields)
    stack.store.create(job)
    return job


def assert_well_formed(events: list[Block]) -> None:
    assert events, "no events"
    assert events[0].event == "connected"
    kinds = [e.event for e in events]
    assert sum(k in TERMINAL for k in kinds) == 1, kinds
    assert kinds[-1] in TERMINAL, kinds
    assert set(kinds[1:-1]) <= {"progress"}, kinds
    for event in events:
        assert set(event.fields) == {"event", "id", "data"}
        assert set(event.data) == STATUS_KEYS
        assert event.id == event.data["version"]
    ids = [e.id for e in events[1:]]
    assert ids == sorted(set(ids)) and ids[0] >= events[0].id, ids  # strictly increasing


def numsub(stack: Stack, channel: str) -> int:
    return int(dict(stack.redis.pubsub_numsub(channel))[channel])  # type: ignore[arg-type]


def hub_connections(stack: Stack) -> list[dict[str, Any]]:
    """This stack's hub connections (other tests' API processes share the redis-server)."""
    children = subprocess.run(["pgrep", "-P", str(stack.api.pid)], capture_output=True, text=True).stdout.split()
    names = {f"{CLIENT_NAME_PREFIX}{pid}" for pid in children}
    return [c for c in stack.redis.client_list() if c.get("name", "") in names]


# -- streams --------------------------------------------------------------------------------


def test_stream_from_connect_to_terminal(stack: Stack, http: httpx.Client) -> None:
    job_id = initiate(http, [70000, 70007, 70014, 70001])
    with open_stream(http, job_id) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-store"  # a completed event carries a link
        assert response.headers["x-accel-buffering"] == "no"
        reader = StreamReader(response)
        events = reader.rest()
        assert reader.closed  # the server closed the stream after the terminal event
    assert_well_formed(events)
    final = events[-1].data
    assert events[-1].event == "completed" and final["status"] == "completed"
    assert final["progress"] == 100 and final["phase"] == "done" and final["downloadUrl"]
    assert final["bytesDone"] == final["bytesTotal"] > 0
    assert {e.data["phase"] for e in events[1:-1]} <= {"queued", "checking", "bundling", "uploading"}
    assert any(e.event == "progress" and e.data["completedFiles"] > 0 for e in events), "no file progress"


def test_late_connect_gets_connected_terminal_and_close(stack: Stack, http: httpx.Client) -> None:
    job_id = initiate(http, [70001])  # no such file: fails
    poll_status(lambda j: http.get(f"/v1/download/status/{j}").json(), job_id, TERMINAL)
    with open_stream(http, job_id) as response:
        reader = StreamReader(response)
        events = reader.rest()
        assert reader.closed
    assert [e.event for e in events] == ["connected", "failed"]
    assert events[0].id == events[1].id and events[1].data["error"] == "No files available for download"


def test_last_event_id_resume_and_out_of_order_events(stack: Stack, http: httpx.Client) -> None:
    job = park(stack)
    stack.store.update(job.job_id, status=JobState.PROCESSING, phase=Phase.CHECKING)  # v2
    old = stack.store.get(job.job_id)
    stack.store.update(job.job_id, completedFiles=1, progress=45)  # v3
    with open_stream(http, job.job_id, **{"Last-Event-ID": "2"}) as response:
        reader = StreamReader(response)
        connected = reader.next_event()
        assert connected is not None and connected.event == "connected"
        assert connected.id == 3 and connected.data["completedFiles"] == 1  # what it missed
        assert old is not None
        stack.store.publish(old)  # a late, older publish (v2): dropped
        stack.store.update(job.job_id, completedFiles=2, progress=90)  # v4
        progress = reader.next_event()
        assert progress is not None and (progress.event, progress.id) == ("progress", 4)
        stack.store.update(job.job_id, status=JobState.CANCELLED, phase=Phase.DONE)  # v5
        rest = reader.rest()
        assert reader.closed
    assert [(e.event, e.id) for e in rest] == [("cancelled", 5)]


def test_heartbeat_comments_while_quiet(stack: Stack, http: httpx.Client) -> None:
    job = park(stack)
    with open_stream(http, job.job_id) as response:
        reader = StreamReader(response)
        assert (first := reader.next_block()) is not None and first.event == "connected"
        began = time.monotonic()
        beats = 0
        while beats < 2:
            block = reader.next_block()
            assert block is not None and not block.fields, "only heartbeats expected"
            assert block.comments == ["heartbeat"] and block.raw == ": heartbeat"
            beats += 1
        assert time.monotonic() - began < 10  # SSE_HEARTBEAT_SECONDS=1
        stack.store.update(job.job_id, status=JobState.CANCELLED, phase=Phase.DONE)
        assert [e.event for e in reader.rest()] == ["cancelled"]


def test_unknown_job_is_404_and_bad_id_400(http: httpx.Client) -> None:
    for path, status in [
        (f"/v1/download/stream/{uuid.uuid4()}", 404),
        ("/v1/download/stream/not-a-uuid", 400),
        ("/v1/download/stream", 404),  # a route name, never job "stream"; no such route without an id
    ]:
        response = http.get(path)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["requestId"] == response.headers["x-request-id"]


@pytest.mark.serial  # both gunicorn workers must get streams: a busy machine gives one all of them
def test_cross_process_two_apis_two_workers(stack: Stack, http: httpx.Client) -> None:
    """Streams on both gunicorn processes see jobs run by both Celery workers."""
    from celery import Celery

    from delineate.broker.app import celery_config

    jobs = [park(stack, file_ids=[70000, 70007, 70014]) for _ in range(6)]
    readers: dict[str, list[Block]] = {}
    errors: list[BaseException] = []
    opened: list[threading.Event] = []

    def follow(job_id: str, key: str, ready: threading.Event) -> None:
        try:
            with httpx.Client(base_url=stack.base, timeout=60) as own, open_stream(own, job_id) as response:
                reader = StreamReader(response)
                first = reader.next_event()
                ready.set()
                readers[key] = [first, *reader.rest()] if first else []
        except BaseException as exc:  # reported below
            errors.append(exc)
            ready.set()

    threads = []

    def add_stream(job_id: str) -> None:
        ready = threading.Event()
        opened.append(ready)
        thread = threading.Thread(target=follow, args=(job_id, f"{job_id}#{len(threads)}", ready), daemon=True)
        thread.start()
        threads.append(thread)
        assert ready.wait(30)

    # Open streams until every job's channel has a subscriber in BOTH API processes.
    for job in jobs:
        for _ in range(3):
            add_stream(job.job_id)
        tries = 0
        while numsub(stack, events_channel(job.job_id)) < 2:
            tries += 1
            assert tries < 80, "the second API process never took a stream"
            add_stream(job.job_id)
    assert len(hub_connections(stack)) >= 2

    # Now queue the jobs, as initiate does; both Celery workers take some.
    celery = Celery("delineate-test")
    celery.config_from_object(celery_config(stack.settings))
    for job in jobs:
        celery.send_task(PREPARE_DOWNLOAD, args=[job.job_id], task_id=job.job_id)
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(readers) == len(threads)
    for events in readers.values():
        assert_well_formed(events)
        assert events[-1].event == "completed"
    ran_on = [{j.job_id for j in jobs if f"job {j.job_id} started" in w.log()} for w in stack.workers]
    assert ran_on[0] | ran_on[1] == {j.job_id for j in jobs}
    assert ran_on[0] and ran_on[1], "one Celery worker ran every job"


def test_departed_clients_release_their_subscription(stack: Stack) -> None:
    job = park(stack)
    channel = events_channel(job.job_id)
    host, port = stack.base.removeprefix("http://").split(":")
    baseline = sum(1 for c in stack.redis.client_list() if int(c.get("sub", 0)) > 0)
    request = f"GET /v1/download/stream/{job.job_id} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sockets: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(request)
            sockets.append(sock)
        for sock in sockets:
            received = b""
            while b"event: connected" not in received:
                chunk = sock.recv(65536)
                assert chunk, "closed before the connected event"
                received += chunk
            assert received.startswith(b"HTTP/1.1 200")
        assert numsub(stack, channel) >= 1
        assert len(hub_connections(stack)) <= 2  # one per API process, not one per stream
    finally:
        for sock in sockets:
            sock.close()
    wait_for(lambda: numsub(stack, channel) == 0, 20, "subscriptions released")
    wait_for(
        lambda: sum(1 for c in stack.redis.client_list() if int(c.get("sub", 0)) > 0) <= baseline,
        20,
        "no Redis connection subscribed beyond the baseline",
    )
    assert len(hub_connections(stack)) <= 2


def test_stream_cap_answers_503(stack: Stack, workdir: Path) -> None:
    api, base = start_api(stack.settings, workdir, "api-sse-cap", workers=1, SSE_MAX_STREAMS="2")
    job = park(stack)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            with open_stream(client, job.job_id) as one, open_stream(client, job.job_id) as two:
                for response in (one, two):
                    assert StreamReader(response).next_event() is not None
                refused = client.get(f"/v1/download/stream/{job.job_id}")
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "5"
                body = refused.json()
                assert body["error"] == "service_unavailable" and body["requestId"]

            def accepted() -> bool:  # the two slots are released once the clients left
                with open_stream(client, job.job_id) as response:
                    return bool(response.status_code == 200)

            wait_for(accepted, 20, "a stream slot after the clients left", interval=0.3)
    finally:
        api.stop()


# -- webhooks -------------------------------------------------------------------------------


RECEIVER_PORTS = [free_port() for _ in range(8)]
"""The receivers' ports, listed in CALLBACK_ALLOWED_HOSTS; receivers take them in turn."""
_next_port = itertools.cycle(RECEIVER_PORTS)


@pytest.fixture()
def receiver_factory() -> Iterator[Callable[[list[int]], Receiver]]:
    made: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        for _ in RECEIVER_PORTS:  # a listed port some other socket took meanwhile: the next one
            try:
                made.append(Receiver(statuses, next(_next_port)))
                return made[-1]
            except OSError:
                continue
        raise RuntimeError(f"every receiver port is taken: {RECEIVER_PORTS}")

    yield make
    for receiver in made:
        receiver.close()


def callback_of(http: httpx.Client, job_id: str, state: str) -> dict[str, Any]:
    def get(j: str) -> dict[str, Any]:
        status = http.get(f"/v1/download/status/{j}").json()
        return {"status": (status["callback"] or {}).get("status"), "full": status}

    return poll_status(get, job_id, {state}, timeout=40)["full"]["callback"]  # type: ignore[index]


def assert_signed(headers: dict[str, str], body: bytes, event: str) -> dict[str, Any]:
    assert verify(body, headers["x-delineate-signature"], SECRET)
    Webhook(SECRET.encode()).verify(body, headers)  # the Standard Webhooks headers, by the reference library
    assert headers["x-delineate-event"] == event
    assert headers["content-type"] == "application/json"
    status = json.loads(body)
    assert status["status"] == event and set(status) == STATUS_KEYS | {"owner"}
    assert status["owner"] == ""  # open mode: the one tenant, named ""
    return status  # type: ignore[no-any-return]


def test_webhook_delivered_and_signed(http: httpx.Client, receiver_factory: Any) -> None:
    receiver = receiver_factory([])
    job_id = initiate(http, [70000, 70007], callback_url=receiver.url)
    assert http.get(f"/v1/download/status/{job_id}").json()["callback"]["status"] in {"pending", "delivered"}
    callback = callback_of(http, job_id, "delivered")
    assert callback == {"status": "delivered", "attempts": 1, "lastError": None}
    assert len(receiver.received) == 1
    status = assert_signed(*receiver.received[0], "completed")
    assert status["jobId"] == job_id and status["downloadUrl"]


def test_webhook_retried_after_two_500s(http: httpx.Client, receiver_factory: Any) -> None:
    receiver = receiver_factory([500, 500])
    job_id = initiate(http, [70001], callback_url=receiver.url)
    callback = callback_of(http, job_id, "delivered")
    assert callback == {"status": "delivered", "attempts": 3, "lastError": None}
    assert len(receiver.received) == 3
    bodies = [assert_signed(headers, body, "failed") for headers, body in receiver.received]
    assert [b["callback"]["attempts"] for b in bodies] == [0, 1, 2]  # the record at each send
    assert bodies[1]["callback"]["lastError"] == "HTTP 500"


def test_cancel_from_the_api_sends_the_webhook(stack: Stack, http: httpx.Client, receiver_factory: Any) -> None:
    receiver = receiver_factory([])
    job = park(stack, callback_url=receiver.url)
    assert http.delete(f"/v1/download/{job.job_id}").status_code == 202
    assert callback_of(http, job.job_id, "delivered")["attempts"] == 1
    assert_signed(*receiver.received[0], "cancelled")


def test_webhook_to_a_non_ascii_path_is_stored_and_sent_percent_encoded(
    stack: Stack, http: httpx.Client, receiver_factory: Any
) -> None:
    receiver = receiver_factory([])
    job_id = initiate(http, [70000], callback_url=receiver.url.replace("/hook", "/é"))
    assert stack.store.get(job_id).callback_url == receiver.url.replace("/hook", "/%C3%A9")  # type: ignore[union-attr]
    assert callback_of(http, job_id, "delivered") == {"status": "delivered", "attempts": 1, "lastError": None}
    headers, body = receiver.received[0]
    assert_signed(headers, body, "completed")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9/hook",  # only 127.0.0.1 is listed, and hosts match literally
        "http://example.com/hook",
        "ftp://127.0.0.1/hook",
        "http://user:pass@127.0.0.1/hook",
        "not a url",
    ],
)
def test_refused_callback_urls(http: httpx.Client, url: str) -> None:
    response = http.post("/v1/download/initiate", json={"file_ids": [70000], "callback_url": url})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and body["details"][0]["path"] == "$.callback_url"
    assert body["requestId"] == response.headers["x-request-id"]
