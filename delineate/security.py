"""Request ids and the headers every response carries."""

from __future__ import annotations

import re
import time
import uuid

from flask import Flask, Response, g, request

_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Referrer-Policy": "no-referrer",
}


def _assign_request_id() -> None:
    g.started = time.perf_counter()
    sent = request.headers.get("X-Request-ID", "")
    g.request_id = sent if _SANE_REQUEST_ID.fullmatch(sent) else str(uuid.uuid4())


def _add_headers(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id") or str(uuid.uuid4())
    if "started" in g:
        # Server time in ms (W3C Server-Timing): what the app spent, without the network.
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.started) * 1000:.2f}"
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_security(app: Flask) -> None:
    app.before_request(_assign_request_id)
    app.after_request(_add_headers)
