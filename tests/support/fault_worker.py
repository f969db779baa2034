"""A Celery worker entry point for the fault tests: the project's worker, plus a crash.

``celery -A tests.support.fault_worker worker`` with ``TEST_CRASH_FILE_ID=N`` exits on the spot
(``os._exit``, as a segfault or an OOM kill would) when a job reaches file ``N``. The hook
lives here, in the test suite, so no production process can be made to crash by a setting.
"""

from __future__ import annotations

import logging
import os

from celery_app.worker import celery
from delineate.jobs import run as jobs

__all__ = ["celery"]

logger = logging.getLogger(__name__)

CRASH_FILE_ID = int(os.environ.get("TEST_CRASH_FILE_ID") or 0)


def _crash_at(job_id: str, file_id: int) -> None:
    if file_id == CRASH_FILE_ID:
        logger.critical("job %s: TEST_CRASH_FILE_ID %d reached; exiting", job_id, file_id)
        os._exit(70)


if CRASH_FILE_ID:
    jobs.BEFORE_FILE_HOOKS.append(_crash_at)
