"""What telemetry learns from the request being served: its ids for log lines and Sentry
tags, and its data for Sentry events (the telemetry package itself imports no web
framework; :func:`install` hooks these in)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context, request

from delineate.telemetry import sentry, tracing


def request_ids() -> dict[str, str] | None:
    """The request's id and job id; None outside a request."""
    if not has_request_context():
        return None
    ids: dict[str, str] = {}
    request_id = g.get("request_id")
    if request_id:
        ids["request_id"] = request_id
    job_id = (request.view_args or {}).get("job_id")
    if job_id:
        ids["job_id"] = str(job_id)
    return ids


def add_request_data(event: dict[str, Any]) -> None:
    """Inside a request: the request's data, and only the breadcrumbs made since it began."""
    if not has_request_context():
        return
    g.sentry_event_id = event.get("event_id")  # the error log of /v1/errors links to it
    event.setdefault(
        "request",
        {
            "method": request.method,
            "url": request.base_url,
            "query_string": request.query_string.decode("latin-1"),
            "headers": dict(request.headers),
        },
    )
    started = g.get("started")
    crumbs = event.get("breadcrumbs")
    if started is None or not isinstance(crumbs, dict) or not crumbs.get("values"):
        return
    began = datetime.fromtimestamp(time.time() - (time.perf_counter() - started), UTC)
    crumbs["values"] = [
        c for c in crumbs["values"] if not isinstance(c.get("timestamp"), datetime) or c["timestamp"] >= began
    ]


def install() -> None:
    """Hook the request's ids and data into logs and Sentry (once per process is enough)."""
    tracing.use_request_ids(request_ids)
    sentry.add_event_hook(add_request_data)
