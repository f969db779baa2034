"""A bundle resumed against the real Redis and S3, without a worker: a run that dies mid-zip
(a source that raises, as a kill would leave it) and the run after it, through ``write_bundle``."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from delineate.jobs.bundle import Source, stream_bundle, zip_time
from delineate.jobs.parts import plan_parts, write_bundle
from delineate.jobs.resume import open_resume
from delineate.storage import PART_SIZE_BYTES, Storage, bundle_key, part_key, parts_prefix
from delineate.store.keys import resume_key
from delineate.store.parts_index import PartsIndex
from delineate.store.resume_state import ResumeState

WHEN = zip_time("2026-12-07T12:00:00.000Z")
BIG_LIMIT = 1 << 40


class Died(Exception):
    """Stands for the worker's death in the middle of a source."""


def _sources(
    sizes: list[int], reads: list[int], die_in: int | None = None, etag: str = "v1", die_at: int = 1 << 20
) -> list[Source]:
    def opener(file_id: int, size: int) -> Any:
        def chunks() -> Iterator[bytes]:
            reads.append(file_id)
            for at in range(0, size, 1 << 20):
                if file_id == die_in and at >= die_at:
                    raise Died(file_id)
                yield bytes([file_id % 251]) * min(1 << 20, size - at)

        return chunks

    return [Source(80_000 + n, size, opener(80_000 + n, size), etag) for n, size in enumerate(sizes)]


def _run(settings: Any, job_id: str, sources: list[Source], limit: int) -> Any:
    client = redis.Redis.from_url(settings.redis_url)
    state = ResumeState(client, job_id, settings.job_ttl_seconds)
    resume = open_resume(state, Storage(settings), sources, [], limit, WHEN)
    assert resume is not None
    index = PartsIndex(client)
    return write_bundle(Storage(settings), index, job_id, sources, [], limit, lambda n: None, WHEN, resume)


def _sha(storage: Storage, key: str) -> str:
    return hashlib.sha256(b"".join(storage.iter_object(key))).hexdigest()


def test_a_zip_killed_after_two_parts_continues_from_them_byte_for_byte(make_settings: Any) -> None:
    settings = make_settings()
    storage = Storage(settings)
    job_id = str(uuid.uuid4())
    sizes = [5 << 20, 5 << 20, 5 << 20, 5 << 20]  # 20 MiB: three 8 MiB parts
    whole = hashlib.sha256(b"".join(stream_bundle(job_id, _sources(sizes, []), [], date_time=WHEN))).hexdigest()
    with pytest.raises(Died):  # the 4th file begins at 15 MiB: dies at 17, after part 2 (16 MiB)
        _run(settings, job_id, _sources(sizes, [], die_in=80_003), BIG_LIMIT)
    reads: list[int] = []
    result = _run(settings, job_id, _sources(sizes, reads), BIG_LIMIT)
    assert _sha(storage, bundle_key(job_id)) == whole
    assert result.size == storage.head(bundle_key(job_id)).size  # type: ignore[union-attr]
    assert reads == [80_003]  # the three files within the 16 MiB acknowledged were kept, not read
    state = ResumeState(redis.Redis.from_url(settings.redis_url), job_id, 60).load()
    assert "upload:0" not in state and "done:0" in state


def test_changed_sources_start_afresh(make_settings: Any) -> None:
    settings = make_settings()
    storage = Storage(settings)
    job_id = str(uuid.uuid4())
    sizes = [5 << 20, 5 << 20, 5 << 20, 5 << 20]
    with pytest.raises(Died):
        _run(settings, job_id, _sources(sizes, [], die_in=80_003), BIG_LIMIT)
    reads: list[int] = []
    _run(settings, job_id, _sources(sizes, reads, etag="v2"), BIG_LIMIT)  # another version, same sizes
    assert reads == [80_000, 80_001, 80_002, 80_003]
    whole = b"".join(stream_bundle(job_id, _sources(sizes, []), [], date_time=WHEN))
    assert _sha(storage, bundle_key(job_id)) == hashlib.sha256(whole).hexdigest()


def test_parts_stored_whole_are_skipped_and_the_open_one_continued(make_settings: Any) -> None:
    settings = make_settings()
    storage = Storage(settings)
    job_id = str(uuid.uuid4())
    sizes = [5 << 20] * 6
    limit = 11 << 20  # two files a part (each a multipart upload of 8 MiB + 2 MiB): three parts
    plan = plan_parts(job_id, _sources(sizes, []), [], limit)
    assert [len(p) for p in plan] == [2, 2, 2]
    expected = [
        hashlib.sha256(b"".join(stream_bundle(job_id, files, [], part=(n, 3), date_time=WHEN))).hexdigest()
        for n, files in enumerate(plan, start=1)
    ]
    with pytest.raises(Died):  # in part 3, 4 MiB into its second file: its first 8 MiB acknowledged
        _run(settings, job_id, _sources(sizes, [], die_in=80_005, die_at=4 << 20), limit)
    reads: list[int] = []
    result = _run(settings, job_id, _sources(sizes, reads), limit)
    # Parts 1 and 2 were stored whole: not read, not written; part 3 kept its first file.
    assert reads == [80_005]
    assert [part["sha256"] for part in result.parts] == expected  # (part 3's read back from S3)
    for n, sha in enumerate(expected, start=1):
        assert _sha(storage, part_key(parts_prefix(job_id), n)) == sha
    assert PART_SIZE_BYTES == 8 << 20
    assert redis.Redis.from_url(settings.redis_url).exists(resume_key(job_id))  # (the run deletes it, not this)


def test_a_bundle_within_one_upload_part_keeps_no_state(make_settings: Any) -> None:
    settings = make_settings()
    client = redis.Redis.from_url(settings.redis_url)
    job_id = str(uuid.uuid4())
    small = _sources([3 << 20, 4 << 20], [])  # one PUT: sent again sooner than resumed
    assert open_resume(ResumeState(client, job_id, 60), Storage(settings), small, [], BIG_LIMIT, WHEN) is None
    unknown = [Source(s.file_id, s.size, s.chunks, "") for s in _sources([5 << 20, 5 << 20], [])]
    assert open_resume(ResumeState(client, job_id, 60), Storage(settings), unknown, [], BIG_LIMIT, WHEN) is None
    assert not client.exists(resume_key(job_id))
