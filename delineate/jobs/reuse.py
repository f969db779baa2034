"""Built once: a job whose ids (as a set) and sources (their ETags) equal those of a live
bundle completes at once with that bundle, for any tenant, without reading a byte.

A bundle job looks up the latest bundle registered for its id set (``reuse:{digest}``, one
read; :mod:`delineate.store.bundles`). When there is one, the job checks its files without
reading them: with no simulated delay all at once (one listing of their key range when it is
dense, else HEADs in parallel); with a delay by HEAD, the delay waited out file by file as
for any job (it stands for the origin answering those checks). When the ETags
(and which ids are missing) are those the bundle was built from, one write completes the
job with the bundle's result (``resultKey``, ``size``) and ``reusedFrom``, joining the
bundle's users in the same step; its status says ``"reused": true``. Otherwise the job
builds its own bundle as before, and registers it once completed (the latest wins).

What a reused bundle holds: the builder's ``manifest.json``, so its ``jobId`` names the job
that built it, and its entries in the order that job listed its ids (the same set). The
download's file name is still ``delineate-{jobId}.zip`` of the job asking. A source read
while bundling must still have the ETag its check saw (``Storage.iter_object``), so a
bundle holds exactly the versions its digest names. ``BUNDLE_REUSE=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

from delineate.config import Settings
from delineate.jobs.bundle import Source
from delineate.models import Job, JobState, Phase
from delineate.storage import ObjectInfo, Storage, source_key
from delineate.store import JobStore
from delineate.store.bundles import BundleGone, BundleRecord

logger = logging.getLogger(__name__)

DIGEST_HEX = 32
"""Hex digits kept of a sha256 digest (128 bits): ids and ETags are no adversary's choice,
and each key costs Redis memory per bundle."""

HEAD_CONCURRENCY = 16
"""HEAD requests of one process in flight at once when a job checks all its files together."""

LIST_KEYS_PER_FILE = 10
"""A job's files are checked by listing their key range when it holds at most this many keys
per file (a listed key costs a small share of a HEAD), else by HEAD."""

Opener = Callable[[str, str], Callable[[], Iterable[bytes]]]
"""(key, ETag) -> what streams that source when the zip reaches it."""


def ids_digest(file_ids: Iterable[int]) -> str:
    """The id set's digest (order and duplicates do not matter)."""
    text = ",".join(str(i) for i in sorted(set(file_ids)))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_HEX]


def sources_digest(sources: list[Source], missing: list[int]) -> str | None:
    """The digest of what a bundle of these sources holds: each available id with its ETag
    and size, and the missing ids (its manifest lists them). None when a source has no ETag
    (the store sent none): such a bundle is never shared."""
    if any(not s.etag for s in sources):
        return None
    lines = sorted([f"{s.file_id} {s.etag} {s.size}" for s in sources] + [f"{i} -" for i in missing])
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:DIGEST_HEX]


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _heads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(HEAD_CONCURRENCY, thread_name_prefix="reuse-head")
        return _pool


def _listed(storage: Storage, file_ids: list[int]) -> dict[str, ObjectInfo] | None:
    """The sources of ``file_ids`` by listing their key range (None: too sparse, ask each).

    Ids of one length sort as their keys do, so the range holds about ``max - min + 1`` ids of
    that length (longer ids sharing a prefix interleave: the listing gives up past its limit)."""
    low, high = min(file_ids), max(file_ids)
    if len(str(low)) != len(str(high)) or high - low + 1 > LIST_KEYS_PER_FILE * len(file_ids):
        return None
    return storage.list_between(source_key(low), source_key(high), LIST_KEYS_PER_FILE * len(file_ids))


def check_all(storage: Storage, file_ids: list[int], opener: Opener) -> tuple[list[Source], list[int]]:
    """Check every file at once: by listing their keys when they lie close together, else
    by HEAD (this process's HEAD_CONCURRENCY at most). Returns the available ones as
    sources, in the ids' order, and the missing ids.

    :raise SourceUnavailable: the store did not answer.
    """
    listed = _listed(storage, file_ids)
    if listed is not None:
        infos = [listed.get(source_key(i)) for i in file_ids]
    else:
        infos = list(_heads().map(lambda i: storage.head(source_key(i)), file_ids))
    available: list[Source] = []
    missing: list[int] = []
    for file_id, info in zip(file_ids, infos, strict=True):
        if info is None:
            missing.append(file_id)
        else:
            available.append(Source(file_id, info.size, opener(info.key, info.etag), info.etag))
    return available, missing


@dataclass(frozen=True)
class Reuse:
    """A bundle job's view of the bundles of its id set."""

    store: JobStore
    ids: str  # ids_digest of the job's ids
    record: BundleRecord | None  # the latest bundle built for them (None: none registered)

    @classmethod
    def look_up(cls, store: JobStore, settings: Settings, job: Job) -> Reuse | None:
        """None when the job cannot share a bundle (reuse off, or fewer than two files)."""
        if not settings.bundle_reuse or job.total_files < 2:
            return None
        digest = ids_digest(job.file_ids)
        return cls(store, digest, store.bundle_record(digest))

    def matching(self, sources: list[Source], missing: list[int]) -> BundleRecord | None:
        """The registered bundle when it was built from exactly these sources."""
        if self.record is None or self.record.sources != sources_digest(sources, missing):
            return None
        return self.record

    def complete(
        self, job_id: str, write: Callable[..., Any], sources: list[Source], missing: list[int], counts: dict[str, Any]
    ) -> bool:
        """Complete the job with the live bundle built from exactly its sources, by ``write``
        (``DownloadRun._write``, given ``claim``); False when there is none (build one)."""
        record = self.matching(sources, missing)
        if record is None:
            return False
        total = sum(s.size for s in sources)
        done = {"status": JobState.COMPLETED, "phase": Phase.DONE, "progress": 100, "reusedFrom": record.builder}
        try:
            write(claim=record.builder, bytesDone=total, bytesTotal=total, **done, **record.result, **counts)
        except BundleGone:  # its last user went since the look-up
            return False
        logger.info("job %s completed with the bundle of job %s", job_id, record.builder)
        return True

    def register(self, job_id: str, sources: list[Source], missing: list[int], result: dict[str, Any]) -> None:
        """Offer the bundle ``job_id`` just completed with to later jobs of the same ids. Best
        effort: a bundle not registered is only not shared (the janitor deletes it as ever)."""
        digest = sources_digest(sources, missing)
        if digest is None:
            return
        try:
            self.store.register_bundle(self.ids, BundleRecord(digest, job_id, result))
        except redis.RedisError as exc:
            logger.warning("job %s: its bundle is not offered for reuse: %s", job_id, exc)
