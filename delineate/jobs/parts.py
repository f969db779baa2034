"""A bundle in parts: past BUNDLE_PART_BYTES, a job's zip is written as numbered parts.

Each part (``bundles/{jobId}/part-0001.zip``, …) is a complete zip of whole files with its
own ``manifest.json`` (``jobId``, ``part``, ``parts``, ``files``; the last part also
``missing``), and a separate S3 object, so a bundle can be fetched, checked, and
resumed, part by part (``delineate/jobs/resume.py``). Which files go in which part is planned from the sizes the check
phase found, before a byte is read (:func:`plan_parts`): in the job's order, a part takes
files while its zip, counted with the most overhead the zip format can add, stays within
the limit. A file larger than the limit sits alone in its part. A bundle that fits in one
part is the single ``bundles/{jobId}.zip`` it always was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from delineate.jobs.bundle import EPOCH, Source, Written, stream_bundle
from delineate.jobs.resume import BundleResume
from delineate.jobs.zipwriter import DateTime
from delineate.models import Job
from delineate.storage import Storage, bundle_key, part_key, parts_prefix
from delineate.store.parts_index import PartsIndex

ENTRY_OVERHEAD_BYTES = 148
"""The most zip bytes around one stored entry, besides its name (written twice): local
header 30 + ZIP64 extra 20, ZIP64 data descriptor 24, central directory header 46 + ZIP64
extra 28 (zipstream-ng uses the ZIP64 forms only for large files and offsets; counting
them always keeps the plan on the safe side by a few dozen bytes a file)."""

ARCHIVE_END_BYTES = 98
"""End of central directory 22, with the ZIP64 end record 56 and its locator 20."""

MANIFEST_FILE_BYTES = 136
"""A file's entry in ``manifest.json`` (indent 2) besides the digits of its id and size:
the keys, the 64 hex digits of its sha256, indentation and separators."""

MANIFEST_BASE_BYTES = 128
"""``manifest.json`` with no files and nothing missing, besides the job id's characters."""

MANIFEST_MISSING_BYTES = 6
"""A missing id's line in ``manifest.json`` besides its digits."""

MANIFEST_NAME = "manifest.json"

DELETE_BATCH = 1000
"""Keys per DeleteObjects request (S3's limit)."""


def _entry_bytes(name: str, size: int) -> int:
    return size + ENTRY_OVERHEAD_BYTES + 2 * len(name.encode())


def file_bytes(source: Source) -> int:
    """The most bytes ``source`` adds to a part: its entry and its line in the manifest."""
    manifest_line = MANIFEST_FILE_BYTES + len(str(source.file_id)) + len(str(source.size))
    return _entry_bytes(f"{source.file_id}.zip", source.size) + manifest_line


def part_base_bytes(job_id: str, missing: Sequence[int]) -> int:
    """The most bytes of a part without its files: the manifest's entry (with every missing
    id, which only the last part lists: reserved in each, as which part is last is known
    only at the end) and the end of the archive."""
    manifest = MANIFEST_BASE_BYTES + len(job_id) + sum(len(str(m)) + MANIFEST_MISSING_BYTES for m in missing)
    return _entry_bytes(MANIFEST_NAME, manifest) + ARCHIVE_END_BYTES


def plan_parts(job_id: str, sources: Sequence[Source], missing: Sequence[int], limit: int) -> list[list[Source]]:
    """The files of each part, in order: one list when the whole bundle fits in ``limit``
    bytes (the single zip). A part never exceeds ``limit`` unless one file alone does."""
    base = part_base_bytes(job_id, missing)
    parts: list[list[Source]] = [[]]
    used = base
    for source in sources:
        cost = file_bytes(source)
        if parts[-1] and used + cost > limit:
            parts.append([])
            used = base
        parts[-1].append(source)
        used += cost
    return parts


@dataclass(frozen=True)
class BundleResult:
    """Where a job's bundle went: ``key`` is the zip, or the parts' prefix with ``parts``."""

    key: str
    size: int
    parts: list[dict[str, Any]] | None = None

    def object_keys(self) -> list[str]:
        if self.parts is None:
            return [self.key]
        return [part_key(self.key, part["index"]) for part in self.parts]

    def fields(self) -> dict[str, Any]:
        """The job hash's fields for it (``parts`` only for a bundle in parts)."""
        written: dict[str, Any] = {"resultKey": self.key, "size": self.size}
        if self.parts is not None:
            written["parts"] = self.parts
        return written


def _digested(chunks: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def write_bundle(
    storage: Storage,
    index: PartsIndex,
    job_id: str,
    sources: list[Source],
    missing: list[int],
    limit: int,
    on_bytes: Callable[[int], None],
    date_time: DateTime = EPOCH,
    resume: BundleResume | None = None,
) -> BundleResult:
    """Stream the job's bundle into the store: one zip, or parts of at most ``limit`` bytes,
    stamped ``date_time``; with ``resume``, continuing what an earlier run of the job
    stored (``delineate/jobs/resume.py``).

    :raise ValueError: a source changed size since its check (see ``stream_bundle``).
    :raise StorageError: the store refused or did not answer.
    """
    plan = plan_parts(job_id, sources, missing, limit)
    count = len(plan)

    def zip_of(files: list[Source], part: tuple[int, int] | None) -> Callable[..., Iterator[bytes]]:
        def make(kept: list[Written], on_written: Callable[[Written], None]) -> Iterator[bytes]:
            return stream_bundle(job_id, files, missing, on_bytes, part, date_time, kept, on_written)

        return make

    if count == 1:
        key = bundle_key(job_id)
        if resume is None:
            return BundleResult(key, storage.upload_stream(key, zip_of(sources, None)([], lambda w: None)))
        stored = resume.stored(0, key)
        if stored is not None:
            on_bytes(sum(s.size for s in sources))
            return BundleResult(key, stored[0])
        return BundleResult(key, resume.write(0, key, sources, zip_of(sources, None), digest=False)[0])
    prefix = parts_prefix(job_id)
    index.record(job_id, count)
    parts: list[dict[str, Any]] = []
    for number, files in enumerate(plan, start=1):
        key = part_key(prefix, number)
        make = zip_of(files, (number, count))
        if resume is None:
            digest = hashlib.sha256()  # of the bytes as they go to the store, not re-read
            size = storage.upload_stream(key, _digested(make([], lambda w: None), digest))
            sha256 = digest.hexdigest()
        elif (stored := resume.stored(number, key)) is not None:
            on_bytes(sum(s.size for s in files))  # (a part an earlier run stored whole)
            size, sha256 = stored
        else:
            size, sha256 = resume.write(number, key, files, make, digest=True)
        parts.append({"index": number, "size": size, "sha256": sha256, "files": len(files)})
    return BundleResult(prefix, sum(part["size"] for part in parts), parts)


def result_objects(job: Job) -> list[str]:
    """The objects of a completed job's bundle: its zip or its parts (its own, or the bundle
    it reused); none for a single-file job (its result is the shared source object)."""
    if job.parts is not None:
        return [part_key(job.result_key, part["index"]) for part in job.parts]
    return [job.result_key] if job.result_key == bundle_key(job.job_id) or job.reused_from else []


def delete_parts(storage: Storage, index: PartsIndex, job_ids: list[str], *, forget: bool) -> None:
    """Delete every part of those of ``job_ids`` whose bundle was written in parts (and,
    with ``forget``, their index entries, once the parts are gone).

    :raise StorageError: the store refused or did not answer (the index is left as it was).
    """
    counts = index.counts(job_ids)
    keys = [part_key(parts_prefix(job_id), n) for job_id, count in counts.items() for n in range(1, count + 1)]
    for start in range(0, len(keys), DELETE_BATCH):
        storage.delete_many(keys[start : start + DELETE_BATCH])
    if forget:
        index.forget(list(counts))
