"""The sweeper: every SWEEP_INTERVAL_SECONDS it finishes what a crash left unfinished.

Celery beat sends ``delineate.sweep`` to its own queue (``SWEEP_QUEUE``), served by the
``sweeper`` process (``celery worker --beat -Q delineate.sweep``), so a sweep never waits
behind downloads. A Redis lock keeps two sweeps from overlapping, so a second beat
would only waste messages. Each sweep:

1. **Re-drives lost jobs.** Candidates are the jobs of the ``sweep:live`` index (written
   by the job scripts) not written for two intervals and holding no lease. For those
   the broker is read once: a job whose message waits in the queue, or is held by a
   worker (unacknowledged) for a retry countdown or since a moment ago, is left alone,
   so a long queue is never multiplied. A job whose message is nowhere (never published,
   a retry whose republish failed) gets a new one; a job whose message sits
   unacknowledged with no live runner (its worker died) gets that message back in the
   queue at once instead of after the visibility timeout. Either only when the job was
   already suspect at the previous sweep, since a message is briefly in neither place
   while a worker takes it. A job older than JOB_DEADLINE_SECONDS fails with a message
   saying so.
2. **Drives webhooks**: each due delivery (``sweep:webhooks``) is claimed and sent,
   unless a delivery message for it still waits in the queue.
3. **Deletes the bundles of expired jobs** (``sweep:expiry``) and aborts multipart
   uploads left incomplete for MULTIPART_ABORT_AFTER_SECONDS. A bundle other jobs reused
   stays while any of them is completed, unrevoked and unexpired (``store/bundles.py``).
4. **Deletes the bundles of revoked jobs** that their revoking request did not
   (``sweep:revoked``: it died after the revocation's write, or S3 did not answer it), the
   same way: a revoked job stops using its bundle, which goes once no job uses it.

Costs per sweep: one index read, one pipelined read of the candidates, and, only when
some candidate has no lease, one read of the broker's queue and unacked hash (linear in
their length).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

import orjson
import redis
from celery import Celery
from kombu.exceptions import OperationalError

from delineate.broker.app import services_of
from delineate.broker.queue import DELIVER_WEBHOOK, PREPARE_DOWNLOAD, send_task
from delineate.broker.queues import RESTORE_SCRIPT, UNACKED_INDEX, UNACKED_LIST, BrokerView, Held, read_broker
from delineate.config import Settings
from delineate.config.tenants import TenantsHolder
from delineate.errors import StorageError
from delineate.jobs.parts import delete_parts
from delineate.models import JobState, Phase
from delineate.redis_io.clients import redis_client
from delineate.storage import Storage, bundle_key
from delineate.store import JobGone, JobStore
from delineate.store.dispatch import share_workers
from delineate.store.keys import SUSPECTS_KEY, SWEEP_LOCK_KEY
from delineate.store.parts_index import PartsIndex

logger = logging.getLogger(__name__)

BATCH = 10_000
"""Most jobs looked at per index per sweep (the rest wait for the next sweep)."""

STALE_INTERVALS = 2
"""A live job not written for this many sweep intervals is looked at."""


@dataclass
class SweepReport:
    republished: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    deadline_failed: list[str] = field(default_factory=list)
    webhooks_sent: int = 0
    granted: int = 0
    expired_cleaned: int = 0
    revoked_cleaned: int = 0
    uploads_aborted: int = 0
    skipped: bool = False


class Sweeper:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        storage: Storage,
        broker: redis.Redis,
        celery: Celery,
        tenants: TenantsHolder | None = None,
    ) -> None:
        self.settings = settings
        self.tenants = tenants or TenantsHolder(settings)
        self.store = store
        self.storage = storage
        self.broker = broker
        self.celery = celery
        self.interval = settings.sweep_interval_seconds
        self._restore = broker.register_script(RESTORE_SCRIPT)
        self._view: BrokerView | None = None

    def broker_view(self) -> BrokerView:
        """The broker read at most once per sweep (it is linear in the queue's length)."""
        if self._view is None:
            self._view = read_broker(self.broker)
        return self._view

    def sweep(self) -> SweepReport:
        """One sweep (skipped when another is running). Each part survives the others' errors."""
        report = SweepReport()
        token = uuid.uuid4().hex
        redis_ = self.store.redis
        if not redis_.set(SWEEP_LOCK_KEY, token, nx=True, ex=max(self.interval * 4, 30)):
            report.skipped = True
            return report
        self._view = None
        try:
            for part in (self.share_slots, self.redrive, self.drive_webhooks, self.delete_expired, self.delete_revoked):
                try:
                    part(report)
                except (redis.RedisError, StorageError, OperationalError) as exc:
                    logger.warning("sweep: %s failed: %s", part.__name__, exc)
                except Exception:  # a bug in one part must not starve the others
                    logger.exception("sweep: %s failed", part.__name__)
        finally:
            try:
                if redis_.get(SWEEP_LOCK_KEY) == token:
                    redis_.delete(SWEEP_LOCK_KEY)
            except redis.RedisError:
                pass  # it expires
        if report.republished or report.restored or report.deadline_failed:
            logger.warning(
                "sweep: re-drove %d jobs (new message), restored %d held by dead workers, failed %d past deadline",
                len(report.republished), len(report.restored), len(report.deadline_failed),
            )  # fmt: skip
        return report

    # -- 0. the fair share ---------------------------------------------------------------

    def share_slots(self, report: SweepReport) -> None:
        """Restate the tenants' weights and caps, free the slots of jobs that ended without
        saying so, and grant what is free (a grant lost with a crashed writer comes here)."""
        share_workers(self.store, self.tenants.current)
        report.granted = len(self.store.dispatch(repair=True))

    # -- 1. jobs whose message was lost ---------------------------------------------------

    def redrive(self, report: SweepReport) -> None:
        now = time.time()
        ids = self.store.stale_live(now - STALE_INTERVALS * self.interval, BATCH)
        if not ids:
            return
        gone: list[str] = []
        candidates: list[str] = []
        waiting: list[str] = []  # their message waits in the queue: moved back in the index
        deadline_ms = (now - self.settings.job_deadline_seconds) * 1000
        for job_id, (status, created_ms, leased, slotless) in zip(ids, self.store.sweep_states(ids), strict=True):
            if status is None or JobState(status).terminal:
                gone.append(job_id)
            elif created_ms is not None and created_ms < deadline_ms:
                self._fail_past_deadline(job_id, report)
            elif slotless:
                waiting.append(job_id)  # it waits for a worker slot (the fair share): no message yet
            elif not leased:
                candidates.append(job_id)
        self.store.forget_live(gone)
        marks: dict[str, str] = self.store.redis.hgetall(SUSPECTS_KEY) if candidates else {}  # type: ignore[assignment]
        # Suspect since an earlier sweep (at least half an interval ago): act now.
        ripe = {j for j, at in marks.items() if float(at) <= now - self.interval / 2}
        suspects_now: set[str] = set()
        if candidates:
            view = self.broker_view()
            fresh_after = now - self.settings.job_lease_seconds - self.interval
            for job_id in candidates:
                if job_id in view.queued:
                    waiting.append(job_id)
                    continue
                held = view.held.get(job_id)
                if held is not None and ((held.eta or 0) > now - self.interval or held.taken_at > fresh_after):
                    continue  # a retry countdown, or just taken: its worker takes the lease soon
                if job_id not in ripe:
                    suspects_now.add(job_id)
                elif held is not None:
                    self._put_back(job_id, held, report)
                else:
                    self._republish(job_id, report)
        stale_marks = set(marks) - suspects_now
        pipe = self.store.redis.pipeline(transaction=False)
        if stale_marks:
            pipe.hdel(SUSPECTS_KEY, *stale_marks)
        new_marks = {j: now for j in suspects_now if j not in marks}
        if new_marks:
            pipe.hset(SUSPECTS_KEY, mapping=new_marks)  # type: ignore[arg-type]
        pipe.execute()
        # Past BATCH stale jobs, the same oldest BATCH (a long queue) would be read at every
        # sweep and a lost job behind them never looked at; a queued job is checked again
        # two intervals on, as if just written. Leased and held jobs keep their place.
        self.store.seen_alive(waiting, now)

    def _fail_past_deadline(self, job_id: str, report: SweepReport) -> None:
        hours = self.settings.job_deadline_seconds / 3600
        try:
            self.store.update(
                job_id,
                status=JobState.FAILED,
                phase=Phase.DONE,
                error=f"Job abandoned: not finished within JOB_DEADLINE_SECONDS "
                f"({self.settings.job_deadline_seconds} s, {hours:.3g} h) of its creation",
            )
            report.deadline_failed.append(job_id)
        except JobGone:
            pass

    def _republish(self, job_id: str, report: SweepReport) -> None:
        send_task(self.celery, PREPARE_DOWNLOAD, [job_id], task_id=job_id)
        report.republished.append(job_id)
        logger.warning("sweep: job %s had no message (lost or never published); sent a new one", job_id)

    def _put_back(self, job_id: str, held: Held, report: SweepReport) -> None:
        payload = held.payload
        payload.setdefault("headers", {})["redelivered"] = True  # as kombu's restore marks it
        payload.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
        if self._restore(keys=[UNACKED_LIST, UNACKED_INDEX, held.queue], args=[held.tag, orjson.dumps(payload)]):
            report.restored.append(job_id)
            logger.warning("sweep: job %s was held by a worker that is gone; back in the queue", job_id)

    # -- 2. webhooks ---------------------------------------------------------------------------

    def drive_webhooks(self, report: SweepReport) -> None:
        now = time.time()
        due = self.store.due_webhooks(now, BATCH)
        waiting = self.broker_view().webhooks_queued if due else set()
        for job_id in due:
            if self.store.claim_webhook(job_id, now, now + self.store.webhook_claim_seconds):
                if job_id in waiting:
                    continue  # its message still waits in a long queue: do not add another
                job = self.store.get(job_id)
                if job is None:  # expired before its delivery ended: the script drops its entry
                    self.store.set_callback(job_id, {}, None)
                    continue
                attempt = (job.callback or {}).get("attempts", 0) + 1
                send_task(self.celery, DELIVER_WEBHOOK, [job_id, attempt])
                report.webhooks_sent += 1

    # -- 3. storage -------------------------------------------------------------------------------

    def delete_expired(self, report: SweepReport) -> None:
        now = time.time()
        ids = self.store.expired(now, 1000)
        if ids:
            kept = set(self.store.release_expired(ids))  # shared bundles still in use: looked at later
            ids = [j for j in ids if j not in kept]
            self.storage.delete_many([bundle_key(j) for j in ids])
            delete_parts(self.storage, PartsIndex(self.store.redis), ids, forget=True)  # (a bundle in parts)
            self.store.forget_expired(ids)
            report.expired_cleaned += len(ids)
        report.uploads_aborted += self.storage.abort_stale_uploads(
            "bundles/", older_than_seconds=self.settings.multipart_abort_after_seconds
        )

    def delete_revoked(self, report: SweepReport) -> None:
        """Only ``bundles/{jobId}.zip`` or its parts: a single-file job's result is a source, never deleted."""
        ids = self.store.revoked_bundles(1000)  # DeleteObjects takes at most 1000 keys
        if ids:
            builders = self.store.release_revoked(ids)  # a shared bundle goes with its last user
            self.storage.delete_many([bundle_key(j) for j in builders])
            delete_parts(self.storage, PartsIndex(self.store.redis), builders, forget=False)  # (forgotten at expiry)
            self.store.forget_revoked(ids)
            report.revoked_cleaned += len(ids)


_per_process: dict[int, Sweeper] = {}


def sweeper_for(celery: Celery) -> Sweeper:
    """This process's sweeper for ``celery``'s Flask app (built on first use)."""
    sweeper = _per_process.get(id(celery))
    if sweeper is None:
        svc = services_of(celery)
        broker = redis_client(
            svc.settings,
            svc.settings.celery_broker_url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=10,
        )
        sweeper = _per_process[id(celery)] = Sweeper(svc.settings, svc.store, svc.storage, broker, celery, svc.tenants)
    return sweeper
