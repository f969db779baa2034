"""The streaming zip: stored entries for each source plus ``manifest.json``.

zipstream-ng writes the ZIP format; this module feeds it source streams one at a
time, hashes them as they pass, and appends the manifest once every entry's sha256
is known. Nothing here holds more than one read chunk of a source in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from zipstream import ZIP_STORED, ZipStream


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


def _hashed(
    source: Source,
    manifest: BundleManifest,
    on_bytes: Callable[[int], None],
) -> Iterator[bytes]:
    digest = hashlib.sha256()
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
) -> Iterator[bytes]:
    """Yield the bytes of the whole zip, manifest last (``part``: the zip is that part of
    a bundle in parts, and its manifest says so)."""
    manifest = BundleManifest(job_id=job_id, missing=sorted(missing), part=part)
    zs = ZipStream(compress_type=ZIP_STORED)
    for source in sources:
        zs.add(_hashed(source, manifest, on_bytes), f"{source.file_id}.zip", size=source.size)
    yield from zs.all_files()
    zs.add(manifest.to_json(), "manifest.json")
    yield from zs.finalize()
