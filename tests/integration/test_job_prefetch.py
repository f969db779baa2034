"""With no simulated delay, a bundle's files are checked by a GET that keeps their bytes
(one request per file, not a HEAD and a GET), up to jobs.PREFETCH_BYTES; past that, or
with a delay, files are HEADs and streamed while bundling. The runs here are the real
DownloadRun against the real Redis and SeaweedFS (no Celery), and each bundle is read
back and compared with its sources."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from delineate.config import Settings
from delineate.errors import SourceUnavailable, StorageMisconfigured
from delineate.ids import new_uuid
from delineate.jobs import run as jobs
from delineate.jobs.run import DownloadRun
from delineate.models import Job, JobState
from delineate.services import build_services
from delineate.storage import ObjectInfo, Storage, bundle_key, source_key

SEEDED = [70000, 70007, 70014]
MISSING = 70001


class CountingStorage(Storage):
    """The real Storage, counting which of its checks and reads a run makes."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls: Counter[str] = Counter()

    def head(self, key: str) -> ObjectInfo | None:
        self.calls["head"] += 1
        return super().head(key)

    def read_small(self, key: str, limit: int) -> tuple[ObjectInfo, list[bytes] | None] | None:
        self.calls["read_small"] += 1
        return super().read_small(key, limit)

    def iter_object(self, key: str, chunk_size: int = 256 * 1024, etag: str = "") -> Iterator[bytes]:
        self.calls["get"] += 1
        return super().iter_object(key, chunk_size, etag)


def _run(settings: Settings, file_ids: list[int], delay: bool) -> tuple[dict[str, Any], CountingStorage]:
    settings = settings.replace(download_delay_enabled=delay, download_delay_min_ms=1, download_delay_max_ms=2)
    svc = build_services(settings)
    storage = CountingStorage(settings)
    job = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=file_ids)
    svc.store.create(job)
    DownloadRun(job.job_id, svc.store, storage, settings, holder="test-runner").run()
    done = svc.store.get(job.job_id)
    assert done is not None
    return svc.store.status(done) | {"resultKey": done.result_key}, storage


def _assert_bundle_matches_sources(storage: Storage, status: dict[str, Any], ids: list[int]) -> None:
    assert status["status"] == "completed", status
    raw = b"".join(storage.iter_object(bundle_key(status["jobId"])))
    assert len(raw) == status["size"]
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert [entry["file_id"] for entry in manifest["files"]] == ids
        for entry in manifest["files"]:
            original = b"".join(storage.iter_object(source_key(entry["file_id"])))
            assert zf.read(f"{entry['file_id']}.zip") == original
            assert entry["size"] == len(original) and entry["sha256"] == hashlib.sha256(original).hexdigest()


def _sizes(storage: Storage) -> list[int]:
    infos = [storage.head(source_key(i)) for i in SEEDED]
    return [info.size for info in infos if info is not None]


def test_without_delay_each_file_is_one_get(settings: Settings, storage: Storage) -> None:
    status, counted = _run(settings, [*SEEDED, MISSING], delay=False)
    _assert_bundle_matches_sources(storage, status, SEEDED)
    assert status["missingFileIds"] == [MISSING] and status["availableFiles"] == 3
    assert counted.calls == {"read_small": 4}  # no HEAD, no second GET


def test_past_the_budget_files_are_heads_and_streamed(
    settings: Settings, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, _ = _sizes(storage)
    assert second > 1
    # The first file fits, the second does not (its size is known from its GET), the
    # third is only a HEAD: the last two are streamed while bundling.
    monkeypatch.setattr(jobs, "PREFETCH_BYTES", first + second - 1)
    status, counted = _run(settings, SEEDED, delay=False)
    _assert_bundle_matches_sources(storage, status, SEEDED)
    assert counted.calls == {"read_small": 2, "head": 1, "get": 2}


def test_with_a_delay_files_are_heads_and_streamed(settings: Settings, storage: Storage) -> None:
    status, counted = _run(settings, [*SEEDED, MISSING], delay=True)
    _assert_bundle_matches_sources(storage, status, SEEDED)
    assert counted.calls == {"head": 4, "get": 3}  # nothing held while the delay runs


def test_a_single_file_job_is_only_checked(settings: Settings) -> None:
    status, counted = _run(settings, [SEEDED[0]], delay=False)
    assert status["status"] == "completed" and status["resultKey"] == source_key(SEEDED[0])
    assert counted.calls == {"head": 1}  # its link points at the source: no bytes to read


# -- Storage.read_small, on both of its paths ------------------------------------------------------


@pytest.fixture(params=["direct", "boto3"])
def either_storage(request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Storage:
    if request.param == "boto3":  # FAST_PATHS=false: every request goes through boto3
        settings = settings.replace(fast_paths=False)
    return Storage(settings)


def test_read_small_holds_a_small_object_and_only_sizes_a_large_one(either_storage: Storage) -> None:
    data = bytes(range(256)) * 1000
    either_storage.put("tests/prefetch/object.bin", data)
    found = either_storage.read_small("tests/prefetch/object.bin", len(data))
    assert found is not None and found[0].size == len(data) and b"".join(found[1] or []) == data
    found = either_storage.read_small("tests/prefetch/object.bin", len(data) - 1)
    assert found is not None and found[0].size == len(data) and found[1] is None
    # the unread answer was closed, not left on a pooled connection for the next request
    assert b"".join(either_storage.iter_object("tests/prefetch/object.bin")) == data
    assert either_storage.read_small("tests/prefetch/never-written", 1 << 20) is None


def test_read_small_tells_a_missing_bucket_from_a_missing_key(settings: Settings) -> None:
    storage = Storage(dataclasses.replace(settings, s3_bucket_name="no-such-bucket-here"))
    with pytest.raises(StorageMisconfigured):
        storage.read_small("downloads/70000.zip", 1 << 20)


def test_read_small_cut_short_is_transient(settings: Settings) -> None:
    from tests.integration.test_storage_direct import _Misbehaving, _store_at

    server = _Misbehaving(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    try:
        with pytest.raises(SourceUnavailable):
            _store_at(settings, server.port).read_small("downloads/70000.zip", 1 << 20)
    finally:
        server.sock.close()
