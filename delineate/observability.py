"""Wiring for entry points: tracing, Sentry and worker metrics, once per process.

``delineate.wsgi`` (each gunicorn worker imports it after the fork) calls
:func:`setup_process` with ``delineate-api``; ``celery_app.worker`` calls
:func:`connect_worker`, which does the same with ``delineate-worker`` from Celery's
``worker_init`` signal: with the threads pool there is no child process, so
``worker_process_init`` never fires; and Flower, which imports the same module, never
sends ``worker_init``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from delineate.config import Settings
from delineate.logs import register_secrets
from delineate.sentry import setup_sentry
from delineate.telemetry import WORKER_SERVICE, setup_tracing

logger = logging.getLogger(__name__)


def setup_process(settings: Settings, service_name: str) -> None:
    register_secrets(settings.secret_values())  # never in a log line of this process
    setup_tracing(settings, service_name)
    setup_sentry(settings, service_name)


def connect_worker(celery: Celery) -> None:
    """Set up tracing, Sentry and the worker metrics when this process becomes a Celery worker."""
    from celery.signals import worker_init

    flask_app = celery.flask_app  # type: ignore[attr-defined]

    @worker_init.connect(weak=False)
    def _on_worker_init(**_: Any) -> None:
        from delineate.metrics import connect_worker_signals

        settings: Settings = flask_app.extensions["delineate"].settings
        setup_process(settings, WORKER_SERVICE)
        connect_worker_signals(lambda: flask_app.extensions["delineate"])
