"""The project's exceptions, and the one place that turns them into HTTP.

    DelineateError (500)
    ├── InvalidRequest (400)
    │   └── InvalidJobId (400)
    ├── Unauthorized (401)
    ├── JobNotFound (404)
    ├── JobNotReady (409)
    ├── Conflict (409)
    ├── RateLimited (429)             always with Retry-After
    │   └── TooManyActiveJobs (429)
    ├── GatewayTimeout (504)
    ├── ServiceUnavailable (503)
    │   └── NotReplicated (503)       no replica confirmed a new job in time (Sentinel)
    └── StorageError (500)            raised by storage.py, never a botocore type
        ├── SourceUnavailable (503)   transient: the store did not answer or throttled
        └── StorageMisconfigured (500) permanent: bucket missing, access denied

Views raise these; the handlers registered by :func:`register_error_handlers` build
every error body: ``{"error", "message", "requestId"}`` (plus ``details`` when known).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, g, jsonify
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)


class DelineateError(Exception):
    status_code = 500
    error = "internal_error"

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class InvalidRequest(DelineateError):
    status_code = 400
    error = "invalid_request"


class InvalidJobId(InvalidRequest):
    error = "invalid_job_id"


class Unauthorized(DelineateError):
    status_code = 401
    error = "unauthorized"


class JobNotFound(DelineateError):
    status_code = 404
    error = "not_found"


class JobNotReady(DelineateError):
    status_code = 409
    error = "job_not_ready"


class Conflict(DelineateError):
    status_code = 409
    error = "conflict"


class RateLimited(DelineateError):
    status_code = 429
    error = "rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: int, details: Any = None):
        super().__init__(message, details=details, headers={"Retry-After": str(max(1, retry_after_seconds))})


class TooManyActiveJobs(RateLimited):
    error = "too_many_active_jobs"


class GatewayTimeout(DelineateError):
    status_code = 504
    error = "gateway_timeout"


class ServiceUnavailable(DelineateError):
    status_code = 503
    error = "service_unavailable"


class NotReplicated(ServiceUnavailable):
    """Behind Sentinel, no replica acknowledged a new job's write within
    REDIS_REPLICA_ACK_TIMEOUT_MS: a 202 would promise a job a failover could lose."""

    error = "not_replicated"


class StorageError(DelineateError):
    error = "storage_error"


class SourceUnavailable(StorageError):
    """The object store did not answer, timed out or throttled: worth retrying."""

    status_code = 503
    error = "storage_unavailable"


class StorageMisconfigured(StorageError):
    """The store answered that it will never work (no bucket, bad credentials)."""

    error = "storage_misconfigured"


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
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DelineateError)
    def handle_delineate_error(exc: DelineateError) -> Response:
        if exc.status_code >= 500:
            logger.error("%s: %s", exc.error, exc.message)
        return error_response(exc.status_code, exc.error, exc.message, exc.details, exc.headers)

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
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(ParseException)  # gunicorn reads a chunked body only when the view asks
    def handle_unreadable_body(exc: Exception) -> Response:
        return error_response(400, "bad_request", "The request body could not be read (bad chunked coding).")

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "An unexpected error occurred.")
