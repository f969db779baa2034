"""The deterministic zip writer: the same bytes on every run, zipstream-ng's layout, and a
zip continued from kept entries equal to the one streamed whole."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from zipstream import ZIP_STORED, ZipStream

from delineate.jobs.bundle import Source, Written, stream_bundle, zip_time
from delineate.jobs.zipwriter import Entry, StoredZip

JOB = "0b5e1c9e-8a1f-4f5e-9d3e-1c2b3a4d5e6f"
WHEN = zip_time("2026-12-07T11:59:58.123Z")


def _sources(sizes: list[int]) -> list[Source]:
    return [
        Source(
            70000 + n, size, lambda n=n, size=size: iter([bytes([n % 251]) * (size // 2), b"x" * (size - size // 2)])
        )
        for n, size in enumerate(sizes)
    ]


def test_two_runs_over_the_same_sources_give_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = _sources([1000, 0, 5000])
    first = b"".join(stream_bundle(JOB, sources, [70009], date_time=WHEN))
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # another clock: no effect
    second = b"".join(stream_bundle(JOB, sources, [70009], date_time=WHEN))
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert zf.testzip() is None
        assert {info.date_time for info in zf.infolist()} == {(2026, 12, 7, 11, 59, 58)}


def test_the_layout_is_zipstream_ngs() -> None:
    sources = _sources([1000, 0, 5000, 77])
    ours = b"".join(stream_bundle(JOB, sources, [], date_time=WHEN))
    body = zipfile.ZipFile(io.BytesIO(ours)).read("manifest.json")
    zs = ZipStream(compress_type=ZIP_STORED)
    for source in sources:
        zs.add(iter(source.chunks()), f"{source.file_id}.zip", size=source.size)
    zs.add(body, "manifest.json")
    theirs = bytearray(b"".join(zs.finalize()))
    # zipstream-ng stamps the clock: put our timestamp in its headers, then compare whole.
    with zipfile.ZipFile(io.BytesIO(ours)) as zf:
        stamp = ours[10:14]
        for info in zf.infolist():
            theirs[info.header_offset + 10 : info.header_offset + 14] = stamp
    at = 0
    while (at := theirs.find(b"PK\x01\x02", at)) >= 0:
        theirs[at + 12 : at + 16] = stamp
        at += 4
    assert bytes(theirs) == ours


def test_a_zip_continued_from_kept_entries_ends_like_the_whole() -> None:
    sources = _sources([3000, 10, 4000, 500])
    written: list[Written] = []
    whole = b"".join(stream_bundle(JOB, sources, [], date_time=WHEN, on_written=written.append))
    assert [w.file_id for w in written] == [s.file_id for s in sources]
    reads: list[int] = []
    counting = [Source(s.file_id, s.size, lambda s=s: reads.append(s.file_id) or s.chunks()) for s in sources]
    done: list[int] = []
    tail = b"".join(stream_bundle(JOB, counting, [], done.append, date_time=WHEN, kept=written[:2]))
    start = written[1].entry.offset + written[1].entry.length
    assert tail == whole[start:]
    assert reads == [s.file_id for s in sources[2:]]  # the kept entries' sources were not read
    assert sum(done) == sum(s.size for s in sources)  # progress counts them all the same


def test_kept_entries_of_other_sources_are_refused() -> None:
    sources = _sources([300, 400])
    written: list[Written] = []
    b"".join(stream_bundle(JOB, sources, [], date_time=WHEN, on_written=written.append))
    with pytest.raises(ValueError):
        b"".join(stream_bundle(JOB, sources[::-1], [], date_time=WHEN, kept=written[:1]))


def test_zip64_entries_take_the_lengths_zipstream_ng_counts() -> None:
    """Files past 4 GiB at offsets past 4 GiB (kept, so no byte is made): the archive is as long
    as zipstream-ng's own count for them, ZIP64 fields and end records included."""
    sizes = [5 << 30, 9 << 30, 1 << 33]
    zipped = StoredZip(WHEN)
    for n, size in enumerate(sizes):
        zipped.keep(Entry(f"{70000 + n}.zip", size, 0, zipped.offset))
    body = b"{}" * 300
    tail = b"".join(zipped.add("manifest.json", len(body), [body])) + b"".join(zipped.finish())
    zs = ZipStream(compress_type=ZIP_STORED, sized=True)
    for n, size in enumerate(sizes):
        zs.add(iter(()), f"{70000 + n}.zip", size=size)
    zs.add(body, "manifest.json")
    assert zipped.entries[-1].offset + len(tail) == len(zs)
    assert tail[-22:-18] == b"PK\x05\x06"
    assert b"PK\x06\x06" in tail and b"PK\x06\x07" in tail  # the ZIP64 end record and locator
