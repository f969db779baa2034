"""Logging set-up for entry points (API, worker, gunicorn): JSON lines on stdout.

Each line has ``timestamp``, ``level``, ``logger`` and ``message``, plus ``request_id``,
``job_id``, ``trace_id`` and ``span_id`` where known (:class:`ContextFilter` reads them
from the request, the running Celery task and the current span). Presigned URL
signatures and API keys in a message are replaced by ``[Filtered]``.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from delineate.sentry import redact
from delineate.telemetry import current_ids

_FIELDS = ("request_id", "job_id", "trace_id", "span_id")


class ContextFilter(logging.Filter):
    """Adds the ids of the current request / task / span to each record, and redacts secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            ids = current_ids()
        except Exception:  # noqa: BLE001 - logging must never fail because of context lookup
            ids = {}
        for name in _FIELDS:
            if name in ids and not hasattr(record, name):
                setattr(record, name, ids[name])
        message = record.getMessage()
        if "=" in message:
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def _formatter() -> dict[str, Any]:
    return {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(levelname)s %(name)s %(message)s",
        "rename_fields": {"levelname": "level", "name": "logger"},
        "timestamp": True,
    }


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """The dictConfig of every process: one JSON handler on stdout, on the root logger."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"json": _formatter()},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "botocore": {"level": "WARNING"},
            "urllib3": {"level": "WARNING"},
            # The app writes the access log (delineate.access); gunicorn's own is off.
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)  # warnings become JSON lines too, not stray stderr text
