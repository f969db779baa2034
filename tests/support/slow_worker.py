"""A Celery worker entry point for the fault tests: the project's worker, reading slowly.

``celery -A tests.support.slow_worker worker`` with ``TEST_READ_DELAY_SECONDS=S`` sleeps S
seconds before each chunk it reads from a source, so that a test can SIGKILL it in the
middle of a bundle (``tests/faults/test_resume.py``). Test code only: no setting of the
project slows a read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from celery_app.worker import celery
from delineate.storage import client

__all__ = ["celery"]

READ_DELAY_SECONDS = float(os.environ.get("TEST_READ_DELAY_SECONDS") or 0)

_iter_object = client.Storage.iter_object


def _slow_iter_object(self: client.Storage, *args: object, **kwargs: object) -> Iterator[bytes]:
    for chunk in _iter_object(self, *args, **kwargs):  # type: ignore[arg-type]
        time.sleep(READ_DELAY_SECONDS)
        yield chunk


if READ_DELAY_SECONDS:
    client.Storage.iter_object = _slow_iter_object  # type: ignore[method-assign]
