"""Entry point for ``celery -A celery_app.worker worker``: builds the app at import.

Importing the task and signal modules here registers the tasks and connects the state
mirrors, for every command run with ``-A celery_app.worker`` (worker, beat, Flower)
and every entry point built on this one (``tests/support/fault_worker.py``).
"""

import celery_app.signals
import celery_app.tasks  # registers the tasks
from delineate.boot import worker_or_exit
from delineate.broker.heartbeat import add_heartbeat

celery = worker_or_exit()
celery_app.signals.connect_worker(celery)  # tracing, Sentry and metrics start at worker_init, in the worker only
add_heartbeat(celery)  # liveness: the consumer's loop touches WORKER_HEARTBEAT_FILE
