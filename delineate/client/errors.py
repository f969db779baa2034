"""What the client raises: :class:`ApiError` (and subclasses) carrying the server's error
body and request id, and the client's own failures. Re-exported by :mod:`delineate.client.api`."""

from __future__ import annotations

from typing import Any

import httpx


class ClientError(Exception):
    """Base of everything this client raises."""


class ApiError(ClientError):
    """The server answered with an error; ``body`` is its JSON error body."""

    def __init__(self, status_code: int, body: dict[str, Any], request_id: str | None) -> None:
        self.status_code = status_code
        self.body = body
        self.error = str(body.get("error", "http_error"))
        self.request_id = request_id or body.get("requestId")
        message = body.get("message") or f"HTTP {status_code}"
        super().__init__(f"{message} (HTTP {status_code}, {self.error}, request {self.request_id})")


class AuthError(ApiError):
    """401: missing or wrong API key."""


class NotFound(ApiError):
    """404: unknown job (or another key's)."""


class Revoked(ApiError):
    """410: the job's result was revoked (``DELETE`` on the completed job); it is gone for good."""


class RateLimited(ApiError):
    """429 after waiting out Retry-After :data:`MAX_RATE_LIMIT_WAITS` times."""


class Unreachable(ClientError):
    """The server could not be reached at all."""


class JobFailed(ClientError):
    """The job ended failed or cancelled."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        super().__init__(f"job {status.get('jobId')} {status.get('status')}: {status.get('error')}")


class VerificationError(ClientError):
    """The downloaded result does not match its manifest (or its announced size)."""


class MultipleParts(ClientError):
    """The result is in parts (its status lists them): :meth:`Client.download_parts` fetches
    each; :meth:`Client.download` saves one file only."""


def raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        body = {"error": "http_error", "message": response.text[:200] or response.reason_phrase}
    request_id = response.headers.get("x-request-id")
    kind = {401: AuthError, 404: NotFound, 410: Revoked, 429: RateLimited}.get(response.status_code, ApiError)
    raise kind(response.status_code, body, request_id)
