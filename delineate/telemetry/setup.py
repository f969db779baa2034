"""Wiring for entry points: tracing, Sentry and secret scrubbing, once per process.

``delineate.wsgi`` (each gunicorn worker imports it after the fork) calls
:func:`setup_process` with ``delineate-api``; ``celery_app.signals.connect_worker``
calls it with ``delineate-worker`` from Celery's ``worker_init`` signal.
"""

from __future__ import annotations

import logging

from delineate.config import Settings
from delineate.telemetry.logs import register_secrets
from delineate.telemetry.sentry import setup_sentry
from delineate.telemetry.tracing import setup_tracing

logger = logging.getLogger(__name__)


def setup_process(settings: Settings, service_name: str) -> None:
    register_secrets(settings.secret_values())  # never in a log line of this process
    setup_tracing(settings, service_name)
    setup_sentry(settings, service_name)
