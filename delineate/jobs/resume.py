"""A bundle resumed, not restarted: the run after a worker's death continues its zip.

Each zip of a bundle (the single one, or each part) is uploaded resumably: after every
part S3 acknowledges, the upload's id, its parts' ETags and the entries written so far
(CRC, size, offset, sha256) are saved with the job (``delineate/store/resume_state.py``).
The zip's bytes depend only on its sources and the job's creation time
(``delineate/jobs/zipwriter.py``), so a later run of the job with the same sources
(the fingerprint: ids, sizes, ETags) continues the open upload (still listed by S3):

- the entries that end within the acknowledged bytes are *kept*: their sources are not
  read again, their CRCs and sizes stand in for them;
- the stream is made again from the end of the last kept entry, and what falls before the
  acknowledged offset (the rest of the entry that straddles it) is read and dropped;
- a zip stored whole (a part of a bundle in parts; or the single zip, when the worker died
  before marking the job complete) is not written again.

A resumed part's sha256 cannot come from the bytes sent (the first ones were sent by the
earlier run): it is read back from the store once the part is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from delineate.jobs.bundle import Source, Written
from delineate.jobs.zipwriter import DateTime, Entry
from delineate.storage import PART_SIZE_BYTES, Checkpoint, OpenUpload, Storage
from delineate.store.resume_state import ResumeState

logger = logging.getLogger(__name__)

MakeStream = Callable[[list[Written], Callable[[Written], None]], Iterator[bytes]]
"""Makes a zip's stream from its kept entries, telling of each entry written."""


def fingerprint(sources: list[Source], missing: list[int], limit: int, date_time: DateTime) -> str | None:
    """What the bundle is made of; None when it cannot be told (a source without an ETag:
    another version of the same size would go unnoticed)."""
    if any(not source.etag for source in sources):
        return None
    made_of = [list(date_time), limit, sorted(missing), [[s.file_id, s.size, s.etag] for s in sources]]
    return hashlib.sha256(json.dumps(made_of).encode()).hexdigest()


def open_resume(
    state: ResumeState, storage: Storage, sources: list[Source], missing: list[int], limit: int, date_time: DateTime
) -> BundleResume | None:
    """The job's bundle as its earlier runs left it; None when it cannot be resumed safely,
    or need not be: a bundle within one upload part is one PUT, cheaper to send again than
    the state's round trips."""
    if sum(source.size for source in sources) < PART_SIZE_BYTES:
        return None
    made_of = fingerprint(sources, missing, limit, date_time)
    return None if made_of is None else BundleResume(state, storage, made_of)


class BundleResume:
    """One job's bundle, written so that the job's next run can continue it."""

    def __init__(self, state: ResumeState, storage: Storage, made_of: str) -> None:
        self.state = state
        self.storage = storage
        known = state.load()
        if known.get("fingerprint") != made_of:
            if len(known) > 1:
                logger.info("%s: the sources changed; the bundle starts afresh", state.key)
            state.reset(made_of)
            known = {"fingerprint": made_of}
        self.known = known

    def stored(self, n: int, key: str) -> tuple[int, str] | None:
        """Zip ``n``'s (size, sha256) when an earlier run stored it whole, and it is still there."""
        raw = self.known.get(f"done:{n}")
        if raw is None:
            return None
        done = json.loads(raw)
        info = self.storage.head(key)
        if info is None or info.size != done["size"]:
            return None
        return done["size"], done["sha256"]

    def write(self, n: int, key: str, sources: list[Source], make: MakeStream, digest: bool) -> tuple[int, str]:
        """Upload zip ``n`` to ``key`` (continuing an earlier run's upload when it can);
        returns its size and, when ``digest``, its sha256 (else "").

        :raise StorageError: the store refused or did not answer.
        """
        kept, resumed = self._resumable(n, key, sources)
        written = len(kept)
        pending: list[Written] = []

        def saved(upload: OpenUpload) -> None:
            nonlocal written
            fields: dict[str, Any] = {
                f"upload:{n}": {"id": upload.upload_id, "parts": upload.parts, "size": upload.size}
            }
            for entry in pending:
                fields[f"entry:{n}:{written}"] = [entry.file_id, entry.entry.size, entry.entry.crc,
                                                  entry.entry.offset, entry.sha256]  # fmt: skip
                written += 1
            pending.clear()
            self.state.save(fields)

        chunks: Iterable[bytes] = make(kept, pending.append)
        sha = hashlib.sha256()
        if resumed is None:
            chunks = _digested(chunks, sha) if digest else chunks
        else:
            start = kept[-1].entry.offset + kept[-1].entry.length if kept else 0
            logger.info(
                "%s: resuming at byte %d (%d parts stored, %d entries kept)",
                key, resumed.size, len(resumed.parts), len(kept),
            )  # fmt: skip
            chunks = _skipping(chunks, resumed.size - start)
        size = self.storage.upload_stream(key, chunks, Checkpoint(saved, resumed))
        if resumed is not None and digest:
            for chunk in self.storage.iter_object(key):  # (the first bytes were sent by another run)
                sha.update(chunk)
        sha256 = sha.hexdigest() if digest else ""
        self.state.save({f"done:{n}": {"size": size, "sha256": sha256}}, drop=(f"upload:{n}",))
        return size, sha256

    def _resumable(self, n: int, key: str, sources: list[Source]) -> tuple[list[Written], OpenUpload | None]:
        """The entries to keep and the upload to continue; none when there is nothing to
        continue (no upload saved, or S3 no longer has it as saved)."""
        raw = self.known.get(f"upload:{n}")
        if raw is None:
            return [], None
        saved = json.loads(raw)
        listed = self.storage.listed_parts(key, saved["id"])
        parts = [(number, etag) for number, etag in saved["parts"]]
        if listed is None or any(listed.get(number, ("",))[0] != etag for number, etag in parts):
            logger.info("%s: the upload saved is gone; the zip starts afresh", key)
            return [], None
        kept: list[Written] = []
        offset = 0
        for index, source in enumerate(sources):
            found = self.known.get(f"entry:{n}:{index}")
            if found is None:
                break
            file_id, size, crc, at, sha256 = json.loads(found)
            entry = Entry(f"{file_id}.zip", size, crc, at)
            if (file_id, size, at) != (source.file_id, source.size, offset) or at + entry.length > saved["size"]:
                break
            kept.append(Written(file_id, entry, sha256))
            offset += entry.length
        return kept, OpenUpload(saved["id"], parts, saved["size"])


def _digested(chunks: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _skipping(chunks: Iterable[bytes], count: int) -> Iterator[bytes]:
    """``chunks`` without their first ``count`` bytes (already stored by an earlier run)."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:] if count else chunk
        count = 0
