"""gunicorn's own refusals as JSON: a request it cannot parse gets the API's error body.

gunicorn answers a request it refuses before the app sees it (a request line over
``limit_request_line``: 414; a header over ``limit_request_field_size`` or too many of
them: 431; a control character in a header value, a bad method or version: 400) with an
HTML page. Every client of this API parses ``{"error", "message", "requestId"}``, so
:class:`JsonErrorsWorker` writes that instead, with a fixed message that never echoes
what the client sent, and a new request id (the client's own could not be read safely).

Used by ``deploy/gunicorn.conf.py`` (``worker_class``).
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from gunicorn import util
from gunicorn.http import errors as h

from delineate.api.gunicorn_worker import FairGeventWorker
from delineate.ids import new_uuid

# (exception types, status, reason, error name, message): the first match wins.
_REFUSALS: list[tuple[tuple[type[BaseException], ...], int, str, str, str]] = [
    ((h.LimitRequestLine,), 414, "URI Too Long", "uri_too_long", "The request line is too long."),
    (
        (h.LimitRequestHeaders,),
        431,
        "Request Header Fields Too Large",
        "headers_too_large",
        "A request header is too large, or there are too many of them.",
    ),
    (
        (h.InvalidHeader, h.InvalidHeaderName, h.ObsoleteFolding),
        400,
        "Bad Request",
        "bad_request",
        "A request header is malformed (control characters, bad name or folding).",
    ),
    (
        (h.InvalidRequestLine, h.InvalidRequestMethod, h.InvalidHTTPVersion),
        400,
        "Bad Request",
        "bad_request",
        "The request line is malformed (method, target or HTTP version).",
    ),
    ((h.ExpectationFailed,), 417, "Expectation Failed", "expectation_failed", "Only Expect: 100-continue is known."),
    (
        (h.UnsupportedTransferCoding, h.InvalidChunkSize, h.ChunkMissingTerminator, h.InvalidChunkExtension),
        400,
        "Bad Request",
        "bad_request",
        "The body's transfer coding is malformed or not supported (only chunked).",
    ),
    ((h.ParseException,), 400, "Bad Request", "bad_request", "The request could not be parsed."),
]


def refusal(exc: BaseException) -> tuple[int, str, str, str]:
    """(status, reason, error name, message) for a request gunicorn could not parse."""
    for types, status, reason, error, message in _REFUSALS:
        if isinstance(exc, types) and not isinstance(exc, (h.InvalidResponseHeader, h.InvalidResponseHeaderName)):
            return status, reason, error, message
    return 500, "Internal Server Error", "internal_error", "An unexpected error occurred."


@functools.cache
def _security_lines() -> str:
    """The app's security headers, on gunicorn's refusals as on every other answer.

    Imported on first use, in a worker: this module is loaded by gunicorn's master before
    gevent patches the standard library, and the app's modules would import ssl too early.
    """
    from delineate.api.edge.security import SECURITY_HEADERS

    return "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS.items())


def error_bytes(status: int, reason: str, error: str, message: str, request_id: str) -> bytes:
    """A whole HTTP/1.1 response carrying the API's error body; the connection closes."""
    body = orjson.dumps({"error": error, "message": message, "requestId": request_id})
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        f"{_security_lines()}"
        "Cache-Control: no-store\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class JsonErrorsWorker(FairGeventWorker):
    """The fair gevent worker, answering its own refusals in JSON."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, reason, error, message = refusal(exc)
        request_id = new_uuid()
        if status >= 500:
            self.log.exception("error handling request (request id %s)", request_id)
        else:
            ip = (addr or ("",))[0]
            self.log.warning("refused a request from ip=%s: %s %s (request id %s)", ip, status, error, request_id)
        try:
            util.write_nonblock(client, error_bytes(status, reason, error, message, request_id))
        except OSError:  # the client is gone; nothing to tell it
            self.log.debug("failed to send error response")
