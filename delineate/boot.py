"""Start-up for the process entry points (gunicorn, the WSGI app, the worker, Flower):
settings and the app (the API's Flask app, or the worker's Celery app), failing in one
line on a bad setting.

gunicorn's master imports this module (through ``deploy/gunicorn.conf.py``) before gevent
patches anything, so at module level it imports only the standard library and
``delineate.config``; the app, logging and observability are imported when called.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

from delineate.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from celery import Celery
    from flask import Flask


def settings_or_exit(check_tenants: bool = False) -> Settings:
    """Load settings; on a bad value print one line naming the variable and exit 2.

    ``check_tenants`` also reads TENANTS_FILE: gunicorn's master does, so a bad file
    stops start-up once rather than every worker failing in turn.
    """
    try:
        settings = load_settings()
        if check_tenants:
            from delineate.config.tenants import load_tenants

            load_tenants(settings)
        return settings
    except ConfigError as exc:
        _exit_on(exc)


def _exit_on(exc: ConfigError) -> NoReturn:
    print(f"delineate: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


def app_or_exit(service: str | None = None) -> Flask:
    """The app of an entry point: JSON logs; with ``service``, tracing and Sentry for this process."""
    from delineate import create_app
    from delineate.telemetry.logs import configure_logging

    configure_logging()
    settings = settings_or_exit()
    if service:
        from delineate.telemetry.setup import setup_process

        setup_process(settings, service)
    try:
        return create_app(settings)
    except ConfigError as exc:  # the tenants file, read as the app is built
        _exit_on(exc)


def worker_or_exit() -> Celery:
    """The worker's Celery app (also Flower's, and the sweeper's): JSON logs, its services,
    and the job store's terminal hooks. Tracing and Sentry start at ``worker_init``
    (``celery_app.signals``), in the worker only."""
    from delineate.broker.app import make_celery
    from delineate.services import build_services, connect_store
    from delineate.telemetry.logs import configure_logging

    configure_logging()
    settings = settings_or_exit()
    svc = build_services(settings)
    try:
        svc.tenants  # noqa: B018 - a bad tenants file stops start-up here, in one line
    except ConfigError as exc:
        _exit_on(exc)
    celery = make_celery(settings, svc)
    connect_store(svc, celery)
    return celery


def guard_reload(arbiter: Any) -> None:
    """Put a check in front of gunicorn's SIGHUP: the arbiter reloads (workers restarted
    gracefully, every request answered) only when the settings and tenants file load;
    else it logs one line and keeps the workers it has. gunicorn's own handler only
    queues the signal, and so does this one after its check."""
    import signal

    queue_signal = signal.getsignal(signal.SIGHUP)

    def on_hup(signum: int, frame: Any) -> None:
        try:
            from delineate.config.tenants import load_tenants

            load_tenants(load_settings())
        except ConfigError as exc:
            arbiter.log.error("reload refused, the running workers stay: configuration error: %s", exc)
            return
        if callable(queue_signal):
            queue_signal(signum, frame)

    signal.signal(signal.SIGHUP, on_hup)
