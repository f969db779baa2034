"""The operator console: ``/dashboard``, and the figures it draws from (``/v1/stats``,
``/v1/stats/timeline``, ``/v1/errors``).

The page is static HTML, CSS and JS from ``delineate/api/static/dashboard/`` (no inline script
or style, so a ``script-src 'self'`` Content-Security-Policy allows it). The browser
libraries (Sentry's SDK, OpenTelemetry, uPlot) are built into ``static/dashboard/vendor/``
by ``make assets`` and committed, so nothing is fetched from another origin and ``make run``
needs no Node. The view adds what only the server knows: the telemetry settings, as a
``<meta>`` the script reads, the ``<script>`` tags of the SDKs that are configured (none
when unset), and a Content-Security-Policy that lets the page reach exactly the Sentry and
OTLP origins configured.
"""

from __future__ import annotations

import html
import json
import secrets
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, send_from_directory

from delineate.api.edge.auth import current_owner
from delineate.api.flask_app import services
from delineate.api.metrics import scrape_client, stats, tenant_stats
from delineate.api.validation import query_number, refuse_unknown_query
from delineate.config import Settings
from delineate.store import errorlog
from delineate.telemetry import timeline

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "dashboard"

bp = Blueprint("dashboard", __name__, static_folder=str(STATIC_DIR), static_url_path="/dashboard/static")

PAGE_SLOT = "<!-- console: settings and SDKs -->"
"""Where :func:`page` writes the page's settings and the configured SDKs' script tags."""

DEFAULT_ERRORS = 50


@cache
def _template() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url`` (without any user part), or None if it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def console_csp(settings: Settings, style_nonce: str) -> str:
    """The page's policy: its own scripts, styles and calls, plus the two telemetry origins.
    The nonce lets Sentry's feedback form put its ``<style>`` into its shadow root."""
    connect = ["'self'"]
    for url in (settings.dashboard_sentry_dsn, settings.dashboard_otlp_endpoint):
        origin = origin_of(url) if url else None
        if origin and origin not in connect:
            connect.append(origin)
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{style_nonce}'; img-src 'self' data:; "
        f"connect-src {' '.join(connect)}; font-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def page_settings(settings: Settings, style_nonce: str) -> dict[str, str]:
    """What the page's script needs to know (public by design: a DSN is meant for browsers)."""
    return {
        "sentryDsn": settings.dashboard_sentry_dsn or "",
        "otlpEndpoint": settings.dashboard_otlp_endpoint or "",
        "traceUrl": settings.dashboard_trace_url,
        "styleNonce": style_nonce,
    }


def render_page(settings: Settings, style_nonce: str) -> str:
    values = html.escape(json.dumps(page_settings(settings, style_nonce)), quote=True)
    tags = [f'<meta name="delineate-console" content="{values}">']
    if settings.dashboard_sentry_dsn:
        tags.append('<script src="/dashboard/static/vendor/sentry.min.js" defer></script>')
    if settings.dashboard_otlp_endpoint:
        tags.append('<script src="/dashboard/static/vendor/otel.min.js" defer></script>')
    return _template().replace(PAGE_SLOT, "\n  ".join(tags))


@bp.get("/dashboard")
def page() -> Response:
    settings = services().settings
    nonce = secrets.token_urlsafe(16)
    response = Response(render_page(settings, nonce), mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # a fresh nonce each time
    response.headers["Content-Security-Policy"] = console_csp(settings, nonce)
    return response


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The service's icon (browsers ask for it on every page; a 404 is an error in each console)."""
    return send_from_directory(STATIC_DIR, "favicon.ico", max_age=86_400, mimetype="image/x-icon")


@bp.get("/v1/stats")
def live_numbers() -> Response:
    """Queue depth, jobs in progress and finished jobs by state, read from Redis: the whole
    service's in open mode; with API keys the caller's own only (one round trip of ZCOUNTs,
    never a scan), so a tenant learns nothing of the others' load."""
    svc = services()
    if svc.tenants.current.keyed:
        return jsonify(tenant_stats(svc.store.history_counts(current_owner())))
    return jsonify(stats(scrape_client(svc.settings)))


@bp.get("/v1/stats/timeline")
def timeline_view() -> Response:
    """The last ``minutes`` (1-60, default 15) in buckets, oldest first: at most one pipelined
    read (of the steps this process has not kept)."""
    minutes = query_number("minutes", timeline.DEFAULT_MINUTES, 1, timeline.MAX_MINUTES)
    refuse_unknown_query("minutes")
    steps = timeline.window_steps(minutes)
    cache: timeline.StepCache = current_app.extensions["delineate_timeline"]
    return jsonify(timeline.build(minutes, steps, cache.read(scrape_client(services().settings), steps)))


@bp.get("/v1/errors")
def errors_view() -> Response:
    """The caller's newest errors (every error in open mode), newest first."""
    limit = query_number("limit", DEFAULT_ERRORS, 1, errorlog.ERROR_LOG_LENGTH)
    refuse_unknown_query("limit")
    reply = scrape_client(services().settings).execute_command(*errorlog.read_command(current_owner(), limit))
    return jsonify(errors=errorlog.decode(reply))
