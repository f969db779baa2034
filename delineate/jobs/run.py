"""What a download job does, independent of Celery.

``DownloadRun`` checks each file, waits out the simulated origin delay, builds the
result and writes progress as it goes. The Celery task (``celery_app/tasks.py``) only
decides about retries. Safe to run twice: the result key is derived from the job id,
a finished job is left alone, and a lease keeps two deliveries of one job from
running side by side.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import redis

from delineate.config import Settings
from delineate.errors import SourceUnavailable, StorageError
from delineate.jobs.bundle import EPOCH, Source, zip_time
from delineate.jobs.parts import write_bundle
from delineate.jobs.resume import open_resume
from delineate.jobs.reuse import Reuse, check_all
from delineate.jobs.slots import PREFETCH_BYTES, bundle_gate
from delineate.jobs.throttle import PublishThrottle
from delineate.jobs.zipwriter import DateTime
from delineate.models import Job, JobState, Phase
from delineate.storage import Storage, source_key
from delineate.store import JobGone, JobStore, LeaseLost
from delineate.store.parts_index import PartsIndex
from delineate.store.resume_state import ResumeState

logger = logging.getLogger(__name__)

BEFORE_FILE_HOOKS: list[Callable[[str, int], None]] = []
"""Test seam: called with (job id, file id) before each file is checked. Nothing in the
project adds to it; the fault tests' worker entry point (``tests/support/fault_worker.py``) does."""

NO_FILES_ERROR = "No files available for download"

WAIT_SLICE_SECONDS = 1.0
"""Longest sleep between lease renewals and cancellation checks, in seconds."""

PROGRESS_WRITE_INTERVAL_SECONDS = 0.25
"""Least time between two progress writes within a phase (files checked, bytes bundled),
in seconds; phase changes are always written."""


class Stopped(Exception):
    """The job reached a terminal state elsewhere (cancelled) or the lease was lost."""


@dataclass
class DownloadRun:
    job_id: str
    store: JobStore
    storage: Storage
    settings: Settings
    holder: str
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    throttle: PublishThrottle = field(default_factory=PublishThrottle)
    _last_write_at: float = field(default=float("-inf"), init=False)
    _last_renew_at: float = field(default=float("-inf"), init=False)
    _released: bool = field(default=False, init=False)
    _holds_slot: bool = field(default=False, init=False)
    _stamp: DateTime = field(default=EPOCH, init=False)
    #: The error this run failed the job with; None while its own write has not made
    #: the job ``failed`` (refused writes, a job failed elsewhere, do not count).
    failure: str | None = field(default=None, init=False)

    # -- entry ----------------------------------------------------------------------

    def run(self, redelivered: bool = False) -> None:
        job = self._take_lease()
        if job is None:
            return
        try:
            self._run_leased(job, redelivered)
        except Stopped as exc:
            logger.info("job %s stopped: %s", self.job_id, exc)
        except JobGone:
            logger.warning("job %s expired while running", self.job_id)
        finally:
            self._release_quietly()

    def _release_quietly(self) -> None:
        if self._released:
            return
        try:
            self.store.release_lease(self.job_id, self.holder)
        except redis.RedisError:
            pass  # the lease expires on its own

    def _take_lease(self) -> Job | None:
        """Become the only runner of the job; wait while another live worker runs it.

        Returns the fresh record, or None when there is nothing to do (no record, or the
        job is terminal, also after waiting). The lease and the read share a round trip.
        """
        lease = self.settings.job_lease_seconds
        while True:
            ours, job = self.store.lease_and_get(self.job_id, self.holder, lease)
            if job is None:
                logger.warning("job %s has no record (expired?); nothing to do", self.job_id)
                self._release_quietly()
                return None
            if job.status.terminal:
                logger.info("job %s is already %s; nothing to do", self.job_id, job.status)
                self._release_quietly()
                return None
            if ours:
                return job
            logger.info("job %s is running elsewhere; waiting for its lease", self.job_id)
            self.sleep(min(WAIT_SLICE_SECONDS * 2, lease))

    # -- the work ---------------------------------------------------------------------

    def _run_leased(self, job: Job, redelivered: bool) -> None:
        fields: dict[str, Any] = {}
        if redelivered and job.status is JobState.PROCESSING:
            # The previous runner died mid-job (its lease expired): count it.
            job.redeliveries += 1
            fields["redeliveries"] = job.redeliveries
            if job.redeliveries > self.settings.max_redeliveries:
                self.fail(
                    f"Job abandoned: its worker died {job.redeliveries} times while running "
                    f"it (limit {self.settings.max_redeliveries} redeliveries)"
                )
                return
        delay_ms = job.delay_ms if job.delay_ms is not None else self._draw_delay_ms()
        job = self._write(
            status=JobState.PROCESSING,
            phase=Phase.CHECKING,
            attempts=job.attempts + 1,
            delayMs=delay_ms,
            error=None,
            **fields,
        )
        logger.info(
            "job %s started (attempt %d, %d files, delay %d ms)",
            self.job_id,
            job.attempts,
            job.total_files,
            delay_ms,
        )
        reuse = Reuse.look_up(self.store, self.settings, job)
        heads = reuse is not None and reuse.record is not None  # a bundle may be reused: read no byte
        prefetch = delay_ms == 0 and job.total_files > 1 and not heads
        with self._bundle_slot(prefetch):  # (files kept in memory count against the gate)
            if heads and delay_ms == 0:
                available, missing = self._check_all(job)
            else:
                available, missing = self._check_files(job, delay_ms, PREFETCH_BYTES if prefetch else 0)
            counts: dict[str, Any] = {
                "completedFiles": job.total_files,
                "availableFiles": len(available),
                "missingFileIds": missing,
            }
            if not available:
                self._write(status=JobState.FAILED, phase=Phase.DONE, error=NO_FILES_ERROR, **counts)
            elif len(available) == 1:
                only = available[0]
                self._write(
                    status=JobState.COMPLETED,
                    phase=Phase.DONE,
                    progress=100,
                    resultKey=source_key(only.file_id),
                    size=only.size,
                    bytesDone=only.size,
                    bytesTotal=only.size,
                    **counts,
                )
            elif reuse is None or not reuse.complete(self.job_id, self._write, available, missing, counts):
                self._stamp = zip_time(job.created_at)  # (every run of the job stamps the same)
                self._bundle(available, missing, counts, reuse)
        logger.info("job %s finished", self.job_id)

    def _draw_delay_ms(self) -> int:
        s = self.settings
        if not s.download_delay_enabled:
            return 0
        return self.rng.randint(s.download_delay_min_ms, s.download_delay_max_ms)

    def _check_files(self, job: Job, delay_ms: int, prefetch_bytes: int = 0) -> tuple[list[Source], list[int]]:
        """Check each file (HEAD; or GET, keeping its bytes, while ``prefetch_bytes`` last)."""
        per_file = delay_ms / 1000 / max(job.total_files, 1)
        resume_from = job.completed_files  # files a previous attempt already reported
        available: list[Source] = []
        missing: list[int] = []
        budget = prefetch_bytes
        for index, file_id in enumerate(job.file_ids):
            for hook in BEFORE_FILE_HOOKS:  # empty unless a test's worker entry point added one
                hook(self.job_id, file_id)
            if index >= resume_from:
                self._wait(per_file)
            source, budget = self._check(file_id, budget)
            if source is None:
                missing.append(file_id)
            else:
                available.append(source)
            if index >= resume_from and index + 1 < job.total_files and self._progress_due():
                # (the last file's count goes with the result write that follows at once)
                done = index + 1
                self._write(
                    completedFiles=done,
                    availableFiles=len(available),
                    missingFileIds=missing,
                    progress=90 * done // job.total_files,
                )
        return available, missing

    def _check(self, file_id: int, budget: int) -> tuple[Source | None, int]:
        """The file as a source (None when missing), and what is left of the prefetch budget."""
        key = source_key(file_id)
        if budget <= 0:
            info = self.storage.head(key)
            return (None if info is None else Source(file_id, info.size, self._opener(key, info.etag), info.etag)), 0
        found = self.storage.read_small(key, budget)
        if found is None:
            return None, budget
        info, held = found
        # A file larger than the budget is streamed later, and the files after it are HEADs.
        source = Source(file_id, info.size, self._opener(key, info.etag, held), info.etag)
        return source, (0 if held is None else budget - info.size)

    def _check_all(self, job: Job) -> tuple[list[Source], list[int]]:
        """Every file checked by HEAD at once (no delay to spread: a job that may reuse a bundle)."""
        for file_id in job.file_ids:
            for hook in BEFORE_FILE_HOOKS:
                hook(self.job_id, file_id)
        return check_all(self.storage, job.file_ids, self._opener)

    def _opener(self, key: str, etag: str = "", held: list[bytes] | None = None) -> Callable[[], Iterable[bytes]]:
        """What streams a source when the zip reaches it: the bytes already read, or a GET
        (refused when the object is no longer the version checked)."""
        if held is not None:
            return lambda: held
        return lambda: self.storage.iter_object(key, etag=etag)

    def _bundle(self, sources: list[Source], missing: list[int], counts: dict[str, Any], reuse: Reuse | None) -> None:
        total = sum(s.size for s in sources)
        self._write(phase=Phase.BUNDLING, progress=90, bytesDone=0, bytesTotal=total, **counts)
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            if done >= total or self._progress_due():
                phase = Phase.UPLOADING if done >= total else Phase.BUNDLING
                progress = 90 + 9 * done // max(total, 1)
                self._write(phase=phase, bytesDone=done, progress=progress)  # (renews the lease)

        limit = self.settings.bundle_part_bytes  # past it, parts (delineate/jobs/parts.py)
        state = ResumeState(self.store.redis, self.job_id, self.settings.job_ttl_seconds)
        resume = open_resume(state, self.storage, sources, missing, limit, self._stamp)
        try:
            with self._bundle_slot():
                index, at = PartsIndex(self.store.redis), self._stamp
                result = write_bundle(self.storage, index, self.job_id, sources, missing, limit, on_bytes, at, resume)
        except (ValueError, FileNotFoundError) as exc:
            # A source changed or vanished after its check: a retry checks again.
            raise SourceUnavailable(f"a source changed while bundling: {exc}") from None
        try:
            self._write(
                status=JobState.COMPLETED,
                phase=Phase.DONE,
                progress=100,
                bytesDone=total,
                **result.fields(),
            )
        except Stopped:  # cancelled in the last instant: leave no orphan bundle
            for key in result.object_keys():
                self._discard(key)
            raise
        if resume is not None:  # (dying before this: the key expires with the job)
            self._forget_resume()
        if reuse is not None:
            reuse.register(self.job_id, sources, missing, result.fields())

    # -- helpers ------------------------------------------------------------------------

    @contextmanager
    def _bundle_slot(self, wanted: bool = True) -> Iterator[None]:
        """Hold one of the process's bundle slots (bounded memory), waiting for one while
        renewing the lease; nothing when not ``wanted`` or already held."""
        if not wanted or self._holds_slot:
            yield
            return
        gate = bundle_gate(self.settings)
        # Dozens of a worker's threads may wait here at once: each renews its lease a few
        # times a lease, not every second (a cancel is noticed by the first write after).
        renew_every = max(WAIT_SLICE_SECONDS, self.settings.job_lease_seconds / 3)
        while not gate.acquire(timeout=renew_every):
            self._renew_lease()  # (keeps the lease, and notices a cancel while waiting)
        self._holds_slot = True
        try:
            yield
        finally:
            self._holds_slot = False
            gate.release()

    def _write(self, claim: str | None = None, **fields: Any) -> Job:
        """Write progress and renew the lease in one step (publishing, when anyone
        listens, at most every PUBLISH_INTERVAL_SECONDS); stop when the job went terminal
        elsewhere (cancelled) or another runner has the lease. ``claim``: see
        :meth:`JobStore.write` (:raise BundleGone:)."""
        try:
            job, written, listeners, _ = self.store.write(
                self.job_id, lease=(self.holder, self.settings.job_lease_seconds), claim=claim, **fields
            )
        except LeaseLost:
            raise Stopped("lease lost to another worker") from None
        self._last_write_at = time.monotonic()
        if written and self.throttle.should_publish(job) and listeners:
            self.store.publish(job)
        if job.status.terminal:
            self._released = written  # the terminal write released the lease
        if written and job.status is JobState.FAILED:
            self.failure = job.error or ""
        wanted = fields.get("status")
        if job.status.terminal and job.status != wanted:
            raise Stopped(f"job is {job.status.value}")
        return job

    def _progress_due(self) -> bool:
        """Whether a progress write (not a phase change) is due: at most one every
        PROGRESS_WRITE_INTERVAL_SECONDS, so a job whose files check in a millisecond
        makes one write, not one per file."""
        return time.monotonic() - self._last_write_at >= PROGRESS_WRITE_INTERVAL_SECONDS

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in slices, renewing the lease and noticing a cancel."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sleep(min(left, WAIT_SLICE_SECONDS))
            # A 10,000-file job waits a millisecond per file: renew (reading the whole record)
            # once a slice, not after every file; a cancel is still noticed within one.
            if time.monotonic() - max(self._last_renew_at, self._last_write_at) >= WAIT_SLICE_SECONDS:
                self._renew_lease()

    def _renew_lease(self) -> None:
        ours, job = self.store.lease_and_get(self.job_id, self.holder, self.settings.job_lease_seconds)
        self._last_renew_at = time.monotonic()
        if not ours:
            raise Stopped("lease lost to another worker")
        if job is None:
            raise JobGone(self.job_id)
        if job.status.terminal:
            raise Stopped(f"job is {job.status.value}")

    def _forget_resume(self) -> None:
        with suppress(redis.RedisError):  # the job is over (a key left expires with the job)
            ResumeState(self.store.redis, self.job_id, self.settings.job_ttl_seconds).delete()

    def _discard(self, key: str) -> None:
        try:
            self.storage.delete(key)
        except StorageError as exc:
            logger.warning("job %s: could not delete %s: %s", self.job_id, key, exc)

    def fail(self, message: str) -> None:
        """Mark the job failed (unless already terminal; ``failure`` says whether this did)."""
        try:
            job, written, listeners, _ = self.store.write(
                self.job_id, status=JobState.FAILED, phase=Phase.DONE, error=message
            )
        except JobGone:
            pass
        else:
            if written:  # (what store.update does, and whether this write failed the job)
                self.failure = message
                self._forget_resume()
                if listeners:
                    self.store.publish(job)
        logger.error("job %s failed: %s", self.job_id, message)
