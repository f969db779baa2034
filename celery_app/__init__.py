"""The Celery side: task wrappers, the signal handlers that mirror state into the job
store, the sweeper, and the worker's entry point (``celery -A celery_app.worker``).

The Celery app itself is built by :func:`delineate.celery_init.init_celery`, and the
task and queue names live in :mod:`delineate.task_queue`: this package uses
``delineate``, never the reverse.
"""

from delineate.celery_init import RESULT_EXPIRES_SECONDS, celery_config, init_celery  # compat: removed in E
from delineate.task_queue import SWEEP_QUEUE, SWEEP_TASK  # compat: removed in E

# compat: removed in E (delineate/dev/devstack.py and tests/test_http_stream.py import from here)
__all__ = ["RESULT_EXPIRES_SECONDS", "SWEEP_QUEUE", "SWEEP_TASK", "celery_config", "init_celery"]
