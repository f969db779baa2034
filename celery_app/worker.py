"""Entry point for ``celery -A celery_app.worker worker``: builds the app at import."""

from delineate.cli import app_or_exit
from delineate.observability import connect_worker

celery = app_or_exit().extensions["celery"]
connect_worker(celery)  # tracing, Sentry and metrics start at worker_init, in the worker only
