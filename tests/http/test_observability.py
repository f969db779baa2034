"""Traces, Sentry events, JSON logs and metrics from a real stack: gunicorn with 2 workers,
2 Celery worker processes, a local OTLP/HTTP receiver and a local Sentry ingest.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from delineate.config import Settings
from tests.support.receivers import OtlpReceiver, SentryReceiver, Span
from tests.support.stack import (
    Service,
    free_port,
    poll_status,
    send_unreadable_job,
    settings_env,
    start_api,
    start_worker,
    wait_for,
)

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


@dataclass
class ObsStack:
    settings: Settings
    base: str
    api: Service
    workers: list[Service]
    otlp: OtlpReceiver
    sentry: SentryReceiver
    metrics_dir: Path

    def status(self, job_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.base}/v1/download/status/{job_id}", timeout=10).json()

    def wait_done(self, job_id: str) -> dict[str, Any]:
        return poll_status(self.status, job_id, {"completed", "failed", "cancelled"}, timeout=40)


@pytest.fixture(scope="module")
def obs(make_settings: Callable[..., Settings], workdir: Path) -> Iterator[ObsStack]:
    otlp = OtlpReceiver().start()
    sentry = SentryReceiver().start()
    settings = make_settings(sentry_dsn=sentry.dsn, otel_exporter_otlp_endpoint=otlp.endpoint, sentry_test_route=True)
    metrics_dir = workdir / f"prom-{uuid.uuid4().hex[:8]}"
    started: list[Service] = []
    try:
        # concurrency 1 each: five jobs at once must spread over both workers
        for name in ("worker-obs-a", "worker-obs-b"):
            started.append(start_worker(settings, workdir, name, concurrency=1))
        api, base = start_api(settings, workdir, "api-obs", workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        started.append(api)
        yield ObsStack(settings, base, api, started[:2], otlp, sentry, metrics_dir)
    finally:
        for service in started:
            service.stop()
        otlp.stop()
        sentry.stop()


def _traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- traces ----------------------------------------------------------------------------------


def test_one_trace_spans_request_task_and_s3(obs: ObsStack) -> None:
    trace_id, traceparent = _traceparent()
    response = httpx.post(
        f"{obs.base}/v1/download/initiate",
        json={"file_ids": [70000, 70007]},
        headers={"traceparent": traceparent},
        timeout=10,
    )
    assert response.status_code == 202
    assert response.headers["x-trace-id"] == trace_id  # the incoming traceparent is honoured
    job_id = response.json()["jobId"]
    assert obs.wait_done(job_id)["status"] == "completed"

    def trace_complete() -> list[Span] | None:
        spans = [s for s in obs.otlp.spans() if s.trace_id == trace_id]
        kinds = {(s.service, s.kind) for s in spans}
        s3 = [s for s in spans if s.service == "delineate-worker" and s.attributes.get("rpc.service") == "S3"]
        wanted = {("delineate-api", SERVER), ("delineate-worker", CONSUMER)}
        return spans if wanted <= kinds and s3 else None

    spans = obs.otlp.wait_for(trace_complete, 20, f"the spans of trace {trace_id}")
    by_id = {s.span_id: s for s in spans}
    request_span = next(s for s in spans if s.kind == SERVER)
    assert request_span.name.endswith("/v1/download/initiate")
    task_span = next(s for s in spans if s.kind == CONSUMER)
    assert task_span.name == "run/delineate.prepare_download"
    # The task's span descends from the request (through the publish span in the message).
    ancestor, seen = by_id.get(task_span.parent_span_id), 0
    while ancestor is not None and ancestor is not request_span and seen < 10:
        ancestor, seen = by_id.get(ancestor.parent_span_id), seen + 1
    assert ancestor is request_span
    s3_ops = {s.attributes.get("rpc.method") for s in spans if s.attributes.get("rpc.service") == "S3"}
    assert "HeadObject" in s3_ops


def test_a_status_read_has_its_server_span(obs: ObsStack) -> None:
    """Answered by the fast lane: the same span and X-Trace-Id as Flask's hooks make."""
    response = httpx.post(f"{obs.base}/v1/download/initiate", json={"file_ids": [70000]}, timeout=10)
    job_id = response.json()["jobId"]
    assert obs.wait_done(job_id)["status"] == "completed"
    trace_id, traceparent = _traceparent()
    response = httpx.get(f"{obs.base}/v1/download/status/{job_id}", headers={"traceparent": traceparent}, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-trace-id"] == trace_id

    def server_span() -> Span | None:
        return next((s for s in obs.otlp.spans() if s.trace_id == trace_id and s.kind == SERVER), None)

    span = obs.otlp.wait_for(server_span, 20, f"the server span of trace {trace_id}")
    assert span.name == "GET /v1/download/status/<job_id>"
    assert span.attributes.get("http.route") == "/v1/download/status/<job_id>"
    assert span.attributes.get("http.status_code") == 200


@pytest.fixture(scope="module")
def sent_by_celery(obs: ObsStack, make_settings: Callable[..., Settings], workdir: Path) -> Iterator[str]:
    """An API and a worker whose broker is another Redis database than the job store's:
    initiate sends the task with Celery's ``send_task``, not inside the job script."""
    broker = make_settings().redis_url  # a fresh database of its own
    settings = make_settings(otel_exporter_otlp_endpoint=obs.otlp.endpoint, celery_broker_url=broker)
    assert settings.celery_broker_url != settings.redis_url
    started = [start_worker(settings, workdir, "worker-obs-sent", concurrency=2)]
    try:
        api, base = start_api(settings, workdir, "api-obs-sent")
        started.append(api)
        yield base
    finally:
        for service in started:
            service.stop()


def test_one_trace_when_celery_sends_the_task(obs: ObsStack, sent_by_celery: str) -> None:
    trace_id, traceparent = _traceparent()
    response = httpx.post(
        f"{sent_by_celery}/v1/download/initiate",
        json={"file_ids": [70000]},
        headers={"traceparent": traceparent},
        timeout=10,
    )
    assert response.status_code == 202
    job_id = response.json()["jobId"]

    def status(job: str) -> dict[str, Any]:
        return httpx.get(f"{sent_by_celery}/v1/download/status/{job}", timeout=10).json()  # type: ignore[no-any-return]

    assert poll_status(status, job_id, {"completed", "failed", "cancelled"}, timeout=40)["status"] == "completed"

    def trace_complete() -> list[Span] | None:
        spans = [s for s in obs.otlp.spans() if s.trace_id == trace_id]
        kinds = {(s.service, s.kind) for s in spans}
        wanted = {("delineate-api", SERVER), ("delineate-api", PRODUCER), ("delineate-worker", CONSUMER)}
        return spans if wanted <= kinds else None

    spans = obs.otlp.wait_for(trace_complete, 20, f"the spans of trace {trace_id}")
    by_id = {s.span_id: s for s in spans}
    request_span = next(s for s in spans if s.kind == SERVER)
    task_span = next(s for s in spans if s.kind == CONSUMER)
    assert task_span.name == "run/delineate.prepare_download"
    publish = by_id[task_span.parent_span_id]  # the publish span, written into the message's headers
    assert publish.service == "delineate-api" and publish.kind == PRODUCER
    assert publish.name == "apply_async/delineate.prepare_download"
    ancestor, seen = by_id.get(publish.parent_span_id), 0
    while ancestor is not None and ancestor is not request_span and seen < 10:
        ancestor, seen = by_id.get(ancestor.parent_span_id), seen + 1
    assert ancestor is request_span


# -- Sentry ----------------------------------------------------------------------------------


def test_sentry_event_is_tagged_and_scrubbed(obs: ObsStack) -> None:
    api_key, bearer, signature = "key-" + secrets.token_hex(8), secrets.token_hex(12), secrets.token_hex(16)
    request_id = "rid-sentry-" + secrets.token_hex(4)
    response = httpx.post(
        f"{obs.base}/v1/download/check?sentry_test=true&X-Amz-Signature={signature}",
        json={"file_id": 70000},
        headers={"X-API-Key": api_key, "Authorization": f"Bearer {bearer}", "X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 500
    assert response.json()["requestId"] == request_id
    trace_id = response.headers["x-trace-id"]

    def event() -> dict[str, Any] | None:
        found = [e for e in obs.sentry.events() if e.get("tags", {}).get("request_id") == request_id]
        return found[0] if found else None

    found = obs.sentry.wait_for(event, 20, "the Sentry event of the sentry_test request")
    assert found["tags"]["trace_id"] == trace_id
    assert found["request"]["method"] == "POST" and found["request"]["url"].endswith("/v1/download/check")
    assert found["request"]["headers"]["X-Request-Id"] == request_id
    values = found["exception"]["values"]
    assert values[-1]["type"] == "RuntimeError"
    texts = obs.sentry.raw_texts()
    for secret in (api_key, bearer, signature):
        assert not any(secret in text for text in texts), "a secret reached Sentry"


def test_task_failure_reaches_sentry_with_the_job_id(obs: ObsStack) -> None:
    job_id = send_unreadable_job(obs.settings)

    def event() -> dict[str, Any] | None:
        found = [
            e
            for e in obs.sentry.events()
            if e.get("tags", {}).get("job_id") == job_id and "celery" in json.dumps(e.get("exception", {}))
        ]
        return found[0] if found else None

    found = obs.sentry.wait_for(event, 30, "the Sentry event of the failed task")
    assert found["exception"]["values"][-1]["type"] == "JSONDecodeError"
    assert re.fullmatch(r"[0-9a-f]{32}", found["tags"]["trace_id"])


# -- logs ------------------------------------------------------------------------------------


def test_logs_are_json_lines_with_the_ids(obs: ObsStack) -> None:
    trace_id, traceparent = _traceparent()
    request_id = "rid-logs-" + secrets.token_hex(4)
    response = httpx.post(
        f"{obs.base}/v1/download/initiate",
        json={"file_ids": [70014, 70021]},
        headers={"traceparent": traceparent, "X-Request-ID": request_id},
        timeout=10,
    )
    job_id = response.json()["jobId"]
    assert obs.wait_done(job_id)["status"] == "completed"
    presigned = httpx.get(f"{obs.base}/v1/download/{job_id}", timeout=10).headers["location"]
    signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", presigned).group(1)  # type: ignore[union-attr]

    def api_lines() -> list[dict[str, Any]] | None:
        lines = _json_lines(obs.api.log())
        return lines if any(line.get("request_id") == request_id for line in lines) else None

    lines = wait_for_value(api_lines, 10, "the API's log lines")
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= line.keys()
    mine = [line for line in lines if line.get("request_id") == request_id]
    access = [line for line in mine if line["logger"] == "delineate.access"]
    assert len(access) == 1, "one access line per request"
    assert access[0]["route"] == "/v1/download/initiate" and access[0]["status"] == 202
    assert access[0]["method"] == "POST" and access[0]["duration_ms"] >= 0
    assert all(line["trace_id"] == trace_id for line in mine)
    assert any(job_id in line["message"] for line in mine)  # "job … queued"

    def worker_lines() -> list[dict[str, Any]] | None:
        found = [line for w in obs.workers for line in _json_lines(w.log()) if line.get("job_id") == job_id]
        return found if any("finished" in line["message"] for line in found) else None

    job_lines = wait_for_value(worker_lines, 10, "the worker's lines of the job")
    assert {line["trace_id"] for line in job_lines} == {trace_id}  # the same trace as the request
    everything = obs.api.log() + "".join(w.log() for w in obs.workers)
    assert signature not in everything, "a presigned URL reached the logs"


def wait_for_value(find: Callable[[], Any], timeout: float, what: str) -> Any:
    box: list[Any] = []

    def found() -> bool:
        value = find()
        if value:
            box.append(value)
        return bool(value)

    wait_for(found, timeout, what, interval=0.2)
    return box[-1]


# -- metrics ---------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(base: str) -> dict[str, float]:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = ",".join(sorted((match.group(2) or "{}")[1:-1].split(","))) if match.group(2) else ""
            samples[f"{match.group(1)}{{{labels}}}"] = float(match.group(3))
    return samples


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = ",".join(sorted(f'{k}="{v}"' for k, v in labels.items()))
    return samples.get(f"{name}{{{wanted}}}", 0.0)


def test_metrics_add_up_across_api_and_worker_processes(obs: ObsStack) -> None:
    before = scrape(obs.base)
    bodies = [[70028, 70035], [70042, 70049, 70056], [70063], [70001], [70070, 70077]]

    def initiate(ids: list[int]) -> str:
        response = httpx.post(f"{obs.base}/v1/download/initiate", json={"file_ids": ids}, timeout=10)
        assert response.status_code == 202
        return str(response.json()["jobId"])

    # New connections from several threads: both gunicorn workers answer some.
    with ThreadPoolExecutor(5) as pool:
        job_ids = list(pool.map(initiate, bodies))
    cancelled = job_ids[-1]
    assert httpx.delete(f"{obs.base}/v1/download/{cancelled}", timeout=10).status_code == 202
    finals = {job_id: obs.wait_done(job_id)["status"] for job_id in job_ids}
    assert sorted(finals.values()) == ["cancelled", "completed", "completed", "completed", "failed"]

    def settled() -> dict[str, float] | None:
        after = scrape(obs.base)
        name = "delineate_job_duration_seconds_count"
        done = value(after, name) - value(before, name)
        return after if done >= 5 and value(after, "delineate_jobs_in_progress") == 0 else None

    after = wait_for_value(settled, 20, "the worker metrics of five finished jobs")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("delineate_http_requests_total", method="POST", route="/v1/download/initiate", status="202") == 5
    assert delta("delineate_http_requests_total", method="DELETE", route="/v1/download/<job:job_id>", status="202") == 1
    assert delta("delineate_http_request_duration_seconds_count", method="POST", route="/v1/download/initiate",
                 status="202") == 5  # fmt: skip
    assert delta("delineate_jobs_total", status="completed") == 3
    assert delta("delineate_jobs_total", status="failed") == 1
    assert delta("delineate_jobs_total", status="cancelled") == 1
    assert delta("delineate_job_duration_seconds_count") == 5
    assert delta("delineate_bundle_size_bytes_count") == 3
    assert delta("delineate_bundle_size_bytes_sum") > 0
    assert value(after, "delineate_queue_depth") == 0
    assert value(after, "delineate_jobs_in_progress") == 0
    assert "delineate_sse_streams_open{}" in after
    assert "delineate_job_retries_total{}" in after
    # Each gunicorn worker kept its own file, and any worker's answer sums them all.
    assert len({p.name for p in obs.metrics_dir.glob("counter_*.db")}) == 2
    again = scrape(obs.base)
    assert value(again, "delineate_jobs_total", status="completed") == value(
        after, "delineate_jobs_total", status="completed"
    )
    # Both Celery worker processes ran some of the jobs.
    for worker in obs.workers:
        assert any(
            line.get("job_id") in job_ids and "started" in line["message"] for line in _json_lines(worker.log())
        ), f"{worker.name} ran none of the jobs"


# -- Flower ----------------------------------------------------------------------------------


def test_flower_asks_for_basic_auth(obs: ObsStack, workdir: Path) -> None:
    import sys

    port = free_port()
    env = settings_env(obs.settings.replace(flower_port=port, flower_basic_auth="ops:s3cret"))
    flower = Service("flower", [sys.executable, "-m", "delineate.flower"], workdir / "flower.log", env).start()
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(base, timeout=1).status_code in (200, 401)
            except httpx.HTTPError:
                return not flower.running()

        wait_for(up, 30, "Flower", interval=0.2)
        assert flower.running(), flower.log()[-2000:]
        assert httpx.get(f"{base}/workers", timeout=5).status_code == 401
        assert httpx.get(f"{base}/workers", auth=("ops", "wrong"), timeout=5).status_code == 401
        assert httpx.get(f"{base}/workers", auth=("ops", "s3cret"), timeout=5).status_code == 200
        assert "s3cret" not in " ".join(flower.command)
    finally:
        flower.stop()
