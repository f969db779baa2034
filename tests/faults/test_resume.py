"""A bundle whose worker is SIGKILLed mid-upload is resumed by the next worker from the last
part S3 acknowledged, and the zip is byte-identical to an uninterrupted run's."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import redis

from delineate.dev.seed import seed
from delineate.jobs.bundle import Source, stream_bundle, zip_time
from delineate.storage import PART_SIZE_BYTES, Storage, bundle_key, source_key
from delineate.store.keys import resume_key
from tests.faults.test_core import _client_and_get
from tests.support.stack import poll_status, start_worker, wait_for

RESUME_IDS = tuple(range(910_000, 910_012))
"""Twelve 3 MiB objects (a 36 MiB zip, five 8 MiB parts): ids no other test uses."""
FILE_BYTES = 3 * 1024 * 1024


def _acknowledged(client: redis.Redis, job_id: str) -> tuple[int, int]:
    """(parts, bytes) of the bundle's upload as last saved; (0, 0) before any."""
    raw = client.hget(resume_key(job_id), "upload:0")
    if raw is None:
        return 0, 0
    upload = json.loads(raw)
    return len(upload["parts"]), upload["size"]


def _reference(storage: Storage, job: dict[str, Any]) -> str:
    """The sha256 of the zip an uninterrupted run makes of the job's sources."""
    sources = [
        Source(i, FILE_BYTES, lambda i=i: storage.iter_object(source_key(i)))  # type: ignore[misc]
        for i in RESUME_IDS
    ]
    digest = hashlib.sha256()
    for chunk in stream_bundle(job["jobId"], sources, [], date_time=zip_time(job["createdAt"])):
        digest.update(chunk)
    return digest.hexdigest()


def test_a_worker_killed_mid_bundle_is_resumed_from_its_last_part(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(download_delay_enabled=False, visibility_timeout_seconds=4, job_lease_seconds=3)
    storage = Storage(settings)
    seed(storage, RESUME_IDS, size=FILE_BYTES)
    client, get = _client_and_get(settings)
    store = redis.Redis.from_url(settings.redis_url)
    # 12 chunks of 256 KiB a file at 0.05 s each: about 7 s of reading, to kill it in.
    slow = start_worker(
        settings, workdir, "worker-resume-slow", concurrency=2, app="tests.support.slow_worker",
        TEST_READ_DELAY_SECONDS="0.05",
    )  # fmt: skip
    try:
        job_id = client.post("/v1/download/initiate", json={"file_ids": list(RESUME_IDS)}).get_json()["jobId"]
        wait_for(lambda: _acknowledged(store, job_id)[0] >= 2, 60, "two parts acknowledged")
    finally:
        slow.kill()
    parts, acknowledged = _acknowledged(store, job_id)
    assert get(job_id)["status"] == "processing"
    assert acknowledged == parts * PART_SIZE_BYTES
    rescuer = start_worker(settings, workdir, "worker-resume-rescuer", concurrency=2)
    try:
        done = poll_status(get, job_id, {"completed", "failed"}, timeout=60)
    finally:
        rescuer.stop()
    assert done["status"] == "completed", done
    assert done["attempts"] == 2  # (the killed run and the resumed one)
    result = b"".join(storage.iter_object(bundle_key(job_id)))
    assert hashlib.sha256(result).hexdigest() == _reference(storage, done)
    # The rescuer continued where the upload stood: it sent only the bytes after it.
    resumed = re.findall(r"resuming at byte (\d+) \((\d+) parts stored, (\d+) entries kept\)", rescuer.log())
    assert resumed, rescuer.log()[-3000:]
    at, stored, kept = (int(n) for n in resumed[0])
    assert (at, stored) == (acknowledged, parts) and at < len(result)
    assert kept >= acknowledged // (FILE_BYTES + 200) - 1  # (the files before the boundary were not read again)
    assert not store.exists(resume_key(job_id))  # forgotten once the job completed
