"""Logging set-up for entry points (API, worker, gunicorn): JSON lines on stdout.

Each line has ``timestamp``, ``level``, ``logger`` and ``message``, plus ``request_id``,
``job_id``, ``trace_id`` and ``span_id`` where known (:class:`ContextFilter` reads them
from the request, the running Celery task and the current span). Presigned URL
signatures and API keys in a message are replaced by ``[Filtered]``.
"""

from __future__ import annotations

import logging
import logging.config
import time
from typing import Any

import orjson
from pythonjsonlogger.json import JsonFormatter

from delineate.telemetry.sentry import redact, remove_secrets
from delineate.telemetry.tracing import current_ids, tracing_ready

_FIELDS = ("request_id", "job_id", "trace_id", "span_id")

ACCESS_LOGGER = "delineate.access"


class AccessLog:
    """One JSON line per request, with the same keys as every other line.

    Built here in one orjson call and written as finished text to the stream of the
    logger's own handler: the general path (a record, a filter looking up the ids,
    python-json-logger walking the record's attributes, the handler's lock) cost about
    a tenth of a status request. The level and the destination are still the logging
    configuration's (logger ``delineate.access``); a handler other than a plain stream
    gets the line through ``logging`` as usual.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._second = -1
        self._second_text = ""

    def _timestamp(self) -> str:
        """Like ``datetime.now(UTC).isoformat()``, the date and time formatted once a second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}+00:00"

    def _stream(self) -> Any:
        handlers = self.logger.handlers
        if len(handlers) == 1 and type(handlers[0]) is logging.StreamHandler:
            return handlers[0].stream
        return None

    def write(
        self, method: str, route: str, path: str, status: int, seconds: float, request_id: str, job_id: str | None
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        ms = round(seconds * 1000, 2)
        message = f"{method} {path} {status} {ms:.1f}ms"
        ids = {"request_id": request_id}
        if job_id:
            ids["job_id"] = job_id
            if job_id not in path:
                message += f" job {job_id}"
        line = {
            "timestamp": self._timestamp(),
            "level": "INFO",
            "logger": ACCESS_LOGGER,
            "message": message,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": ms,
            **ids,
        }
        if tracing_ready():
            line.update({k: v for k, v in current_ids().items() if k in ("trace_id", "span_id")})
        data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        stream = self._stream()
        if stream is None:
            self.logger.info(data[:-1].decode())
            return
        # Handlers flush after every line, so the text layer holds nothing: the bytes can
        # go to the binary stream under it without being decoded and encoded again.
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            binary.write(data)
            binary.flush()
        else:
            stream.write(data.decode())
            stream.flush()


_secrets: tuple[str, ...] = ()


def register_secrets(values: frozenset[str]) -> None:
    """Remove these values (the process's configured secrets) from every later log line."""
    global _secrets
    _secrets = tuple(sorted(values, key=len, reverse=True))


def add_secrets(values: frozenset[str]) -> None:
    """Remove these values too from every later log line (a tenant's keys and secrets)."""
    global _secrets
    _secrets = tuple(sorted(set(_secrets) | values, key=len, reverse=True))


def scrub_text(text: str) -> str:
    """Signatures, keys and every registered secret out of ``text``."""
    return remove_secrets(redact(text), _secrets) if _secrets or "=" in text else text


class SecretsJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, with secrets also removed from tracebacks."""

    def formatException(self, ei: Any) -> str:
        formatted = super().formatException(ei)
        return scrub_text(formatted if isinstance(formatted, str) else "\n".join(formatted))


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
        if "=" in message or _secrets:
            cleaned = scrub_text(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def _formatter() -> dict[str, Any]:
    return {
        "()": SecretsJsonFormatter,
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
        "formatters": {"json": _formatter(), "line": {"format": "%(message)s"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                "filters": ["context"],
            },
            # The access line arrives as finished JSON (AccessLog): written as it is.
            "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "line"},
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "botocore": {"level": "WARNING"},
            "urllib3": {"level": "WARNING"},
            # The app writes the access log (delineate.access); gunicorn's own is off.
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            ACCESS_LOGGER: {"level": level, "handlers": ["access"], "propagate": False},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)  # warnings become JSON lines too, not stray stderr text
