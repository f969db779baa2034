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

from celery_app.sweeper import sweeper_for
from delineate import create_app
from delineate.config import Settings
from delineate.ids import new_uuid
from delineate.models import Job, JobState
from delineate.task_queue import CELERY_QUEUE
from tests.stack import BIN, Service, poll_status, settings_env, start_worker, wait_for
from tests.test_faults_core import _client_and_get

SHORT = {"sweep_interval_seconds": 1, "job_lease_seconds": 3, "visibility_timeout_seconds": 120}
"""A sweep every second; leases short enough that a dead runner is noticed in seconds."""


def start_sweeper(settings: Settings, workdir: Path, name: str) -> Service:
    """The sweeper process as `make run`, compose and k8s start it: beat inside a worker
    that consumes only the sweep queue."""
    command = [
        str(BIN / "celery"), "-A", "celery_app.worker", "--quiet", "worker", "--beat",
        "-S", "celery.beat:Scheduler", "-Q", "delineate.sweep", "-c", "2", "-n", f"{name}@%h",
        "--loglevel=INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    service = Service(name, command, workdir / f"{name}.log", settings_env(settings)).start()
    wait_for(lambda: "ready." in service.log() or not service.running(), 60, f"sweeper {name}")
    if not service.running():
        raise RuntimeError(f"sweeper {name} exited:\n{service.log()[-3000:]}")
    return service


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
