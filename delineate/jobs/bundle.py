"""The streaming zip: stored entries for each source plus ``manifest.json``.

:mod:`delineate.jobs.zipwriter` writes the ZIP format; this module feeds it source
streams one at a time, hashes them as they pass, and appends the manifest once every
entry's sha256 is known. Nothing here holds more than one read chunk of a source in
memory. The bytes depend only on the sources and the timestamp given, so a resumed run
(``delineate/jobs/resume.py``) writes the same zip; it may keep entries an earlier run
wrote (:class:`Written`), whose bytes are then not produced again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from delineate.jobs.zipwriter import DateTime, Entry, StoredZip

EPOCH: DateTime = (1980, 1, 1, 0, 0, 0)
"""The zip format's first instant: the timestamp of a job with no creation time."""


@dataclass(frozen=True)
class Source:
    file_id: int
    size: int
    chunks: Callable[[], Iterable[bytes]]
    """Opens the source's byte stream when the zip reaches this entry."""
    etag: str = ""
    """The version its check saw (``jobs/reuse.py`` shares a bundle by its sources' ETags)."""


@dataclass
class BundleManifest:
    job_id: str
    missing: list[int]
    files: list[dict[str, Any]] = field(default_factory=list)
    part: tuple[int, int] | None = None
    """(index, count) of a bundle written in parts (``delineate/jobs/parts.py``); None for one zip."""

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"jobId": self.job_id}
        if self.part is None:
            body.update(files=self.files, missing=self.missing)
        else:  # only the last part lists what is missing
            index, count = self.part
            body.update(part=index, parts=count, files=self.files)
            if index == count:
                body["missing"] = self.missing
        return json.dumps(body, indent=2).encode()


@dataclass(frozen=True)
class Written:
    """A source's entry as written: what a resumed run needs to keep it without its bytes."""

    file_id: int
    entry: Entry
    sha256: str


def zip_time(created_at: str) -> DateTime:
    """The entries' timestamp: the job's creation time (UTC; ISO 8601), so every run of a
    job stamps the same one."""
    if not created_at:
        return EPOCH
    moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


def _hashed(
    source: Source,
    manifest: BundleManifest,
    on_bytes: Callable[[int], None],
    digest: Any,
) -> Iterator[bytes]:
    seen = 0
    for chunk in source.chunks():
        digest.update(chunk)
        seen += len(chunk)
        on_bytes(len(chunk))
        yield chunk
    if seen != source.size:
        # The object changed between the check and the read: a zip entry with a size
        # other than the one declared would be corrupt, so refuse it.
        raise ValueError(f"source {source.file_id} changed while bundling ({seen} bytes, expected {source.size})")
    manifest.files.append({"file_id": source.file_id, "size": seen, "sha256": digest.hexdigest()})


def stream_bundle(
    job_id: str,
    sources: list[Source],
    missing: list[int],
    on_bytes: Callable[[int], None] = lambda n: None,
    part: tuple[int, int] | None = None,
    date_time: DateTime = EPOCH,
    kept: list[Written] | None = None,
    on_written: Callable[[Written], None] = lambda w: None,
) -> Iterator[bytes]:
    """Yield the bytes of the whole zip, manifest last (``part``: the zip is that part of
    a bundle in parts, and its manifest says so).

    ``kept``: the first sources' entries as an earlier run wrote them; their bytes are
    not produced (nor their sources read), so the stream starts at the end of the last
    one. ``on_written`` hears of each source's entry once its bytes have passed.

    :raise ValueError: a source's size is not the one declared, or ``kept`` does not
        match the first sources.
    """
    manifest = BundleManifest(job_id=job_id, missing=sorted(missing), part=part)
    zipped = StoredZip(date_time)
    kept = kept or []
    for written, source in zip(kept, sources, strict=False):
        if (written.file_id, written.entry.size) != (source.file_id, source.size):
            raise ValueError(f"kept entry of {written.file_id} does not match source {source.file_id}")
        zipped.keep(written.entry)
        manifest.files.append({"file_id": source.file_id, "size": source.size, "sha256": written.sha256})
        on_bytes(source.size)
    for source in sources[len(kept) :]:
        digest = hashlib.sha256()
        yield from zipped.add(f"{source.file_id}.zip", source.size, _hashed(source, manifest, on_bytes, digest))
        on_written(Written(source.file_id, zipped.entries[-1], digest.hexdigest()))
    body = manifest.to_json()
    yield from zipped.add("manifest.json", len(body), [body])
    yield from zipped.finish()
