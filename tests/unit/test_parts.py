"""Pure logic of a bundle in parts: the planner against the zips it plans for, the part
manifests, and the client's checks of a part."""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from pathlib import Path

import pytest
from zipstream import ZIP_STORED, ZipStream

from delineate.client.api import part_path
from delineate.client.errors import VerificationError
from delineate.client.verify import verify_part
from delineate.jobs.bundle import BundleManifest, Source, stream_bundle
from delineate.jobs.parts import (
    ARCHIVE_END_BYTES,
    ENTRY_OVERHEAD_BYTES,
    MANIFEST_BASE_BYTES,
    MANIFEST_FILE_BYTES,
    MANIFEST_MISSING_BYTES,
    file_bytes,
    part_base_bytes,
    plan_parts,
)

JOB = "0b5e1c9e-8a1f-4f5e-9d3e-1c2b3a4d5e6f"


def _sources(sizes: list[int], first_id: int = 70000) -> list[Source]:
    return [
        Source(first_id + 7 * n, size, lambda n=n, size=size: iter([bytes([n % 256]) * size]))
        for n, size in enumerate(sizes)
    ]


def _zip(sources: list[Source], missing: list[int], part: tuple[int, int] | None) -> bytes:
    return b"".join(stream_bundle(JOB, sources, missing, part=part))


def _bound(sources: list[Source], missing: list[int]) -> int:
    return part_base_bytes(JOB, missing) + sum(file_bytes(s) for s in sources)


def test_a_bundle_that_fits_is_one_part_and_the_zip_of_today() -> None:
    sources = _sources([1000, 2000, 3000])
    whole = _zip(sources, [70001], None)
    assert plan_parts(JOB, sources, [70001], len(whole) + 1000) == [sources]
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(whole)).read("manifest.json"))
    assert list(manifest) == ["jobId", "files", "missing"]  # no part fields in a single zip


@pytest.mark.parametrize("seed", range(40))
def test_planned_parts_stay_within_the_limit_and_keep_every_file_whole(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([0, rng.randint(1, 300), rng.randint(300, 6000)]) for _ in range(rng.randint(2, 30))]
    sources = _sources(sizes, first_id=rng.choice([10000, 70000, 99_999_000]))
    missing = sorted(rng.sample(range(10000, 100_000_000), rng.randint(0, 40)))
    limit = rng.randint(1500, 25_000)
    plan = plan_parts(JOB, sources, missing, limit)
    assert [s for part in plan for s in part] == sources  # in order, none lost, none twice
    for index, part in enumerate(plan, start=1):
        raw = _zip(part, missing, None if len(plan) == 1 else (index, len(plan)))
        bound = _bound(part, missing)
        assert len(raw) <= bound  # the plan never undercounts...
        reserved = 0 if index == len(plan) else sum(len(str(m)) + 6 for m in missing)  # (only the last lists them)
        assert bound - len(raw) <= 70 * len(part) + 300 + reserved  # ...and overcounts a little
        if len(part) > 1:
            assert len(raw) <= bound <= limit
        else:  # alone: it fits, or it is too large for any part
            assert len(raw) <= limit or file_bytes(part[0]) + part_base_bytes(JOB, missing) > limit
        if index < len(plan):  # greedy: the next part's first file did not fit in this one
            assert bound + file_bytes(plan[index][0]) > limit
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            assert zf.testzip() is None
            assert zf.namelist() == [f"{s.file_id}.zip" for s in part] + ["manifest.json"]


def test_a_file_larger_than_the_limit_sits_alone() -> None:
    sources = _sources([100, 100, 50_000, 100, 100])
    plan = plan_parts(JOB, sources, [], 2000)
    assert [len(part) for part in plan] == [2, 1, 2]
    assert plan[1] == [sources[2]]


def test_part_manifests_name_the_part_and_only_the_last_lists_missing() -> None:
    sources = _sources([3000, 3000, 3000])
    plan = plan_parts(JOB, sources, [70001, 70002], 4000)
    assert len(plan) == 3
    for index, part in enumerate(plan, start=1):
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(_zip(part, [70002, 70001], (index, 3)))).read("manifest.json"))
        assert manifest["jobId"] == JOB and (manifest["part"], manifest["parts"]) == (index, 3)
        assert [f["file_id"] for f in manifest["files"]] == [s.file_id for s in part]
        if index == 3:
            assert manifest["missing"] == [70001, 70002]
        else:
            assert "missing" not in manifest


def test_the_zip_overhead_counted_is_the_most_zip64_adds() -> None:
    """Files past 4 GiB at offsets past 4 GiB take every ZIP64 field: zipstream-ng's own size
    count (no bytes needed) then equals the planner's, but for what the first entry (offset 0)
    and the small manifest entry do without."""
    sizes = [5 << 30, 9 << 30, 1 << 33]
    zs = ZipStream(compress_type=ZIP_STORED, sized=True)
    for n, size in enumerate(sizes):
        zs.add(iter(()), f"{70000 + n}.zip", size=size)
    manifest = b"{}" * 300
    zs.add(manifest, "manifest.json")
    names = [f"{70000 + n}.zip" for n in range(len(sizes))] + ["manifest.json"]
    counted = sum(sizes) + len(manifest) + sum(ENTRY_OVERHEAD_BYTES + 2 * len(n) for n in names) + ARCHIVE_END_BYTES
    assert counted - len(zs) == 8 + 44  # first entry: no offset field; manifest: no ZIP64 but the offset


@pytest.mark.parametrize("seed", range(10))
def test_the_manifest_counted_is_at_least_the_manifest_written(seed: int) -> None:
    rng = random.Random(seed)
    ids = [rng.randint(10000, 100_000_000) for _ in range(rng.choice([1, rng.randint(2, 50)]))]
    files = [{"file_id": i, "size": rng.choice([0, rng.randint(1, 1 << 40)]), "sha256": "f" * 64} for i in ids]
    missing = sorted(rng.sample(range(10000, 100_000_000), rng.randint(0, 50)))
    count = rng.randint(1, 99_999)
    written = len(BundleManifest(JOB, missing, files, (count, count)).to_json())
    counted = MANIFEST_BASE_BYTES + len(JOB) + sum(len(str(m)) + MANIFEST_MISSING_BYTES for m in missing)
    counted += sum(MANIFEST_FILE_BYTES + len(str(f["file_id"])) + len(str(f["size"])) for f in files)
    assert 0 <= counted - written <= 5 * len(files) + 60


def _saved_part(tmp_path: Path, part: int, count: int, missing: list[int]) -> tuple[Path, dict[str, object]]:
    sources = _sources([500, 700], first_id=70000 + 100 * part)
    raw = _zip(sources, missing, (part, count))
    path = part_path(tmp_path / "out.zip", part)
    path.write_bytes(raw)
    return path, {"index": part, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "files": 2}


def test_the_client_verifies_a_part_against_its_status_entry_and_manifest(tmp_path: Path) -> None:
    path, entry = _saved_part(tmp_path, 2, 2, [70001])
    assert path.name == "out-part-0002.zip"
    verify_part(path, entry, JOB, 2)
    with pytest.raises(VerificationError, match="manifest"):
        verify_part(path, entry, "another-job", 2)
    with pytest.raises(VerificationError, match="manifest"):
        verify_part(path, {**entry, "files": 3}, JOB, 2)
    with pytest.raises(VerificationError, match="manifest"):
        verify_part(path, {**entry, "index": 1}, JOB, 2)  # (and part 1 would not list missing)
    first, first_entry = _saved_part(tmp_path, 1, 2, [70001])
    verify_part(first, first_entry, JOB, 2)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF  # one byte of an entry's data
    path.write_bytes(bytes(raw))
    with pytest.raises(VerificationError, match="sha256"):
        verify_part(path, entry, JOB, 2)
    with pytest.raises(VerificationError, match=r"corrupt|does not match"):  # even with the status's digest of it
        verify_part(path, {**entry, "sha256": hashlib.sha256(raw).hexdigest()}, JOB, 2)
