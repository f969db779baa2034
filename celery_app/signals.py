"""The worker's signal handlers: Celery's own task states mirrored into the job hash (so
polling never asks Celery), tracing, Sentry and metrics started at ``worker_init``, and an
embedded beat that dies with its worker.

Connected when this module is imported; ``celery_app.worker`` imports it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from celery.signals import (
    beat_embedded_init,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_revoked,
    worker_init,
    worker_ready,
    worker_shutdown,
)

from delineate.broker.app import services_of
from delineate.broker.liveness import die_with_parent
from delineate.broker.queue import CELERY_QUEUE, PREPARE_DOWNLOAD
from delineate.config import Settings
from delineate.errors import JobFailed
from delineate.models import JobState, Phase
from delineate.store import JobGone
from delineate.telemetry.job_metrics import RunningJobs, record_retry
from delineate.telemetry.metrics import WORKER_STALE_SECONDS
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


def end_beat_with_worker(worker_pid: int) -> None:
    """The sweeper's beat is a child process of its worker (``celery worker --beat``). A
    worker killed outright (SIGKILL, OOM) cannot stop it: it would go on sending sweeps for
    ever beside the restarted sweeper's own beat. Linux ends it with its parent instead.
    (``worker_pid`` is taken before the fork: billiard's child has no public way to its parent.)"""

    @beat_embedded_init.connect(weak=False)
    def _on_beat_init(**_: Any) -> None:
        if not die_with_parent(worker_pid):
            logger.warning("beat: the worker that started it is already gone; exiting")
            os._exit(1)  # (an exception here would only be logged by the signal)


def connect_worker(celery: Celery) -> None:
    """Set up tracing, Sentry and the worker metrics when this process becomes a Celery
    worker: at ``worker_init``, since with the threads pool there is no child process (so
    ``worker_process_init`` never fires), and Flower, which imports the same entry
    point, never sends it."""

    @worker_init.connect(weak=False)
    def _on_worker_init(sender: Any = None, **_: Any) -> None:
        settings: Settings = services_of(celery).settings
        setup_process(settings, WORKER_SERVICE)
        # The pool a job worker offers the fair share (the sweeper consumes only its own queue).
        queues = getattr(sender, "app", celery).amqp.queues
        consumed = queues.consume_from if queues.consume_from is not None else queues  # no -Q: all
        slots = int(getattr(sender, "concurrency", 0) or 0) if CELERY_QUEUE in consumed else 0
        count_worker_jobs(lambda: services_of(celery), slots)
        end_beat_with_worker(os.getpid())  # (beat, when embedded, is forked after this)

    @worker_ready.connect(weak=False)
    def _on_worker_ready(**_: Any) -> None:
        reload_tenants_on_sighup(services_of(celery).tenants)


def reload_tenants_on_sighup(tenants: Any) -> None:
    """SIGHUP re-reads the tenants file in place, at once: the handler only wakes a thread
    that does it (a handler must not take the locks a reload takes). Celery's own handler,
    installed by now, would restart the whole worker, waiting out every running job first."""
    wake = threading.Event()

    def reload() -> None:
        while True:
            wake.wait()
            wake.clear()
            tenants.check(force=True)

    try:
        signal.signal(signal.SIGHUP, lambda _signum, _frame: wake.set())
    except ValueError:  # not the main thread: the file's change is still seen within seconds
        logger.warning("tenants: SIGHUP not handled in this worker; the file is re-read on change")
        return
    threading.Thread(target=reload, name="tenants-reload", daemon=True).start()


def count_worker_jobs(get_services: Callable[[], Any], slots: int = 0) -> RunningJobs:
    """Count jobs, retries and running jobs from this worker process's Celery signals; with
    ``slots``, register the pool with the fair share at every heartbeat (the entry lives
    WORKER_STALE_SECONDS: a killed worker's slots stop counting after that)."""
    svc = get_services()
    running = RunningJobs(svc.redis)
    if slots:
        worker = (running.worker_id, slots, int(WORKER_STALE_SECONDS))
        running.on_heartbeat.append(lambda: svc.store.dispatch(worker=worker))
        # an idle worker still notices a changed tenants file (its hooks write the weights)
        running.on_heartbeat.append(lambda: svc.tenants.current)

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
        if slots:  # a warm shutdown hands its slots back at once
            try:
                svc.store.dispatch(worker=(running.worker_id, 0, 0))
            except redis.RedisError as exc:
                logger.warning("could not hand the worker's slots back: %s", exc)

    running.start()
    return running
