"""The sweeper finishes every job whatever happened to its message, and cleans up storage.

Each test runs its own workers (and sweeper) on its own Redis database with SHORT
settings (a sweep every second), so the shared stack never sees these jobs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from delineate import create_app
from delineate.broker.queue import CELERY_QUEUE
from delineate.ids import new_uuid
from delineate.jobs.sweeper import sweeper_for
from delineate.models import Job, JobState
from delineate.services import build_services
from delineate.storage import Storage, bundle_key
from delineate.store.keys import job_key
from tests.faults.test_core import _client_and_get
from tests.support.stack import (
    free_port,
    poll_status,
    start_aof_redis,
    start_api,
    start_sweeper,
    start_worker,
    wait_for,
)

SHORT = {"sweep_interval_seconds": 1, "job_lease_seconds": 3, "visibility_timeout_seconds": 120}
"""A sweep every second; leases short enough that a dead runner is noticed in seconds."""


def _create_queued(app: Any, with_message: bool) -> str:
    """A job written as initiate writes it, with or without its broker message."""
    job = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=[70000, 70007])
    queue = app.extensions["delineate_tasks"]
    with queue.message(job.job_id) as enqueue:
        app.extensions["delineate"].store.create(job, enqueue=enqueue if with_message else None)
    return job.job_id


def test_a_long_queue_is_not_multiplied_and_lost_messages_come_back(make_settings: Any) -> None:
    settings = make_settings(**SHORT)
    app = create_app(settings)
    broker = app.extensions["delineate"].redis
    waiting = [_create_queued(app, with_message=True) for _ in range(10_000)]
    lost = [_create_queued(app, with_message=False) for _ in range(5)]
    assert broker.llen(CELERY_QUEUE) == 10_000
    sweeper = sweeper_for(app.extensions["celery"])
    time.sleep(2.1)  # every job is now stale (two intervals without a write)
    reports = []
    for _ in range(5):  # several sweeps, no worker at all
        began = time.monotonic()
        reports.append(sweeper.sweep())
        assert time.monotonic() - began < 5.0
        time.sleep(1.0)
    assert broker.llen(CELERY_QUEUE) == 10_000 + len(lost)  # one new message per lost job, none for the rest
    assert sorted(j for r in reports for j in r.republished) == sorted(lost)
    assert not any(r.restored for r in reports)
    assert reports[0].republished == []  # first seen suspect, acted on at the next sweep
    assert app.extensions["delineate"].store.get(waiting[0]).status is JobState.QUEUED


def test_lost_jobs_behind_more_than_a_batch_of_queued_ones_come_back(make_settings: Any, monkeypatch: Any) -> None:
    """A sweep reads at most BATCH stale jobs, oldest first: the queued ones it finds in the
    broker move back in the index, so the lost ones behind them are reached."""
    import delineate.jobs.sweeper as sweeper_module

    monkeypatch.setattr(sweeper_module, "BATCH", 50)
    app = create_app(make_settings(**SHORT))
    for _ in range(50):
        _create_queued(app, with_message=True)
    time.sleep(1.1)  # the lost ones strictly newer: every batch of the old order is the 50 queued
    lost = [_create_queued(app, with_message=False) for _ in range(3)]
    sweeper = sweeper_for(app.extensions["celery"])
    time.sleep(2.1)
    republished: list[str] = []
    for _ in range(6):
        republished += sweeper.sweep().republished
        time.sleep(1.0)
    assert sorted(republished) == sorted(lost)


def test_a_job_past_its_deadline_fails_saying_why(make_settings: Any) -> None:
    settings = make_settings(job_deadline_seconds=2, **SHORT)
    app = create_app(settings)
    job_id = _create_queued(app, with_message=True)  # waiting in a queue no worker serves
    time.sleep(2.2)
    report = sweeper_for(app.extensions["celery"]).sweep()
    assert report.deadline_failed == [job_id]
    job = app.extensions["delineate"].store.get(job_id)
    assert job.status is JobState.FAILED and "not finished within JOB_DEADLINE_SECONDS (2 s" in job.error


def test_broker_queue_emptied_behind_a_paused_worker_jobs_still_complete(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(download_delay_enabled=False, **SHORT)
    client, get = _client_and_get(settings)
    broker = create_app(settings).extensions["delineate"].redis
    worker = start_worker(settings, workdir, "worker-emptied", concurrency=4)
    sweeper = start_sweeper(settings, workdir, "sweeper-emptied")
    try:
        os.kill(worker.pid, signal.SIGSTOP)
        ids = [
            client.post("/v1/download/initiate", json={"file_ids": [70000, 70007, 70014]}).get_json()["jobId"]
            for _ in range(20)
        ]
        assert broker.delete(CELERY_QUEUE) == 1  # every waiting message gone (a broker failover, a flush)
        os.kill(worker.pid, signal.SIGCONT)
        began = time.monotonic()
        for job_id in ids:
            done = poll_status(get, job_id, {"completed", "failed"}, timeout=60)
            assert done["status"] == "completed", done
        assert time.monotonic() - began < 6 * settings.sweep_interval_seconds + 10
        assert "had no message" in sweeper.log()
    finally:
        worker.stop()
        sweeper.stop()


class Hook:
    """A webhook receiver on a fixed port that can be down (connection refused) or up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.received: list[bytes] = []
        self.server: Any = None

    def up(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.received.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def test_webhook_receiver_down_for_a_while_gets_its_delivery_once(make_settings: Any, workdir: Path) -> None:
    hook = Hook(free_port())  # nothing listens yet: every attempt is refused
    settings = make_settings(
        download_delay_enabled=False,
        callback_allowed_hosts=(f"127.0.0.1:{hook.port}",),
        callback_secret="s3cret",
        webhook_retry_base_seconds=0.3,
        webhook_retry_max_delay_seconds=1.0,
        webhook_retry_window_seconds=120,
        **SHORT,
    )
    client, get = _client_and_get(settings)
    worker = start_worker(settings, workdir, "worker-hook-down", concurrency=2)
    sweeper = start_sweeper(settings, workdir, "sweeper-hook-down")
    try:
        job_id = client.post("/v1/download/initiate", json={"file_ids": [70000], "callback_url": hook.url}).get_json()[
            "jobId"
        ]
        poll_status(get, job_id, {"completed"}, timeout=30)
        wait_for(lambda: (get(job_id)["callback"] or {}).get("attempts", 0) >= 3, 30, "three refused attempts")
        worker.stop()  # the schedule lives in Redis: a worker restart loses nothing
        worker = start_worker(settings, workdir, "worker-hook-down-2", concurrency=2)
        assert get(job_id)["callback"]["status"] == "retrying"
        hook.up()
        wait_for(lambda: get(job_id)["callback"]["status"] == "delivered", 30, "the delivery")
        time.sleep(3 * settings.sweep_interval_seconds)  # nothing more is sent after that
        callback = get(job_id)["callback"]
        assert len(hook.received) == 1 and callback["attempts"] >= 4 and callback["lastError"] is None
    finally:
        hook.down()
        worker.stop()
        sweeper.stop()


def test_expired_jobs_bundle_and_stale_uploads_leave_the_bucket(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(download_delay_enabled=False, job_ttl_seconds=4, multipart_abort_after_seconds=1, **SHORT)
    storage = Storage(settings)
    client, get = _client_and_get(settings)
    worker = start_worker(settings, workdir, "worker-expiry", concurrency=2)
    sweeper = start_sweeper(settings, workdir, "sweeper-expiry")
    try:
        job_id = client.post("/v1/download/initiate", json={"file_ids": [70000, 70007]}).get_json()["jobId"]
        poll_status(get, job_id, {"completed"}, timeout=30)
        assert storage.head(bundle_key(job_id)) is not None
        abandoned = storage._client.create_multipart_upload(Bucket=storage.bucket, Key="bundles/abandoned.zip")
        wait_for(lambda: client.get(f"/v1/download/status/{job_id}").status_code == 404, 10, "the job's expiry")
        expired_at = time.monotonic()
        wait_for(
            lambda: storage.head(bundle_key(job_id)) is None, 3 * settings.sweep_interval_seconds + 2, "bundle gone"
        )
        assert time.monotonic() - expired_at <= 3 * settings.sweep_interval_seconds + 1
        uploads = storage._client.list_multipart_uploads(Bucket=storage.bucket, Prefix="bundles/").get("Uploads", [])
        assert abandoned["UploadId"] not in {u["UploadId"] for u in uploads}
    finally:
        worker.stop()
        sweeper.stop()


def test_sse_stream_whose_terminal_publish_was_dropped_still_ends(make_settings: Any, workdir: Path) -> None:
    settings = make_settings()
    app = create_app(settings)
    store = app.extensions["delineate"].store
    job_id = _create_queued(app, with_message=False)  # no worker will touch it
    api, base = start_api(settings, workdir, "api-sse-backstop", SSE_HEARTBEAT_SECONDS="1")
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            with http.stream("GET", f"/v1/download/stream/{job_id}") as response:
                lines = response.iter_lines()
                assert next(lines) == "event: connected"
                store.write(job_id, status=JobState.FAILED, error="written, never published")  # no publish
                began = time.monotonic()
                events = [line for line in lines if line.startswith("event: ")]  # ends when the server closes
                assert events == ["event: failed"]
                assert time.monotonic() - began < 2.5  # within about one heartbeat
    finally:
        api.stop()


def test_api_killed_between_record_and_publish_job_still_completes(make_settings: Any, workdir: Path) -> None:
    base_settings = make_settings(download_delay_enabled=False, **SHORT)
    # A broker apart from the job store: initiate writes the record, then publishes.
    broker_url = (
        base_settings.redis_url.rsplit("/", 1)[0] + "/" + str(int(base_settings.redis_url.rsplit("/", 1)[1]) + 100)
    )
    settings = base_settings.replace(celery_broker_url=broker_url)
    worker = start_worker(settings, workdir, "worker-api-crash", concurrency=2)
    sweeper = start_sweeper(settings, workdir, "sweeper-api-crash")
    api, base = start_api(
        settings, workdir, "api-crash", app="tests.support.fault_api:app", TEST_EXIT_BEFORE_PUBLISH="1"
    )
    store = create_app(settings).extensions["delineate"].store
    try:
        with httpx.Client(base_url=base, timeout=10) as http, pytest.raises(httpx.TransportError):
            http.post("/v1/download/initiate", json={"file_ids": [70000, 70007]})  # the worker process dies
        (key,) = store.redis.keys(job_key("*"))
        job_id = str(key).rsplit(":", 1)[1]
        assert store.get(job_id).status is JobState.QUEUED  # written, its message never sent
        done = poll_status(lambda j: store.status(store.get(j)), job_id, {"completed", "failed"}, timeout=30)
        assert done["status"] == "completed" and done["attempts"] == 1
    finally:
        api.stop()
        worker.stop()
        sweeper.stop()


def test_redis_killed_under_30_running_jobs_all_complete(make_settings: Any, workdir: Path) -> None:
    port = free_port()
    redis_service = start_aof_redis(workdir, port)
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{port}/0", download_delay_min_ms=3000, download_delay_max_ms=4000, **SHORT
    )
    worker = start_worker(settings, workdir, "worker-redis-kill", concurrency=40, supervised=True)
    sweeper = start_sweeper(settings, workdir, "sweeper-redis-kill")
    try:
        client, get = _client_and_get(settings)
        ids = [
            client.post("/v1/download/initiate", json={"file_ids": [70000, 70007, 70014]}).get_json()["jobId"]
            for _ in range(30)
        ]
        wait_for(lambda: all(get(j)["status"] == "processing" for j in ids), 30, "30 jobs running")
        redis_service.kill()  # SIGKILL: no shutdown, connections refused from now on
        time.sleep(5)
        redis_service = start_aof_redis(workdir, port)
        client, get = _client_and_get(settings)
        wait_for(lambda: all(get(j)["status"] in {"completed", "failed"} for j in ids), 90, "all 30 jobs")
        final = [get(j) for j in ids]
        assert {s["status"] for s in final} == {"completed"}, [s["error"] for s in final if s["error"]]
        # The worker lived through it, or (a kombu bug on the lost connection) its supervisor
        # restarted it, as `make run`, compose and Kubernetes do.
        assert worker.running()
        log = worker.log()
        assert log.count("ready.") == 1 or "supervise: celery exited" in log
    finally:
        worker.stop()
        sweeper.stop()
        redis_service.stop()


def test_webhook_never_queued_is_sent_by_the_sweeper(make_settings: Any, workdir: Path) -> None:
    hook = Hook(free_port())
    hook.up()
    settings = make_settings(callback_allowed_hosts=(f"127.0.0.1:{hook.port}",), callback_secret="s3cret", **SHORT)
    store = build_services(settings).store  # a store without the hook that queues attempt 1
    job = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=[70000], callback_url=hook.url)
    job.callback = {"status": "pending", "attempts": 0, "lastError": None}
    store.create(job)
    store.update(job.job_id, status=JobState.COMPLETED, progress=100)  # as a worker dying right after would
    worker = start_worker(settings, workdir, "worker-hook-lost", concurrency=2)
    sweeper = start_sweeper(settings, workdir, "sweeper-hook-lost")
    try:
        wait_for(lambda: (store.get(job.job_id).callback or {}).get("status") == "delivered", 20, "the delivery")
        assert len(hook.received) == 1 and store.get(job.job_id).callback["attempts"] == 1
    finally:
        hook.down()
        worker.stop()
        sweeper.stop()


def test_webhook_waiting_in_a_long_queue_is_not_sent_again(make_settings: Any) -> None:
    settings = make_settings(callback_allowed_hosts=("127.0.0.1:9",), callback_secret="s3cret", **SHORT)
    app = create_app(settings)  # its store queues attempt 1 when the job ends; no worker takes it
    store, broker = app.extensions["delineate"].store, app.extensions["delineate"].redis
    job = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=[70000], callback_url="http://127.0.0.1:9/hook")
    job.callback = {"status": "pending", "attempts": 0, "lastError": None}
    store.create(job)
    store.update(job.job_id, status=JobState.COMPLETED, progress=100)
    assert broker.llen(CELERY_QUEUE) == 1  # attempt 1, waiting
    sweeper = sweeper_for(app.extensions["celery"])
    claim = store.webhook_claim_seconds
    time.sleep(claim + 0.5)  # the delivery is due again, its message still waits
    assert sweeper.sweep().webhooks_sent == 0 and broker.llen(CELERY_QUEUE) == 1
    broker.delete(CELERY_QUEUE)  # now the message is lost
    time.sleep(claim + 0.5)
    assert sweeper.sweep().webhooks_sent == 1 and broker.llen(CELERY_QUEUE) == 1
