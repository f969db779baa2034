"""Faults made real: the store goes away mid-job, a worker is killed mid-job.

Each test runs its own worker on its own Redis database, so the shared worker never
sees these jobs.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from delineate import create_app
from delineate.storage import Storage, source_key
from tests.support.stack import poll_status, start_worker, wait_for


def _client_and_get(settings: Any) -> tuple[Any, Any]:
    client = create_app(settings).test_client()

    def get(job_id: str) -> dict[str, Any]:
        return client.get(f"/v1/download/status/{job_id}").get_json()

    return client, get


def _assert_whole_bundle(client: Any, job_id: str, storage: Storage) -> None:
    location = client.get(f"/v1/download/{job_id}").headers["Location"]
    raw = httpx.get(location, timeout=30).content
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert zf.testzip() is None
        manifest = json.loads(zf.read("manifest.json"))
        for entry in manifest["files"]:
            data = zf.read(f"{entry['file_id']}.zip")
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert data == b"".join(storage.iter_object(source_key(entry["file_id"])))


def test_store_outage_mid_job_is_retried_with_backoff(make_settings, seaweed, workdir: Path) -> None:
    settings = make_settings(download_delay_min_ms=3000, download_delay_max_ms=3000)
    worker = start_worker(settings, workdir, "worker-s3-outage", concurrency=4)
    try:
        client, get = _client_and_get(settings)
        job_id = client.post("/v1/download/initiate", json={"file_ids": [70000, 70007, 70014]}).get_json()["jobId"]
        wait_for(lambda: get(job_id)["completedFiles"] >= 1, 20, "first file checked")
        seaweed.stop()  # the store vanishes mid-job (SeaweedFS takes a few seconds to exit)
        time.sleep(2)
        seaweed.start()  # back on the same ports, with the same data
        done = poll_status(get, job_id, {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed", done
        assert done["attempts"] >= 2  # at least one retry was counted
        seaweed.wait_ready(Storage(settings))
        _assert_whole_bundle(client, job_id, Storage(settings))
        assert "transient error" in worker.log()
    finally:
        worker.stop()


def test_worker_killed_mid_job_is_redelivered(make_settings, workdir: Path) -> None:
    settings = make_settings(
        download_delay_min_ms=3000,
        download_delay_max_ms=3000,
        visibility_timeout_seconds=4,
        job_lease_seconds=3,
    )
    first = start_worker(settings, workdir, "worker-killed", concurrency=4)
    try:
        client, get = _client_and_get(settings)
        job_id = client.post("/v1/download/initiate", json={"file_ids": [70000, 70007, 70014]}).get_json()["jobId"]
        wait_for(lambda: get(job_id)["completedFiles"] >= 1, 20, "first file checked")
        first.kill()  # SIGKILL: no ack, no clean-up
        assert get(job_id)["status"] == "processing"
    finally:
        first.kill()
    second = start_worker(settings, workdir, "worker-rescuer", concurrency=4)
    try:
        done = poll_status(get, job_id, {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed", done
        assert done["attempts"] == 2
        _assert_whole_bundle(client, job_id, Storage(settings))
    finally:
        second.stop()
