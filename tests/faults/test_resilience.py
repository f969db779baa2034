"""Every accepted job reaches a correct terminal state: none lost, duplicated or corrupted.

Each test brings its own workers (and, for the Redis restart, its own Redis) on its own
Redis database, so the shared stack stays healthy for the rest of the suite.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from delineate.dev.seed import seed
from delineate.storage import Storage
from tests.faults.test_core import _assert_whole_bundle, _client_and_get
from tests.support.stack import free_port, poll_status, start_aof_redis, start_api, start_worker, wait_for

BIG_IDS = tuple(range(300_000, 300_040))
"""Forty 1 MiB objects: enough to catch a worker in the middle of bundling."""


def _all_terminal(get: Any, job_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    final: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            status = get(job_id)
            if status["status"] in {"completed", "failed", "cancelled"}:
                final[job_id] = status
                pending.discard(job_id)
        time.sleep(0.2)
    assert not pending, f"{len(pending)} jobs never finished, e.g. {get(next(iter(pending)))}"
    return [final[j] for j in job_ids]


def test_worker_killed_mid_bundle_leaves_a_whole_bundle(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(download_delay_enabled=False, visibility_timeout_seconds=4, job_lease_seconds=3)
    storage = Storage(settings)
    seed(storage, BIG_IDS, size=1024 * 1024)
    client, get = _client_and_get(settings)
    first = start_worker(settings, workdir, "worker-mid-bundle", concurrency=2)
    try:
        job_id = client.post("/v1/download/initiate", json={"file_ids": list(BIG_IDS)}).get_json()["jobId"]
        wait_for(lambda: get(job_id)["phase"] == "bundling" and get(job_id)["bytesDone"] > 0, 60, "bundling")
    finally:
        first.kill()
    assert get(job_id)["status"] == "processing"
    second = start_worker(settings, workdir, "worker-mid-bundle-rescuer", concurrency=2)
    try:
        done = poll_status(get, job_id, {"completed", "failed"}, timeout=90)
        assert done["status"] == "completed", done
        assert done["availableFiles"] == len(BIG_IDS)
        _assert_whole_bundle(client, job_id, storage)
    finally:
        second.stop()


def test_jobs_submitted_while_no_worker_runs_all_complete(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(download_delay_enabled=False)
    client, get = _client_and_get(settings)
    job_ids = [
        client.post("/v1/download/initiate", json={"file_ids": [70000 + 7 * (n % 100), 70001]}).get_json()["jobId"]
        for n in range(200)
    ]
    assert {get(j)["status"] for j in job_ids[:20]} == {"queued"}
    worker = start_worker(settings, workdir, "worker-late", concurrency=50)
    try:
        final = _all_terminal(get, job_ids, timeout=120)
        assert {s["status"] for s in final} == {"completed"}
        assert {s["attempts"] for s in final} == {1}  # each ran once: none duplicated
    finally:
        worker.stop()


def test_store_outage_jobs_recover_or_fail_clearly(make_settings: Any, seaweed: Any, workdir: Path) -> None:
    # Retry ceilings 1-16 s (not 2-32 s): at least 15.5 s in all, so the patient jobs outlive an
    # 8 s outage and finish soon after it.
    patient = make_settings(download_delay_min_ms=2000, download_delay_max_ms=4000, retry_backoff_base_seconds=1.0)
    impatient = make_settings(download_delay_min_ms=2000, download_delay_max_ms=2000, max_retries=1)
    workers = [
        start_worker(patient, workdir, "worker-outage-patient", concurrency=60),
        start_worker(impatient, workdir, "worker-outage-impatient", concurrency=4),
    ]
    try:
        client, get = _client_and_get(patient)
        ids = [
            client.post("/v1/download/initiate", json={"file_ids": [70007, 70014, 70021]}).get_json()["jobId"]
            for _ in range(50)
        ]
        impatient_client, impatient_get = _client_and_get(impatient)
        doomed = impatient_client.post("/v1/download/initiate", json={"file_ids": [70000, 70007]}).get_json()["jobId"]
        wait_for(lambda: get(ids[0])["status"] == "processing", 30, "jobs running")
        seaweed.stop()
        down_at = time.monotonic()
        health = client.get("/health")
        assert health.status_code == 503 and health.get_json()["checks"]["storage"] == "error"
        failed = poll_status(impatient_get, doomed, {"completed", "failed"}, timeout=60)
        assert failed["status"] == "failed"
        assert "Gave up after 2 attempts" in failed["error"] and "object store" in failed["error"]
        time.sleep(max(0.0, 8 - (time.monotonic() - down_at)))  # S3 gone for 8 s
        seaweed.start()
        seaweed.wait_ready(Storage(patient))
        assert client.get("/health").status_code == 200
        final = _all_terminal(get, ids, timeout=120)
        assert {s["status"] for s in final} == {"completed"}, {s["error"] for s in final}
        assert max(s["attempts"] for s in final) >= 2
    finally:
        for worker in workers:
            worker.stop()


def test_redis_restart_api_answers_503_then_recovers(make_settings: Any, workdir: Path) -> None:
    port = free_port()
    redis_service = start_aof_redis(workdir, port)
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{port}/0", download_delay_min_ms=200, download_delay_max_ms=400
    )
    worker = start_worker(settings, workdir, "worker-redis-restart", concurrency=8)
    api, base = start_api(settings, workdir, "api-redis-restart")
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            before = http.post("/v1/download/initiate", json={"file_ids": [70000, 70007]}).json()["jobId"]
            poll_status(lambda j: http.get(f"/v1/download/status/{j}").json(), before, {"completed"}, timeout=30)

            redis_service.stop()
            for request in (
                lambda: http.get(f"/v1/download/status/{before}"),
                lambda: http.post("/v1/download/initiate", json={"file_ids": [70000]}),
                lambda: http.get("/health"),
            ):
                began = time.monotonic()
                response = request()
                assert time.monotonic() - began < 2.0
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/json"
            redis_service = start_aof_redis(workdir, port)

            wait_for(lambda: http.get(f"/v1/download/status/{before}").status_code == 200, 30, "API recovery")
            assert http.get(f"/v1/download/status/{before}").json()["status"] == "completed"  # kept by AOF
            after = http.post("/v1/download/initiate", json={"file_ids": [70014, 70021]}).json()["jobId"]
            done = poll_status(
                lambda j: http.get(f"/v1/download/status/{j}").json(), after, {"completed", "failed"}, 60
            )
            assert done["status"] == "completed"  # the worker reconnected and kept consuming
    finally:
        api.stop()
        worker.stop()
        redis_service.stop()


def test_poison_job_fails_after_the_redelivery_limit(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(
        download_delay_enabled=False,
        visibility_timeout_seconds=2,
        job_lease_seconds=2,
        max_redeliveries=2,
    )
    client, get = _client_and_get(settings)
    job_id = client.post("/v1/download/initiate", json={"file_ids": [70000, 70007]}).get_json()["jobId"]
    crashes = 0
    for n in range(6):  # a supervisor restarting the crashed worker each time
        # The crash hook exists only in the test suite's worker entry point.
        worker = start_worker(
            settings,
            workdir,
            f"worker-poison-{n}",
            concurrency=2,
            app="tests.support.fault_worker",
            TEST_CRASH_FILE_ID="70007",
        )
        try:
            wait_for(lambda w=worker: not w.running() or get(job_id)["status"] == "failed", 60, "crash or failure")
        finally:
            crashes += not worker.running()
            worker.stop()
        if get(job_id)["status"] == "failed":
            break
    final = get(job_id)
    assert final["status"] == "failed", final
    assert "died 3 times" in final["error"] and "limit 2" in final["error"]
    assert crashes == 3  # the original run and two redeliveries, then no more


def test_no_crash_hook_in_the_production_worker() -> None:
    # No setting or variable arms a crash: the seams are empty unless tests/fault_*.py is the entry.
    from delineate.broker import queue as task_queue
    from delineate.config import ENVIRONMENT
    from delineate.jobs import run as jobs

    assert jobs.BEFORE_FILE_HOOKS == [] and task_queue.BEFORE_SEND_HOOKS == []
    assert not [name for name in ENVIRONMENT if "FAULT" in name or "CRASH" in name]
