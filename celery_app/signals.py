"""The worker's signal handlers: Celery's own task states mirrored into the job hash (so
polling never asks Celery), and tracing, Sentry and metrics started at ``worker_init``.

Connected when this module is imported; ``celery_app.worker`` imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_revoked,
    worker_init,
    worker_shutdown,
)

from delineate.broker.app import services_of
from delineate.broker.queue import PREPARE_DOWNLOAD
from delineate.config import Settings
from delineate.errors import JobFailed
from delineate.models import JobState, Phase
from delineate.store import JobGone
from delineate.telemetry.job_metrics import RunningJobs, record_retry
from delineate.telemetry.setup import setup_process
from delineate.telemetry.tracing import WORKER_SERVICE

logger = logging.getLogger(__name__)


@task_failure.connect
def _on_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    """A task raised something no one handled: the job must not stay 'processing'.

    Not a Retry, nor a Reject: when a retry cannot be republished (the broker is failing
    over), Celery rejects the message and reports that as a failure; the job is not
    failed, and the sweeper re-drives it once its lease is gone. Nor a JobFailed: the
    run failed the job itself, with its own reason."""
    if getattr(sender, "name", None) != PREPARE_DOWNLOAD or not task_id:
        return
    from celery.exceptions import Reject, Retry

    if isinstance(exception, (Retry, Reject, JobFailed)):
        return
    try:
        _mark(
            services_of(sender.app),
            task_id,
            JobState.FAILED,
            f"Internal error while preparing the download ({type(exception).__name__})",
        )
    except Exception:
        logger.exception("could not mirror failure of job %s", task_id)


@task_revoked.connect
def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if getattr(sender, "name", None) != PREPARE_DOWNLOAD or not task_id:
        return
    try:
        _mark(services_of(sender.app), task_id, JobState.CANCELLED, "Revoked")
    except Exception:
        logger.exception("could not mirror revocation of job %s", task_id)


def _mark(svc: Any, job_id: str, state: JobState, error: str) -> None:
    try:
        svc.store.update(job_id, status=state, phase=Phase.DONE, error=error)
    except JobGone:
        pass


def connect_worker(celery: Celery) -> None:
    """Set up tracing, Sentry and the worker metrics when this process becomes a Celery
    worker: at ``worker_init``, since with the threads pool there is no child process (so
    ``worker_process_init`` never fires), and Flower, which imports the same entry
    point, never sends it."""

    @worker_init.connect(weak=False)
    def _on_worker_init(**_: Any) -> None:
        settings: Settings = services_of(celery).settings
        setup_process(settings, WORKER_SERVICE)
        count_worker_jobs(lambda: services_of(celery))


def count_worker_jobs(get_services: Callable[[], Any]) -> RunningJobs:
    """Count jobs, retries and running jobs from this worker process's Celery signals."""
    svc = get_services()
    running = RunningJobs(svc.redis)

    def ours(sender: Any) -> bool:
        return getattr(sender, "name", None) == PREPARE_DOWNLOAD

    @task_prerun.connect(weak=False)
    def _started(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            running.change(+1)

    @task_postrun.connect(weak=False)
    def _finished(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if ours(sender) and task_id:
            running.change(-1)

    @task_retry.connect(weak=False)
    def _retried(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            try:
                record_retry(svc.redis)
            except redis.RedisError as exc:
                logger.warning("metrics: could not count a retry: %s", exc)

    @worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        running.stop()

    running.start()
    return running
