"""``/v1/errors`` and ``/v1/stats/timeline`` against the real Redis (and the worker for a
failed job): what is logged, who sees it, what is counted, and what a bad query or a lost
Redis gets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from delineate import create_app
from delineate.api.recorder import ConsoleRecorder
from delineate.config import Settings
from delineate.jobs import webhooks
from delineate.models import Job, JobState, Phase
from delineate.store import errorlog
from delineate.telemetry import timeline
from tests.support.receivers import WebhookReceiver
from tests.support.stack import Service, completed_job, free_port, poll_status


def flushed(app: Flask) -> ConsoleRecorder:
    """The app's recorder, with what its requests tallied written to Redis now."""
    recorder: ConsoleRecorder = app.extensions["delineate_console"]
    recorder.flush()
    return recorder


def last_buckets(client: FlaskClient, minutes: int = 1, **headers: str) -> list[dict[str, Any]]:
    answer = client.get(f"/v1/stats/timeline?minutes={minutes}", headers=headers)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["stepSeconds"] == 10
    return body["buckets"]  # type: ignore[no-any-return]


# -- the timeline ----------------------------------------------------------------------------


def test_the_timeline_counts_requests_errors_latency_and_jobs(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    client = app.test_client()
    for _ in range(5):
        assert client.get("/v1/downloads").status_code == 200
    assert client.get(f"/v1/download/status/{uuid.uuid4()}").status_code == 404
    store = app.extensions["delineate"].store
    completed_job(store)
    flushed(app)
    buckets = last_buckets(client)
    assert len(buckets) == 6  # one minute of 10 s steps
    totals = {name: sum(b[name] for b in buckets) for name in ("requests", "errors4xx", "errors5xx", "jobsCompleted")}
    assert totals == {"requests": 6, "errors4xx": 1, "errors5xx": 0, "jobsCompleted": 1}
    busy = [b for b in buckets if b["requests"]]
    assert all(0 < b["p50Ms"] <= b["p95Ms"] <= b["p99Ms"] for b in busy)
    # The queue and the running jobs are sampled once a step by the flusher.
    sampled = [b for b in buckets if b["queueDepth"] is not None]
    assert sampled and sampled[-1]["queueDepth"] == 0 and sampled[-1]["inProgress"] == 0
    # The timeline read itself is counted in the next flush.
    flushed(app)
    assert sum(b["requests"] for b in last_buckets(client)) == 7


@pytest.mark.parametrize(
    "query", ["minutes=0", "minutes=61", "minutes=abc", "minutes=\u00b2", "minutes=", "minute=5", "minutes=1&x=1"]
)
def test_a_bad_window_is_a_400_naming_the_parameter(client: FlaskClient, query: str) -> None:
    answer = client.get(f"/v1/stats/timeline?{query}")
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "invalid_request" and "query" in body["details"][0]["path"]


def test_a_redis_that_cannot_take_the_figures_delays_them_and_loses_none(
    make_settings: Callable[..., Settings], redis_server: int
) -> None:
    import redis

    settings = make_settings()
    app = create_app(settings)
    client = app.test_client()
    recorder: ConsoleRecorder = app.extensions["delineate_console"]
    live = recorder.client
    recorder.client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    for _ in range(3):
        client.get("/v1/downloads")
    recorder.error("", errorlog.entry("api", "kept for later", status=503))
    recorder.flush()  # refused: kept (the flusher's thread waits, never a request)
    recorder.client = live
    recorder.flush()
    recorder.flush()  # nothing twice
    assert sum(b["requests"] for b in last_buckets(client)) == 3
    assert [e["message"] for e in client.get("/v1/errors").get_json()["errors"]] == ["kept for later"]


# -- the error log ---------------------------------------------------------------------------


def test_a_500_is_logged_with_its_request_route_and_trace(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(sentry_test_route=True))
    client = app.test_client()
    answer = client.post(
        "/v1/download/check?sentry_test=true", json={"file_id": 70000}, headers={"X-Request-ID": "r-500"}
    )
    assert answer.status_code == 500
    flushed(app)
    errors = client.get("/v1/errors").get_json()["errors"]
    assert len(errors) == 1
    entry = errors[0]
    assert entry["source"] == "api" and entry["status"] == 500 and entry["requestId"] == "r-500"
    assert entry["route"] == "POST /v1/download/check"
    assert entry["message"] == "An unexpected error occurred."  # what the client was told, never the cause
    assert entry["time"].endswith("Z")


def test_with_api_keys_each_caller_sees_only_its_own_errors(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(api_keys={"alice-key-000": "alice", "bob-key-0000": "bob"}, sentry_test_route=True))
    client = app.test_client()
    alice, bob = {"X-API-Key": "alice-key-000"}, {"X-API-Key": "bob-key-0000"}
    assert client.post("/v1/download/check?sentry_test=true", json={"file_id": 70000}, headers=alice).status_code == 500
    flushed(app)
    assert len(client.get("/v1/errors", headers=alice).get_json()["errors"]) == 1
    assert client.get("/v1/errors", headers=bob).get_json()["errors"] == []
    assert client.get("/v1/errors").status_code == 401


def test_a_failed_job_is_logged_by_the_worker(app: Flask, client: FlaskClient, worker: Service) -> None:
    job_id = client.post("/v1/download/initiate", json={"file_ids": [70001]}).get_json()["jobId"]
    status = poll_status(lambda j: client.get(f"/v1/download/status/{j}").get_json(), job_id, {"failed"})
    assert status["error"] == "No files available for download"
    errors = client.get("/v1/errors?limit=100").get_json()["errors"]
    entry = next(e for e in errors if e.get("jobId") == job_id)
    assert entry["source"] == "worker" and entry["message"] == "No files available for download"


def test_a_failed_webhook_delivery_is_logged(make_settings: Callable[..., Settings]) -> None:
    receiver = WebhookReceiver(statuses=[500])
    try:
        settings = make_settings(
            callback_allowed_hosts=(f"127.0.0.1:{receiver.port}",),
            callback_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            webhook_retry_window_seconds=0,  # no retry: the first refusal fails the delivery
        )
        app = create_app(settings)
        store = app.extensions["delineate"].store
        job = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, file_ids=[70000], callback_url=receiver.url)
        store.create(job)
        store.update(job.job_id, status=JobState.CANCELLED, phase=Phase.DONE, error="Cancelled")
        tenants = app.extensions["delineate"].tenants.current
        attempt = webhooks.deliver(store, settings, tenants, job.job_id, 1)
        assert attempt is not None and not attempt.delivered
        errors = app.test_client().get("/v1/errors").get_json()["errors"]
        entry = next(e for e in errors if e["source"] == "webhook")
        assert entry["jobId"] == job.job_id and "attempt 1 failed" in entry["message"] and "500" in entry["message"]
    finally:
        receiver.close()


def test_the_log_keeps_the_newest_hundred(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    recorder: ConsoleRecorder = app.extensions["delineate_console"]
    for i in range(errorlog.ERROR_LOG_LENGTH + 20):
        recorder.error(None, errorlog.entry("api", f"error {i}", status=500))
    recorder.flush()
    client = app.test_client()
    errors = client.get("/v1/errors?limit=100").get_json()["errors"]
    assert len(errors) == 100 and errors[0]["message"] == "error 119" and errors[-1]["message"] == "error 20"
    assert len(client.get("/v1/errors").get_json()["errors"]) == 50  # the default
    assert client.get("/v1/errors?limit=101").status_code == 400
    assert client.get("/v1/errors?since=1").status_code == 400


def test_without_redis_both_answer_503_json_at_once(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    client = app.test_client()
    for path in ("/v1/errors", "/v1/stats/timeline"):
        started = time.monotonic()
        answer = client.get(path)
        assert answer.status_code == 503, path
        assert answer.get_json()["error"] == "service_unavailable"
        assert time.monotonic() - started < 2.5


def test_the_steps_expire_after_an_hour(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    app.test_client().get("/v1/downloads")
    recorder = flushed(app)
    key = timeline.step_key(timeline.current_step())
    ttl = recorder.client.ttl(key)
    assert 3600 < ttl <= timeline.KEEP_SECONDS


def test_settled_steps_are_read_once_a_minute_and_the_newest_every_time(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings())
    client = flushed(app).client
    cache = timeline.StepCache()
    now = time.time()
    old, new = timeline.current_step(now) - 30, timeline.current_step(now)
    for step in (old, new):
        client.hset(timeline.step_key(step), "n", 1)
    n = timeline.FIELDS.index("n")
    assert [v[n] for v in cache.read(client, [old, new], now)] == [1, 1]
    for step in (old, new):
        client.hincrby(timeline.step_key(step), "n", 1)
    assert [v[n] for v in cache.read(client, [old, new], now + 1)] == [1, 2]  # the settled one kept
    assert [v[n] for v in cache.read(client, [old, new], now + 1 + timeline.CACHE_SECONDS)] == [2, 2]
