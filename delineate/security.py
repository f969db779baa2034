"""The edge of every request: ids, headers, CORS, proxies, API keys and rate limits.

Order matters, and :func:`init_security` sets it: the request id first (so even a
refused request has one), then who is calling (the API key's name), then the rate
limit (counted per key, or per IP for requests without a valid key, so guessing keys
is limited too), then the refusal of a missing or bad key.
"""

from __future__ import annotations

import re
import time
import uuid

from flask import Flask, Response, g, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from delineate import auth
from delineate.ratelimit import RATE_LIMIT_HEADERS, init_rate_limits

_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Referrer-Policy": "no-referrer",
}

HTML_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Content-Security-Policy of HTML pages: only the app's own scripts, styles and calls."""

CORS_EXPOSED_HEADERS = ["X-Request-ID", *RATE_LIMIT_HEADERS, "Retry-After", "Idempotent-Replayed", "Location"]
CORS_ALLOWED_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-ID",
    "Last-Event-ID",
]
CORS_MAX_AGE_SECONDS = 600


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
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", HTML_CSP)
    return response


def init_security(app: Flask) -> None:
    settings = app.extensions["delineate"].settings
    if settings.trusted_proxy_hops:
        # Trust X-Forwarded-* only as far as our own proxies go; a client's invented
        # X-Forwarded-For entries are further left and ignored.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.before_request(_assign_request_id)
    auth.init_identify(app)
    init_rate_limits(app)
    auth.init_require_key(app)
    app.after_request(_add_headers)
    CORS(
        app,
        origins=list(settings.cors_origins),
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_headers=CORS_ALLOWED_HEADERS,
        methods=["GET", "POST", "DELETE", "OPTIONS"],
        max_age=CORS_MAX_AGE_SECONDS,
        always_send=True,
        send_wildcard="*" in settings.cors_origins,  # "*" itself, not the echoed Origin
    )
