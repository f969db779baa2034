"""The Celery app, built from the same settings as the API by :func:`make_celery`.

One factory for both sides: the API builds it to publish (``create_app``), the worker
(``celery_app.worker``, through ``delineate.boot``) to consume; neither needs the other's
framework. The app carries the process's :class:`delineate.services.Services` as
``celery.delineate``, which the tasks and signal handlers use (:func:`services_of`). The
worker's entry point imports the task and signal modules, which registers them.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from delineate.broker.queue import CELERY_QUEUE, SWEEP_QUEUE, SWEEP_TASK
from delineate.broker.transport import use_kombus_own, use_shared_clients
from delineate.config import Settings
from delineate.redis_io.clients import celery_transport_options, celery_url

RESULT_EXPIRES_SECONDS = 3600
"""How long Celery's own task results stay in Redis, in seconds (our job hash lives longer)."""


def celery_config(settings: Settings) -> dict[str, Any]:
    transport = {
        # Above the longest job (120 s delay + bundling) yet short enough that a killed
        # worker's job is restored within minutes; see ARCHITECTURE.md, "Crash safety".
        "visibility_timeout": settings.visibility_timeout_seconds,
        "unacked_restore_interval": settings.unacked_restore_interval_seconds,
        "unacked_restore_throttle": 0,
    }
    sentinel = celery_transport_options(settings)
    return {
        # Through Sentinel when configured: sentinel:// URLs and the master's name.
        "broker_url": celery_url(settings, settings.celery_broker_url),
        "result_backend": celery_url(settings, settings.celery_result_backend),
        "broker_transport_options": {**transport, **sentinel},
        "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}, **sentinel},
        "broker_connection_retry_on_startup": True,
        "result_expires": RESULT_EXPIRES_SECONDS,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        "worker_hijack_root_logger": False,
        "task_track_started": True,
        "worker_send_task_events": True,
        # Celery's default, named: initiate's own message goes onto this list too.
        "task_default_queue": CELERY_QUEUE,
        # The sweeper (delineate/jobs/sweeper.py). A sweep not started within one interval is
        # dropped: the next one does the same work.
        "task_routes": {SWEEP_TASK: {"queue": SWEEP_QUEUE}},
        "beat_schedule": {
            "sweep": {
                "task": SWEEP_TASK,
                "schedule": float(settings.sweep_interval_seconds),
                "options": {"queue": SWEEP_QUEUE, "expires": float(settings.sweep_interval_seconds)},
            }
        },
    }


def _environment_follows_sentinel(settings: Settings) -> None:
    """Celery reads CELERY_BROKER_URL and CELERY_RESULT_BACKEND from the environment
    itself, ahead of its configuration (``celery.app.utils.Settings.broker_url``): with
    Sentinel those would be the plain redis:// URLs, so they are rewritten to the
    sentinel:// ones Celery is configured with."""
    if not settings.redis_sentinels:
        return
    for name, url in (
        ("CELERY_BROKER_URL", settings.celery_broker_url),
        ("CELERY_RESULT_BACKEND", settings.celery_result_backend),
    ):
        if name in os.environ:
            os.environ[name] = celery_url(settings, url)


def make_celery(settings: Settings, services: Any, name: str = "delineate") -> Celery:
    """The Celery app of these settings, carrying ``services`` (made the default app)."""
    _environment_follows_sentinel(settings)
    use_shared_clients() if settings.fast_paths else use_kombus_own()
    celery = Celery(name)
    celery.config_from_object(celery_config(settings))
    celery.set_default()
    celery.delineate = services  # type: ignore[attr-defined]
    return celery


def services_of(celery: Celery) -> Any:
    """The :class:`delineate.services.Services` ``celery`` was made with."""
    return celery.delineate  # type: ignore[attr-defined]
