"""A stalled object store (SIGSTOP of SeaweedFS for 6 s) while jobs run, on either path
(design.md, "Failure behaviour").

The worker's S3 calls time out (``storage.client.READ_TIMEOUT_SECONDS``, 5 s: a call under
way when the stall began) and are tried again (ATTEMPTS); past that the task retries the job
(``jobs/retry.py``): no job is lost, every job completes after SIGCONT and every bundle
verifies. Meanwhile the API's routes that need no S3 (status, initiate) stay fast, a route
that needs it (check) answers 503 JSON with Retry-After, and ``/health`` names the store,
each with a p99 under a second measured here.

The SeaweedFS is this module's own, so pausing it touches no other test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from delineate.config import Settings, load_settings
from delineate.dev.localstack import wait_until
from delineate.dev.seed import SAMPLE_IDS, sample_content, seed
from delineate.services import build_services
from delineate.storage import PART_SIZE_BYTES, Storage
from tests.support.stack import Service, completed_job, start_api, start_seaweed, start_worker
from tests.support.stall_load import RECOVER_WITHIN_SECONDS, Answer, RouteLoad, assert_stall_answers, stall

STALL_SECONDS = 6.0
"""Longer than one read timeout: calls under way when it begins time out and are tried again."""
FILE_BYTES = 512 * 1024
"""Every source object's size: a job of 17 files or more (8.5 MiB) is a multipart upload."""
IDS = SAMPLE_IDS[:40]
COMPLETE_WITHIN_SECONDS = 60.0
"""Every job terminal within this long of SIGCONT (task retries wait 1-2 s, then 2-4 s...)."""


@pytest.fixture(scope="module")
def own_s3(workdir: Path) -> Iterator[tuple[Service, int]]:
    """A SeaweedFS of this module's own, seeded with IDS of FILE_BYTES each."""
    plain = load_settings(environ={}, dotenv_path=None)
    service, port = start_seaweed(plain, workdir)
    storage = Storage(plain.replace(s3_endpoint=f"http://127.0.0.1:{port}", s3_public_endpoint=""))

    def bucket_ready() -> bool:
        try:
            storage.ensure_bucket()
            return True
        except Exception:  # not up yet
            return False

    try:
        wait_until(bucket_ready, 30, "the S3 bucket", interval=0.2)
        seed(storage, IDS, size=FILE_BYTES)
        yield service, port
    finally:
        os.kill(service.pid, signal.SIGCONT)
        service.stop()


def _initiate(http: httpx.Client, ids: list[int]) -> httpx.Response:
    return http.post("/v1/download/initiate", json={"file_ids": ids})


def _verify_bundle(status: dict[str, Any]) -> None:
    """The bundle behind the status's link: every entry as seeded, as its manifest says."""
    raw = httpx.get(status["downloadUrl"], timeout=30).content
    assert len(raw) == status["size"], status["jobId"]
    with zipfile.ZipFile(io.BytesIO(raw)) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
        assert manifest["jobId"] == status["jobId"] and manifest["missing"] == []
        assert len(manifest["files"]) == status["totalFiles"]
        for entry in manifest["files"]:
            data = bundle.read(f"{entry['file_id']}.zip")
            assert data == sample_content(entry["file_id"], FILE_BYTES), entry
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def _accepted(answers: list[Answer]) -> list[str]:
    return [a.json()["jobId"] for a in answers if a.status in (200, 202)]


def _completed_at(status: dict[str, Any]) -> float:
    return datetime.fromisoformat(status["completedAt"]).timestamp()


def assert_stall_answer(answer: Answer) -> None:
    """Routes that need no S3 answer as ever; those that need it, 503 JSON with Retry-After."""
    where = (answer.route, answer.status, answer.text[:200])
    if answer.route in ("status", "initiate", "bundle"):
        assert answer.ok, where
        return
    assert answer.status == 503 and int(answer.headers["retry-after"]) >= 1, where
    body = answer.json()
    if answer.route == "health":
        assert body["status"] == "unhealthy" and body["checks"] == {"storage": "error", "redis": "ok"}, where
    else:
        assert body["error"] == "storage_unavailable", where
        assert body["requestId"] == answer.headers["x-request-id"], where


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast paths", "libraries"])
def test_jobs_ride_out_an_s3_stall_and_the_api_stays_fast(
    make_settings: Any, workdir: Path, own_s3: tuple[Service, int], fast_paths: bool
) -> None:
    seaweed, s3_port = own_s3
    settings: Settings = make_settings(
        s3_endpoint=f"http://127.0.0.1:{s3_port}", fast_paths=fast_paths, download_delay_enabled=False
    )
    store = build_services(settings).store
    done_job = completed_job(store)
    mode = "fast" if fast_paths else "libraries"
    worker = start_worker(settings, workdir, f"worker-s3-stall-{mode}", concurrency=8)
    api, base = start_api(settings, workdir, f"api-s3-stall-{mode}", workers=2)
    rng = random.Random(25)
    load = RouteLoad(
        base,
        {
            "status": lambda http: http.get(f"/v1/download/status/{done_job}"),
            "initiate": lambda http: _initiate(http, [rng.choice(IDS)]),  # a single-file job
            "bundle": lambda http: _initiate(http, rng.sample(IDS, rng.randint(2, 20))),
            "health": lambda http: http.get("/health"),
            "check": lambda http: http.post("/v1/download/check", json={"file_id": rng.choice(IDS)}),
        },
        pause=0.1,
        per_route={"bundle": (2, 0.8)},
    )
    try:
        load.start().warm()
        with httpx.Client(base_url=base, timeout=10) as http:  # two big bundles under way at the stall
            big = [_initiate(http, rng.sample(IDS, 20)).json()["jobId"] for _ in range(2)]
        stalled_at, resumed_at = stall(seaweed.pid, STALL_SECONDS)
        resumed_wall = time.time() - (time.monotonic() - resumed_at)  # (completedAt is wall-clock)
        time.sleep(RECOVER_WITHIN_SECONDS + 1.0)
        load.stop()

        # (the jobs made before SIGCONT, then those made after it)
        made = [load.began_within(0, resumed_at), load.began_within(resumed_at, float("inf"))]
        early, late = ([job for route in ("initiate", "bundle") for job in _accepted(m[route])] for m in made)
        jobs = big + early + late

        def all_terminal() -> bool:
            return all(job is not None and job.status.terminal for job in map(store.get, jobs))

        wait_until(all_terminal, COMPLETE_WITHIN_SECONDS, f"{len(jobs)} jobs terminal")
    finally:
        os.kill(seaweed.pid, signal.SIGCONT)
        load.stop()
        api.stop()
        worker.stop()

    title = f"S3 stall of {STALL_SECONDS:.0f} s, FAST_PATHS={fast_paths}:"
    assert_stall_answers(load, title, stalled_at, resumed_at, assert_stall_answer, least=4)

    # No job lost: every one completed, every bundle whole.
    finals = [store.status(job) for job in map(store.get, jobs) if job is not None]
    assert len(finals) == len(jobs)
    assert {s["status"] for s in finals} == {"completed"}, [s for s in finals if s["status"] != "completed"][:3]
    bundles = [s for s in finals if s["totalFiles"] > 1]
    for status in bundles:
        _verify_bundle(status)
    retried = sum(1 for s in finals if s["attempts"] > 1)
    backlog = {*big, *early}
    last = max(_completed_at(s) for s in finals if s["jobId"] in backlog) - resumed_wall
    print(
        f"  {len(jobs)} jobs ({len(bundles)} bundles, {sum(s['size'] > PART_SIZE_BYTES for s in bundles)} multipart)"
        f" all completed; the {len(backlog)} made before SIGCONT by {last:.2f} s after it;"
        f" {retried} retried by the task"
        f" ({worker.log().count('transient error')} transient errors in the worker's log)"
    )
