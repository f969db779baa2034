"""The one place that turns errors into HTTP: every error body is
``{"error", "message", "requestId"}`` (plus ``details`` when known).

The project's own exceptions (:mod:`delineate.errors`) carry their status and name;
werkzeug's HTTP errors get a short name here; a Redis outage is a 503 and an
unreadable chunked body a 400; anything else is a 500 that says nothing of its cause.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, current_app, g, jsonify, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

from delineate.errors import DelineateError
from delineate.store import errorlog
from delineate.telemetry.tracing import current_trace_id

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
"""Retry-After of a 503 for a dependency that is away (Redis, the object store), in seconds."""


# Short machine names for werkzeug's HTTP errors (routing, body parsing, limits).
_HTTP_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
}


def error_response(
    status: int,
    error: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "error": error,
        "message": message,
        "requestId": g.get("request_id", ""),
    }
    if details is not None:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    if status >= 500:
        _log_for_console(status, message)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _log_for_console(status: int, message: str) -> None:
    """Queue a 5xx for the error log of ``/v1/errors`` (written by the process's flusher,
    never by this request: the error is often Redis itself)."""
    recorder = current_app.extensions.get("delineate_console")
    if recorder is None:
        return
    rule = request.url_rule
    record = errorlog.entry(
        "api",
        message,
        status=status,
        route=f"{request.method} {rule.rule if rule is not None else 'unmatched'}",
        jobId=(request.view_args or {}).get("job_id"),
        requestId=g.get("request_id") or None,
        traceId=current_trace_id(),
        sentryEventId=g.get("sentry_event_id"),
    )
    recorder.error(g.get("owner"), record)


def register_error_handlers(app: Flask) -> None:
    """Answer every error of ``app`` with the JSON body (Flask picks a handler by the MRO)."""

    @app.errorhandler(DelineateError)
    def handle_delineate_error(exc: DelineateError) -> Response:
        if exc.status_code >= 500:
            logger.error("%s: %s", exc.error, exc.message)
        headers = exc.headers
        if exc.status_code == 503 and "Retry-After" not in headers:  # e.g. the object store away
            headers = {**headers, "Retry-After": str(RETRY_AFTER_SECONDS)}
        return error_response(exc.status_code, exc.error, exc.message, exc.details, headers)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        message = exc.description or exc.name
        return error_response(status, _HTTP_NAMES.get(status, "http_error"), message, None, headers)

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(redis.exceptions.BusyLoadingError)
    @app.errorhandler(redis.exceptions.ReadOnlyError)  # a demoted primary, mid-failover
    @app.errorhandler(redis.exceptions.MasterDownError)
    def handle_redis_down(exc: Exception) -> Response:
        logger.error("redis unavailable: %s", exc)
        return error_response(
            503,
            "service_unavailable",
            "The job store (Redis) is unavailable; try again shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.errorhandler(ParseException)  # gunicorn reads a chunked body only when the view asks
    def handle_unreadable_body(exc: Exception) -> Response:
        return error_response(400, "bad_request", "The request body could not be read (bad chunked coding).")

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "An unexpected error occurred.")
