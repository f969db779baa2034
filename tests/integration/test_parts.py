"""A bundle in parts on the real stack: a worker with a small BUNDLE_PART_BYTES, the API,
S3, the CLI and the sweeper's clean-up."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from delineate import create_app
from delineate.client.api import Client, MultipleParts
from delineate.client.cli import main as cli
from delineate.config import Settings
from delineate.dev.seed import sample_content
from delineate.jobs.bundle import Source
from delineate.jobs.parts import plan_parts
from delineate.jobs.sweeper import SweepReport, sweeper_for
from delineate.storage import Storage, part_key, parts_prefix
from delineate.store.keys import EXPIRY_KEY, PARTS_KEY, job_key
from tests.support.stack import poll_status, start_api, start_worker

pytestmark = pytest.mark.contract  # the status (parts) is read through both paths

LIMIT = 256 * 1024
BIG = 70112  # 852 KiB: alone in its part, past the limit
IDS = [70007, 70063, 70147, 70168, 70217, BIG, 70245, 70259, 70287]
MISSING = 70001


@pytest.fixture(scope="module")
def stack(make_settings: Any, workdir: Path) -> Iterator[tuple[Settings, str]]:
    settings = make_settings(download_delay_enabled=False, bundle_part_bytes=LIMIT)
    worker = start_worker(settings, workdir, "worker-parts", concurrency=2)
    try:
        api, base = start_api(settings, workdir, "api-parts")
    except BaseException:
        worker.stop()
        raise
    yield settings, base
    api.stop()
    worker.stop()


def _completed(base: str, ids: list[int]) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=10) as http:
        job_id = http.post("/v1/download/initiate", json={"file_ids": ids}).json()["jobId"]
        return poll_status(lambda j: http.get(f"/v1/download/status/{j}").json(), job_id, {"completed", "failed"})


@pytest.fixture(scope="module")
def parted(stack: tuple[Settings, str]) -> dict[str, Any]:
    return _completed(stack[1], [*IDS, MISSING])


def _plan(ids: list[int], missing: list[int]) -> list[list[int]]:
    sources = [Source(i, len(sample_content(i)), lambda: iter(())) for i in ids]
    return [[s.file_id for s in part] for part in plan_parts("x" * 36, sources, missing, LIMIT)]


def test_a_large_bundle_is_written_in_parts_each_a_zip_with_its_manifest(
    stack: tuple[Settings, str], parted: dict[str, Any]
) -> None:
    settings, base = stack
    job_id, parts = parted["jobId"], parted["parts"]
    plan = _plan(IDS, [MISSING])
    assert parted["status"] == "completed" and len(plan) >= 3 and [BIG] in plan
    assert [p["index"] for p in parts] == list(range(1, len(plan) + 1))
    assert [p["files"] for p in parts] == [len(files) for files in plan]
    assert parted["downloadUrl"] is None and parted["size"] == sum(p["size"] for p in parts)
    storage = Storage(settings)
    with httpx.Client(base_url=base, timeout=10) as http:
        for part, files in zip(parts, plan, strict=True):
            answer = http.get(f"/v1/download/{job_id}?part={part['index']}")
            assert answer.status_code == 302 and answer.json()["downloadUrl"] == answer.headers["location"]
            assert f"part-{part['index']:04d}.zip" in answer.headers["location"]
            raw = httpx.get(answer.headers["location"], timeout=10).content
            assert len(raw) == part["size"] and hashlib.sha256(raw).hexdigest() == part["sha256"]
            assert storage.head(part_key(parts_prefix(job_id), part["index"])).size == len(raw)
            assert len(raw) <= LIMIT or files == [BIG]
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                assert zf.testzip() is None
                assert zf.namelist() == [f"{i}.zip" for i in files] + ["manifest.json"]
                manifest = json.loads(zf.read("manifest.json"))
                for entry in manifest["files"]:
                    data = zf.read(f"{entry['file_id']}.zip")
                    assert data == sample_content(entry["file_id"])
                    assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert manifest["jobId"] == job_id and (manifest["part"], manifest["parts"]) == (part["index"], len(plan))
            assert [e["file_id"] for e in manifest["files"]] == files
            assert manifest.get("missing") == ([MISSING] if part["index"] == len(plan) else None)


def test_a_download_names_the_parts_or_refuses_a_bad_part(stack: tuple[Settings, str], parted: dict[str, Any]) -> None:
    job_id, count = parted["jobId"], len(parted["parts"])
    with httpx.Client(base_url=stack[1], timeout=10) as http:
        whole = http.get(f"/v1/download/{job_id}")
        body = whole.json()
        assert whole.status_code == 409 and body["error"] == "multiple_parts"
        assert body["requestId"] == whole.headers["x-request-id"]
        assert [(p["index"], p["url"]) for p in body["details"]["parts"]] == [
            (n, f"/v1/download/{job_id}?part={n}") for n in range(1, count + 1)
        ]
        assert [p["sha256"] for p in body["details"]["parts"]] == [p["sha256"] for p in parted["parts"]]
        for bad in ("0", str(count + 1), "abc", "-1", "1.5", "9999999", ""):
            answer = http.get(f"/v1/download/{job_id}", params={"part": bad})
            assert answer.status_code == 400, bad
            assert answer.json()["error"] == "invalid_request" and "part" in answer.json()["message"]
        single = _completed(stack[1], [70007, 70063])  # one zip: no parts, its own part 1
        assert single["parts"] is None and single["downloadUrl"]
        assert http.get(f"/v1/download/{single['jobId']}?part=1").status_code == 302
        assert http.get(f"/v1/download/{single['jobId']}?part=2").status_code == 400


def test_the_cli_fetches_every_part_verified_and_resumes(
    stack: tuple[Settings, str], parted: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, job_id, parts = stack[1], parted["jobId"], parted["parts"]
    out = tmp_path / "export.zip"
    assert cli(["fetch", job_id, "-o", str(out), "--url", base, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert listed["verified"] is True and listed["path"] is None and listed["size"] == parted["size"]
    paths = [Path(p["path"]) for p in listed["parts"]]
    assert [p.name for p in paths] == [f"export-part-{n:04d}.zip" for n in range(1, len(parts) + 1)]
    for path, part in zip(paths, parts, strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == part["sha256"]
    assert not list(tmp_path.glob(".*.part"))  # every temporary file renamed into place
    # A second run keeps the parts that verify and fetches again the one that does not.
    kept = paths[0].stat().st_mtime_ns
    paths[1].write_bytes(paths[1].read_bytes()[:1000])
    assert cli(["fetch", job_id, "-o", str(out), "--url", base]) == 0
    assert "saved part 2/" in capsys.readouterr().out
    assert paths[0].stat().st_mtime_ns == kept
    assert hashlib.sha256(paths[1].read_bytes()).hexdigest() == parts[1]["sha256"]
    with Client(base) as client, pytest.raises(MultipleParts):
        client.download(job_id, tmp_path / "one.zip")  # one file cannot hold it


def test_revoking_or_expiring_a_job_deletes_every_part(stack: tuple[Settings, str]) -> None:
    settings, base = stack
    storage = Storage(settings)
    store_redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    revoked, expired = _completed(base, [70217, 70259, 70539]), _completed(base, [70245, 70259, 70539])
    for job in (revoked, expired):
        assert len(job["parts"]) >= 2
        keys = [part_key(parts_prefix(job["jobId"]), p["index"]) for p in job["parts"]]
        assert all(storage.head(k) for k in keys)
        assert store_redis.hget(PARTS_KEY, job["jobId"]) == str(len(keys))
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.delete(f"/v1/download/{revoked['jobId']}").status_code == 202
    assert all(storage.head(part_key(parts_prefix(revoked["jobId"]), p["index"])) is None for p in revoked["parts"])
    # The job's hash expires (here: by hand) and the sweeper deletes its parts, from the index.
    store_redis.delete(job_key(expired["jobId"]))
    store_redis.zadd(EXPIRY_KEY, {expired["jobId"]: 0})
    report = SweepReport()
    sweeper_for(create_app(settings).extensions["celery"]).delete_expired(report)
    assert report.expired_cleaned >= 1
    assert all(storage.head(part_key(parts_prefix(expired["jobId"]), p["index"])) is None for p in expired["parts"])
    assert store_redis.hget(PARTS_KEY, expired["jobId"]) is None
    store_redis.close()
