"""Flower's "Failed" and the job store agree: a run that ends its job ``failed`` is a
FAILURE task in Celery, counted once in ``delineate_jobs_total{status="failed"}``, never
retried nor run twice.

A real Flower (``python -m delineate.flower``, as ``make flower`` starts it) watches
workers started without ``-E``: task events come from the Celery configuration. Three
workers run one after another on the same Redis database, one for each way a run fails
a job: no file available (a healthy worker), a permanent storage error (a wrong S3
secret), and giving up on a transient one (no S3 at all, ``MAX_RETRIES=0``). A job the
sweeper fails (past JOB_DEADLINE_SECONDS) is not a run of the task, so Flower never
counts it; none happens here. The Flower runs with its memory bounds (FLOWER_BOUNDS).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import redis
from flask.testing import FlaskClient

from delineate import create_app
from delineate.broker.queue import CELERY_QUEUE, PREPARE_DOWNLOAD
from delineate.broker.queues import UNACKED_INDEX, UNACKED_LIST
from delineate.config import Settings
from delineate.flower import FLOWER_BOUNDS
from delineate.jobs.run import NO_FILES_ERROR
from tests.support.receivers import SentryReceiver
from tests.support.stack import Service, free_port, poll_status, settings_env, start_worker, wait_for

TERMINAL = {"completed", "failed", "cancelled"}
WORKERS = ("worker-flower-ok", "worker-flower-denied", "worker-flower-nos3")


class Flower:
    """A Flower process and what it answers (its task list and its Prometheus counters)."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.base = f"http://127.0.0.1:{settings.flower_port}"
        env = settings_env(settings, FLOWER_UNAUTHENTICATED_API="true")
        self.service = Service("flower", [sys.executable, "-m", "delineate.flower"], workdir / "flower.log", env)

    def start(self) -> Flower:
        self.service.start()
        wait_for(self._answers, 30, "Flower", interval=0.2)
        assert self.service.running(), self.service.log()[-3000:]
        return self

    def _answers(self) -> bool:
        if not self.service.running():
            return True
        try:
            return httpx.get(f"{self.base}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def argv(self) -> list[str]:
        """The running Flower's command line (``delineate.flower`` replaced itself with it)."""
        return Path(f"/proc/{self.service.pid}/cmdline").read_bytes().decode().split("\0")[:-1]

    def tasks(self, state: str | None = None) -> dict[str, dict[str, Any]]:
        params = {"taskname": PREPARE_DOWNLOAD, **({"state": state} if state else {})}
        response = httpx.get(f"{self.base}/api/tasks", params=params, timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def events(self, event_type: str) -> float:
        """``flower_events_total`` of our task for ``event_type``, summed over workers (the
        per-worker "Failed" column of Flower's Workers page counts ``task-failed``)."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        total = 0.0
        for labels, value in re.findall(r"^flower_events_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
            if f'type="{event_type}"' in labels and f'task="{PREPARE_DOWNLOAD}"' in labels:
                total += float(value)
        return total

    def sees_worker(self, name: str) -> bool:
        """Flower has this worker's events (worker-online, heartbeats) on its event stream."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        return re.search(rf'^flower_worker_online\{{worker="{re.escape(name)}@[^"]+"\}} 1\.0$', text, re.M) is not None


def _metric(client: FlaskClient, name: str, labels: str = "") -> float:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def _run_phase(
    settings: Settings,
    workdir: Path,
    flower: Flower,
    client: FlaskClient,
    name: str,
    jobs: list[list[int]],
    **env: str,
) -> list[dict[str, Any]]:
    """Start a worker, run ``jobs`` (lists of file ids) on it to their end, stop it."""
    worker = start_worker(settings, workdir, name, concurrency=4, **cast("dict[str, Any]", env))  # (env vars)
    try:
        wait_for(lambda: flower.sees_worker(name), 15, f"Flower seeing {name}", interval=0.2)
        ids = []
        for file_ids in jobs:
            response = client.post("/v1/download/initiate", json={"file_ids": file_ids})
            assert response.status_code == 202, response.get_json()
            ids.append(response.get_json()["jobId"])

        def status(job_id: str) -> dict[str, Any]:
            return dict(client.get(f"/v1/download/status/{job_id}").get_json())

        return [poll_status(status, job_id, TERMINAL, timeout=30) for job_id in ids]
    finally:
        worker.stop()


def test_flower_failed_count_equals_failed_jobs(make_settings: Callable[..., Settings], workdir: Path) -> None:
    sentry = SentryReceiver()
    sentry.start()
    settings = make_settings(flower_port=free_port(), sentry_dsn=sentry.dsn)
    flower = Flower(settings, workdir).start()
    client = create_app(settings).test_client()
    try:
        # Bounded memory (delineate/flower.py; tests/unit/test_dependency_shapes.py shows Flower reads the flags).
        assert set(FLOWER_BOUNDS) <= set(flower.argv()), flower.argv()
        done = _run_phase(
            settings,
            workdir,
            flower,
            client,
            WORKERS[0],
            [[70001], [70002], [70003, 70004], [70000], [70007, 70014]],
        )
        # A wrong secret: every HEAD is refused (403), a permanent storage error.
        done += _run_phase(
            settings, workdir, flower, client, WORKERS[1], [[70021]], S3_SECRET_ACCESS_KEY="wrong-secret"
        )
        # No store at all, no retries allowed: the run gives up on its first attempt.
        done += _run_phase(
            settings,
            workdir,
            flower,
            client,
            WORKERS[2],
            [[70028]],
            S3_ENDPOINT=f"http://127.0.0.1:{free_port()}",
            MAX_RETRIES="0",
        )
        failed = {job["jobId"]: job for job in done if job["status"] == "failed"}
        completed = [job for job in done if job["status"] == "completed"]
        assert len(failed) == 5 and len(completed) == 2, done
        errors = sorted(job["error"] for job in failed.values())
        assert errors.count(NO_FILES_ERROR) == 3, errors
        assert any(e.startswith("Storage error: ") for e in errors), errors
        assert any(e.startswith("Gave up after 1 attempts; ") for e in errors), errors

        # Flower gets the workers' events asynchronously: wait for every job's final task state.
        def flower_final() -> bool:
            states = {tid: t["state"] for tid, t in flower.tasks().items()}
            return all(states.get(job["jobId"]) in {"SUCCESS", "FAILURE"} for job in done)

        wait_for(flower_final, 15, "Flower's final state of every task", interval=0.2)
        flower_failed = flower.tasks("FAILURE")
        assert set(flower_failed) == set(failed), "Flower's failed tasks are the failed jobs"
        assert flower.events("task-failed") == len(failed), "Flower's Failed count"
        assert flower.events("task-retried") == 0
        assert _metric(client, "delineate_jobs_total", '{status="failed"}') == len(failed)
        assert _metric(client, "delineate_jobs_total", '{status="completed"}') == len(completed)
        assert _metric(client, "delineate_job_retries_total") == 0

        # (No Celery result to read: messages carry ignore_result, the job hash is the truth.)
        for job_id, job in failed.items():
            task = flower_failed[job_id]
            assert task["state"] == "FAILURE" and task["retries"] == 0
            assert task["exception"].startswith("JobFailed("), task["exception"]
            assert job["error"] in task["exception"], (job["error"], task["exception"])
            assert job["attempts"] == 1, job  # ran once: no Celery retry, no second delivery
        for job in completed:
            assert flower.tasks()[job["jobId"]]["state"] == "SUCCESS" and job["attempts"] == 1

        # Every message acknowledged (acks_late acks a failure): nothing left to redeliver,
        # neither held (unacked) nor put back in the queue by the workers' warm shutdown.
        with redis.Redis.from_url(settings.celery_broker_url) as broker:
            assert broker.llen(CELERY_QUEUE) == 0
            assert broker.hlen(UNACKED_LIST) == 0 and broker.zcard(UNACKED_INDEX) == 0
        # Each job ran once; an expected failure is an INFO line with no exc_info (Celery's
        # own context, traceback text included, rides along in "data"), never "Internal error".
        lines = [
            json.loads(line)
            for name in WORKERS
            for line in (workdir / f"{name}.log").read_text().splitlines()
            if line.startswith("{")
        ]
        for job in done:
            mine = [line for line in lines if line.get("job_id") == job["jobId"]]
            assert sum(line["message"].startswith(f"job {job['jobId']} started") for line in mine) == 1, mine
            expected = [line for line in mine if "raised expected: JobFailed(" in line["message"]]
            assert len(expected) == (job["status"] == "failed"), mine
            assert all(line["level"] == "INFO" and "exc_info" not in line for line in expected), expected
        celery_errors = [line for line in lines if line["logger"].startswith(("celery", "celery_app"))]
        assert not [line for line in celery_errors if line["level"] in {"ERROR", "CRITICAL"}], celery_errors
        assert all(job["error"] and "Internal error" not in job["error"] for job in failed.values())

        # Sentry: no crash report of a JobFailed (``throws``). The "job … failed" ERROR lines
        # of the storage and give-up paths still become events (the logging integration):
        # waiting for them shows the workers' events did reach the receiver.
        logged = {job_id for job_id, job in failed.items() if job["error"] != NO_FILES_ERROR}

        def tagged() -> set[str]:
            return {str(e.get("tags", {}).get("job_id")) for e in sentry.events()}

        wait_for(lambda: logged <= tagged(), 15, "the Sentry events of the failure log lines", interval=0.2)
        types = [v.get("type") for e in sentry.events() for v in e.get("exception", {}).get("values", [])]
        assert "JobFailed" not in types, types
        assert not (set(failed) - logged) & tagged(), "a job with no files available reached Sentry"
    finally:
        flower.service.stop()
        sentry.stop()
