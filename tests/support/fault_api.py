"""A WSGI entry point for the fault tests: the project's app, plus a crash.

``gunicorn tests.support.fault_api:app`` with ``TEST_EXIT_BEFORE_PUBLISH=1`` exits on the spot
(``os._exit``, as an OOM kill or a gunicorn timeout would) after initiate has written a
job's record and before it publishes the job's message (a broker apart from the job
store's Redis). The hook lives here, in the test suite, so no production process can be
made to crash by a setting.
"""

from __future__ import annotations

import logging
import os

from delineate.broker import queue as task_queue
from delineate.wsgi import app

__all__ = ["app"]

logger = logging.getLogger(__name__)


def _exit_before_publish(job_id: str) -> None:
    logger.critical("job %s: TEST_EXIT_BEFORE_PUBLISH; exiting before its message is sent", job_id)
    os._exit(70)


if os.environ.get("TEST_EXIT_BEFORE_PUBLISH"):
    task_queue.BEFORE_SEND_HOOKS.append(_exit_before_publish)
