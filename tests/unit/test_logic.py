"""Pure logic: the zip writer, backoff arithmetic, the status model."""

import hashlib
import io
import json
import random
import zipfile

import pytest

from delineate.dev.seed import SAMPLE_IDS, sample_content
from delineate.jobs.bundle import Source, stream_bundle
from delineate.jobs.retry import backoff_seconds
from delineate.models import Job, JobState, Phase


def test_bundle_is_a_valid_zip_with_manifest() -> None:
    blobs = {70000: b"a" * 5000, 70007: bytes(range(256)) * 40}
    sources = [Source(fid, len(data), lambda data=data: iter([data[:100], data[100:]])) for fid, data in blobs.items()]
    seen: list[int] = []
    raw = b"".join(stream_bundle("job-1", sources, [70001], seen.append))
    assert sum(seen) == sum(len(b) for b in blobs.values())
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == ["70000.zip", "70007.zip", "manifest.json"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
        manifest = json.loads(zf.read("manifest.json"))
        for fid, data in blobs.items():
            assert zf.read(f"{fid}.zip") == data
    assert manifest["jobId"] == "job-1"
    assert manifest["missing"] == [70001]
    assert manifest["files"] == [
        {"file_id": fid, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for fid, data in blobs.items()
    ]


def test_bundle_refuses_a_source_that_changed_size() -> None:
    sources = [Source(1, 10, lambda: iter([b"x" * 9])), Source(2, 1, lambda: iter([b"y"]))]
    with pytest.raises(ValueError, match="changed"):
        b"".join(stream_bundle("j", sources, []))


def test_backoff_doubles_with_equal_jitter() -> None:
    rng = random.Random(1)
    for retries in range(6):
        for _ in range(50):
            delay = backoff_seconds(retries, 1.0, rng)
            assert 2**retries / 2 <= delay <= 2**retries
    # five retries at the default base (2 s) wait 31-62 s in all: enough to ride out a store restart
    from delineate.config import Settings

    class Extremes(random.Random):
        def __init__(self, high: bool) -> None:
            super().__init__()
            self.high = high

        def uniform(self, a: float, b: float) -> float:
            return b if self.high else a

    base = Settings().retry_backoff_base_seconds
    assert sum(backoff_seconds(n, base, Extremes(high=False)) for n in range(5)) == 31
    assert sum(backoff_seconds(n, base, Extremes(high=True)) for n in range(5)) == 62


def test_status_json_has_every_design_field() -> None:
    job = Job(job_id="j", status=JobState.PROCESSING, file_ids=[1, 2], phase=Phase.CHECKING)
    status = job.to_status()
    assert set(status) == {
        "jobId", "status", "progress", "completedFiles", "totalFiles", "availableFiles", "missingFileIds",
        "attempts", "downloadUrl", "size", "error", "createdAt", "updatedAt", "completedAt", "version",
        "phase", "bytesDone", "bytesTotal", "callback", "parts",
    }  # fmt: skip
    assert status["totalFiles"] == 2 and status["downloadUrl"] is None


def test_terminal_states() -> None:
    assert {s for s in JobState if s.terminal} == {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}


def test_sample_data_is_deterministic_and_in_range() -> None:
    assert len(SAMPLE_IDS) == 143 and SAMPLE_IDS[0] == 70000 and SAMPLE_IDS[-1] == 70994
    assert sample_content(70000) == sample_content(70000)
    assert all(1024 <= len(sample_content(i)) <= 1024 * 1024 for i in SAMPLE_IDS[:10])
