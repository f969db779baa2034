"""Task wrappers: take a job id, get the clients, call ``DownloadRun``, decide retries."""

from __future__ import annotations

import logging
import os
import socket
import uuid

from celery import Task, current_app, shared_task

from delineate.broker.app import services_of
from delineate.broker.queue import DELIVER_WEBHOOK, PREPARE_DOWNLOAD, SWEEP_TASK
from delineate.errors import JobFailed, StorageError
from delineate.jobs import webhooks
from delineate.jobs.retry import TRANSIENT_ERRORS, backoff_seconds
from delineate.jobs.run import DownloadRun
from delineate.jobs.sweeper import sweeper_for

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name=PREPARE_DOWNLOAD,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the limit is MAX_RETRIES, enforced below with a clear message
    throws=(JobFailed,),  # an expected end: logged at INFO, no traceback, not sent to Sentry
)
def prepare_download(self: Task, job_id: str) -> None:
    """Run the job; retry transient errors with backoff.

    :raise JobFailed: this run ended the job ``failed`` (no file available, a permanent
        storage error, too many retries or redeliveries), with the job's error: a FAILURE
        in Celery, so Flower's "Failed" counts the runs that
        ``delineate_jobs_total{status="failed"}`` counts. The message is acknowledged
        (``acks_late`` acks failures), so the job never runs again. A job the sweeper
        fails (past JOB_DEADLINE_SECONDS) is not a run: Flower never counts it.
    """
    svc = services_of(current_app)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    run = DownloadRun(job_id, svc.store, svc.storage, svc.settings, holder=holder)
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        run.run(redelivered=redelivered)
    except TRANSIENT_ERRORS as exc:
        retries = self.request.retries
        if retries < svc.settings.max_retries:
            countdown = backoff_seconds(retries, svc.settings.retry_backoff_base_seconds)
            logger.warning("job %s: transient error (%s); retry %d in %.1f s", job_id, exc, retries + 1, countdown)
            raise self.retry(exc=exc, countdown=countdown) from None
        run.fail(f"Gave up after {retries + 1} attempts; last error: {exc}")
    except StorageError as exc:  # permanent: retrying cannot help
        run.fail(f"Storage error: {exc.message}")
    if run.failure is not None:
        raise JobFailed(run.failure)


@shared_task(name=DELIVER_WEBHOOK, acks_late=True, ignore_result=True)
def deliver_webhook(job_id: str, attempt: int | None = None, event: str | None = None) -> None:
    """Make webhook delivery attempt ``attempt`` for a terminal job (see ``webhooks``);
    ``event`` ``"revoked"``: the revoked job's delivery (``webhooks.send_revoked``).

    No Celery retries: the next attempt is scheduled in Redis and sent by the sweeper, so
    it survives worker restarts. acks_late: a worker that dies mid-delivery leaves the
    message for another, so a receiver may see a delivery twice (it should treat jobId +
    status as idempotent); a message for an attempt already made does nothing. Signed
    with, and sent only to the hosts of, the job owner's tenant as it is now.
    """
    svc = services_of(current_app)
    webhooks.deliver(svc.store, svc.settings, svc.tenants.current, job_id, attempt, event)


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> None:
    """One sweep (``delineate/jobs/sweeper.py``); beat sends this every SWEEP_INTERVAL_SECONDS."""
    sweeper_for(current_app._get_current_object()).sweep()  # type: ignore[attr-defined]
