"""The project's exceptions: the job's own code raises them, with no web framework.

    DelineateError (500)
    ├── InvalidRequest (400)
    │   └── InvalidJobId (400)
    ├── Unauthorized (401)
    ├── JobNotFound (404)
    ├── JobNotReady (409)
    ├── Conflict (409)
    │   └── MultipleParts (409)       the result is in parts: download each with ?part=N
    ├── RateLimited (429)             always with Retry-After
    │   └── TooManyActiveJobs (429)
    ├── GatewayTimeout (504)
    ├── ServiceUnavailable (503)
    │   └── NotReplicated (503)       no replica confirmed a new job in time (Sentinel)
    ├── JobFailed (500)               the worker's run ended its job `failed` (a task FAILURE)
    └── StorageError (500)            raised by storage.py, never a botocore type
        ├── SourceUnavailable (503)   transient: the store did not answer or throttled
        └── StorageMisconfigured (500) permanent: bucket missing, access denied

Each carries its HTTP status and machine name; views raise these, and the handlers of
:mod:`delineate.api.blueprints.errors` build every error body from them. This module
imports nothing beyond the standard library, so the worker's job code (and the CLI) can
raise and catch these without loading the web layer.
"""

from __future__ import annotations

from typing import Any


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


class Revoked(DelineateError):
    """The job's result was revoked: its downloads are gone for good."""

    status_code = 410
    error = "revoked"


class Conflict(DelineateError):
    status_code = 409
    error = "conflict"


class MultipleParts(Conflict):
    """A download without ``?part=`` of a result written in parts (the parts are in details)."""

    error = "multiple_parts"


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


class JobFailed(DelineateError):
    """Raised by the task at the end of a run that made its job ``failed``, with the job's
    error as the message: Celery records a FAILURE (Flower's "Failed"), the same runs that
    ``delineate_jobs_total{status="failed"}`` counts. Declared in the task's ``throws``,
    so Celery logs it at INFO without a traceback and Sentry does not report it; the
    message is acknowledged like a success, never retried nor redelivered."""

    error = "job_failed"


class StorageError(DelineateError):
    error = "storage_error"


class SourceUnavailable(StorageError):
    """The object store did not answer, timed out or throttled: worth retrying."""

    status_code = 503
    error = "storage_unavailable"


class StorageMisconfigured(StorageError):
    """The store answered that it will never work (no bucket, bad credentials)."""

    error = "storage_misconfigured"
