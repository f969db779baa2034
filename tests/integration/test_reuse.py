"""Built once: a job whose id set and source ETags equal a live bundle's completes with it,
for any tenant, and the bundle goes only with its last job (expiry or revocation). Against
the real Redis, S3 and a Celery worker, with reuse on (the other tests' stacks turn it off)."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient

from delineate import create_app
from delineate.config import Settings
from delineate.jobs import reuse
from delineate.jobs.run import DownloadRun
from delineate.jobs.sweeper import Sweeper, SweepReport
from delineate.models import Job, JobState
from delineate.storage import Storage, bundle_key, source_key
from delineate.store import JobStore
from delineate.store.keys import EXPIRY_KEY, bundle_refs_key, job_key
from tests.support.stack import Service, poll_status, start_worker, wait_for

pytestmark = pytest.mark.contract  # run in both FAST_PATHS modes by `make test`

INITIATE = "/v1/download/initiate"
KEYS = {"alice-reuse-key": "alice", "bob-reuse-key": "bob"}
ALICE, BOB = ({"Authorization": f"Bearer {key}"} for key in KEYS)

OWN_IDS = [91_000_001, 91_000_002, 91_000_003]
"""Sources of this module's own (a test overwrites one): no other test reads them."""


@pytest.fixture(scope="module")
def reuse_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(bundle_reuse=True, download_delay_enabled=False, api_keys=KEYS)


@pytest.fixture(scope="module")
def reuse_worker(reuse_settings: Settings, workdir: Path) -> Iterator[Service]:
    service = start_worker(reuse_settings, workdir, "worker-reuse", concurrency=4)
    yield service
    service.stop()


@pytest.fixture()
def api(reuse_settings: Settings, reuse_worker: Service) -> FlaskClient:
    return create_app(reuse_settings).test_client()


@pytest.fixture()
def own_sources(reuse_settings: Settings) -> Iterator[list[int]]:
    storage = Storage(reuse_settings)
    for n, file_id in enumerate(OWN_IDS):
        storage.put(source_key(file_id), f"source {file_id}, version 1".encode() * (n + 1))
    yield OWN_IDS
    for file_id in OWN_IDS:
        storage.delete(source_key(file_id))


def _export(client: FlaskClient, ids: list[int], headers: dict[str, str]) -> dict[str, Any]:
    response = client.post(INITIATE, json={"file_ids": ids}, headers=headers)
    assert response.status_code == 202, response.get_json()

    def status(job_id: str) -> dict[str, Any]:
        answer = client.get(f"/v1/download/status/{job_id}", headers=headers)
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()  # type: ignore[no-any-return]

    done = poll_status(status, response.get_json()["jobId"], {"completed", "failed"})
    assert done["status"] == "completed", done
    return done


def _bundles(storage: Storage) -> set[str]:
    pages = storage._client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket, Prefix="bundles/")
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def _result_key(store: JobStore, job_id: str) -> str:
    job = store.get(job_id)
    assert job is not None
    return job.result_key


def _manifest(url: str) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(httpx.get(url, timeout=30).content)) as zf:
        return json.loads(zf.read("manifest.json"))  # type: ignore[no-any-return]


def test_a_repeated_export_completes_with_the_same_bundle_for_another_tenant(
    api: FlaskClient, reuse_settings: Settings
) -> None:
    storage = Storage(reuse_settings)
    store: JobStore = api.application.extensions["delineate"].store
    ids = [70000, 70007, 70014, 70001]  # 70001 is missing: the manifest lists it
    first = _export(api, ids, ALICE)
    assert "reused" not in first
    built = _result_key(store, first["jobId"])
    assert built == bundle_key(first["jobId"])
    before = _bundles(storage)
    assert built in before

    began = time.perf_counter()
    second = _export(api, [70014, 70001, 70000, 70007, 70000], BOB)  # the same set, in another order
    took = time.perf_counter() - began
    assert second["reused"] is True and second["jobId"] != first["jobId"]
    assert _result_key(store, second["jobId"]) == built
    assert _bundles(storage) == before  # no new object: nothing was bundled
    assert second["size"] == first["size"] and second["bytesTotal"] == first["bytesTotal"]
    assert second["availableFiles"] == 3 and second["missingFileIds"] == [70001]
    assert second["progress"] == 100 and second["phase"] == "done"
    assert took < 5, took  # (a repeated 100-file export's time is bench/e2e.py's "reuse" figure)

    url = second["downloadUrl"]
    assert built in url and f"delineate-{second['jobId']}.zip" in httpx.URL(url).params["response-content-disposition"]
    manifest = _manifest(url)
    assert manifest["jobId"] == first["jobId"] and manifest["missing"] == [70001]  # the builder's own
    assert api.get(f"/v1/download/{second['jobId']}", headers=BOB).status_code == 302


def test_a_changed_source_means_a_new_bundle(
    api: FlaskClient, reuse_settings: Settings, own_sources: list[int]
) -> None:
    storage = Storage(reuse_settings)
    store: JobStore = api.application.extensions["delineate"].store
    first = _export(api, own_sources, ALICE)
    assert "reused" not in first

    version_2 = f"source {own_sources[1]}, version 2".encode() * 2  # the same size: only its ETag tells
    storage.put(source_key(own_sources[1]), version_2)
    changed = _export(api, own_sources, BOB)
    assert "reused" not in changed
    assert _result_key(store, changed["jobId"]) == bundle_key(changed["jobId"])  # a bundle of its own
    assert changed["size"] == first["size"]
    with zipfile.ZipFile(io.BytesIO(httpx.get(changed["downloadUrl"], timeout=30).content)) as zf:
        assert zf.read(f"{own_sources[1]}.zip") == version_2

    again = _export(api, own_sources, ALICE)  # the latest bundle of these ids is the one to reuse
    assert again["reused"] is True and _result_key(store, again["jobId"]) == bundle_key(changed["jobId"])


def test_revoking_one_job_leaves_the_other_tenants_link_working(api: FlaskClient, reuse_settings: Settings) -> None:
    storage = Storage(reuse_settings)
    ids = [70021, 70028, 70035]
    first = _export(api, ids, ALICE)
    second = _export(api, ids, BOB)
    assert second["reused"] is True
    key = bundle_key(first["jobId"])

    revoked = api.delete(f"/v1/download/{first['jobId']}", headers=ALICE)
    assert revoked.status_code == 202 and revoked.get_json()["revokedAt"]
    assert api.get(f"/v1/download/{first['jobId']}", headers=ALICE).status_code == 410
    assert storage.head(key) is not None  # bob still uses it
    link = api.get(f"/v1/download/{second['jobId']}", headers=BOB)
    assert link.status_code == 302
    assert _manifest(link.headers["Location"])["jobId"] == first["jobId"]

    third = _export(api, ids, ALICE)  # a live bundle, whoever built it
    assert third["reused"] is True
    for job, headers in ((second, BOB), (third, ALICE)):
        assert api.delete(f"/v1/download/{job['jobId']}", headers=headers).status_code == 202
    assert storage.head(key) is None  # its last job revoked: gone with it
    store: JobStore = api.application.extensions["delineate"].store
    assert store.revoked_bundles(1000) == [] and not store.redis.exists(bundle_refs_key(first["jobId"]))


def _run_job(settings: Settings, store: JobStore, ids: list[int]) -> str:
    job = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, file_ids=ids)
    store.create(job)
    DownloadRun(job.job_id, store, Storage(settings), settings, holder="test-runner").run()
    return job.job_id


def _sweeper(settings: Settings) -> tuple[JobStore, Storage, Sweeper]:
    """The store, the storage and a sweeper whose parts a test runs itself."""
    app = create_app(settings)
    svc = app.extensions["delineate"]
    storage = Storage(settings)
    return svc.store, storage, Sweeper(settings, svc.store, storage, svc.redis, app.extensions["celery"])


def test_the_janitor_keeps_a_shared_bundle_until_its_last_job_expires(reuse_settings: Settings) -> None:
    settings = reuse_settings.replace(job_ttl_seconds=2)
    store, storage, sweeper = _sweeper(settings)
    ids = [70042, 70049, 70056]
    builder = _run_job(settings, store, ids)
    time.sleep(1)
    reuser = _run_job(settings, store, ids)
    reused = store.get(reuser)
    assert reused is not None and reused.reused_from == builder and reused.result_key == bundle_key(builder)

    wait_for(lambda: not store.redis.exists(job_key(builder)), 5, "the builder's expiry")
    report = SweepReport()
    sweeper.delete_expired(report)
    assert storage.head(bundle_key(builder)) is not None  # its reuser lives: the bundle stays
    assert store.redis.zscore(EXPIRY_KEY, builder) is not None  # to be looked at again
    assert store.get(reuser) is not None

    wait_for(lambda: not store.redis.exists(job_key(reuser)), 5, "the reuser's expiry")
    sweeper.delete_expired(report)
    assert storage.head(bundle_key(builder)) is None  # its last job expired: gone
    assert not store.redis.exists(bundle_refs_key(builder))
    assert store.redis.zscore(EXPIRY_KEY, builder) is None


@pytest.mark.parametrize("ids", [[70000, 70001, 70007, 70014], [70000, 70001, 77777, 700000]], ids=["listed", "heads"])
def test_checking_all_files_at_once_tells_what_a_head_tells(reuse_settings: Settings, ids: list[int]) -> None:
    """Close ids are checked by one listing of their key range, others by HEADs: the same answer."""
    storage = Storage(reuse_settings)
    assert (reuse._listed(storage, ids) is not None) is (ids[-1] < 100_000)
    available, missing = reuse.check_all(storage, ids, lambda key, etag: lambda: [])
    expected = {i: storage.head(source_key(i)) for i in ids}
    assert missing == [i for i, info in expected.items() if info is None]
    assert [(s.file_id, s.size, s.etag) for s in available] == [
        (i, info.size, info.etag) for i, info in expected.items() if info is not None
    ]
    assert all(s.etag.startswith('"') for s in available)


def test_the_sweeper_deletes_a_revoked_shared_bundle_only_with_its_last_user(reuse_settings: Settings) -> None:
    """Revokers that died after the write: the sweeper releases each job's use, as they would have."""
    store, storage, sweeper = _sweeper(reuse_settings)
    ids = [70063, 70070, 70077]
    builder = _run_job(reuse_settings, store, ids)
    reuser = _run_job(reuse_settings, store, ids)
    assert store.get(reuser).reused_from == builder  # type: ignore[union-attr]

    store.revoke(builder)
    sweeper.delete_revoked(SweepReport())
    assert storage.head(bundle_key(builder)) is not None and store.revoked_bundles(1000) == []
    store.revoke(reuser)
    sweeper.delete_revoked(SweepReport())
    assert storage.head(bundle_key(builder)) is None


def test_a_bundle_in_parts_is_reused_part_for_part_and_outlives_its_builder(
    make_settings: Callable[..., Settings], workdir: Path
) -> None:
    settings = make_settings(
        bundle_reuse=True, download_delay_enabled=False, api_keys=KEYS, bundle_part_bytes=256 * 1024
    )
    worker = start_worker(settings, workdir, "worker-reuse-parts", concurrency=2)
    try:
        client = create_app(settings).test_client()
        storage = Storage(settings)
        ids = [70007, 70063, 70147, 70168, 70217, 70245]
        first = _export(client, ids, ALICE)
        assert first["parts"] and len(first["parts"]) > 1, first
        before = _bundles(storage)
        second = _export(client, ids, BOB)
        assert second.get("reused") is True and second["parts"] == first["parts"]
        assert _bundles(storage) == before  # not a byte written
        assert client.delete(f"/v1/download/{first['jobId']}", headers=ALICE).status_code == 202
        for part in second["parts"]:  # the builder revoked: bob's parts stay, whole
            answer = client.get(f"/v1/download/{second['jobId']}?part={part['index']}", headers=BOB)
            assert answer.status_code == 302, answer.get_json()
            body = httpx.get(answer.headers["Location"], timeout=30).content
            assert hashlib.sha256(body).hexdigest() == part["sha256"]
        assert client.delete(f"/v1/download/{second['jobId']}", headers=BOB).status_code == 202
        assert not _bundles(storage) & {k for k in before if first["jobId"] in k}  # gone with its last user
    finally:
        worker.stop()
