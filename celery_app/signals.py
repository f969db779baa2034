"""Mirror Celery's own task states into the job hash, so polling never asks Celery."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_failure, task_revoked

from delineate.models import JobState, Phase
from delineate.progress import JobGone
from delineate.services import services

logger = logging.getLogger(__name__)

_OURS = "delineate.prepare_download"


@task_failure.connect
def _on_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    """A task raised something no one handled: the job must not stay 'processing'."""
    if getattr(sender, "name", None) != _OURS or not task_id:
        return
    from celery.exceptions import Retry

    if isinstance(exception, Retry):
        return
    try:
        with sender.app.flask_app.app_context():
            _mark(
                task_id,
                JobState.FAILED,
                f"Internal error while preparing the download ({type(exception).__name__})",
            )
    except Exception:
        logger.exception("could not mirror failure of job %s", task_id)


@task_revoked.connect
def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if getattr(sender, "name", None) != _OURS or not task_id:
        return
    try:
        with sender.app.flask_app.app_context():
            _mark(task_id, JobState.CANCELLED, "Revoked")
    except Exception:
        logger.exception("could not mirror revocation of job %s", task_id)


def _mark(job_id: str, state: JobState, error: str) -> None:
    try:
        services().store.update(job_id, status=state, phase=Phase.DONE, error=error)
    except JobGone:
        pass
