"""The status read, answered in front of Flask: the route clients poll.

Measured under gunicorn on this machine (2 gevent workers, wrk with 50 connections,
production defaults): a status read through Flask ran at 0.62 of the bare Flask hello,
and the same answer, byte for byte and header for header, made here at 1.1 of it. What
the lane skips is Flask's request machinery around the same work: the request object,
the URL map, the context push and pop, the proxies, the response object and its header
checks. What it does is the edge's and the view's own code (:class:`Edge`,
:class:`RequestObserver`, :class:`JobStore`), called directly, not a copy of it.

It answers ``GET /v1/download/status/<job id>`` with a 200 when the caller may see the
job and is under its limit. Anything else goes to Flask untouched, and so does a status
read that is not a plain 200 once the lane has counted it (over the limit, unknown or
another key's job, Redis away, any error): the lane hands over what it did in a
:class:`Handoff`, and Flask's hooks carry on from it, so the request keeps its id and
is counted once, and its error is the one Flask's handlers write.

With tracing set up, the lane opens the request's server span where Flask's hooks would
(after the count, around the view and the answer), through the same
:class:`delineate.request_tracing.RequestTracer`, so a traced status read looks the same
either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Flask

from delineate.auth import owner_for, presented_key
from delineate.metrics.api import RequestObserver
from delineate.request_tracing import RequestTracer
from delineate.security import HANDOFF, Edge, Handoff, request_id_for
from delineate.store.jobstore import JobStore
from delineate.validation import is_job_id

STATUS_PREFIX = "/v1/download/status/"
STATUS_ROUTE = STATUS_PREFIX + "<job_id>"
"""The Flask rule of the route the lane answers (its metrics label and access-log route)."""

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def header_lookup(environ: dict[str, Any]) -> Callable[[str], str | None]:
    """Headers by name, as WSGI carries them (``X-API-Key`` is ``HTTP_X_API_KEY``)."""
    return lambda name: environ.get("HTTP_" + name.upper().replace("-", "_"))


class StatusLane:
    """WSGI middleware: the status reads it can answer, then Flask (``inner``) for the rest."""

    def __init__(self, app: Flask, inner: WsgiApp) -> None:
        if STATUS_ROUTE not in {rule.rule for rule in app.url_map.iter_rules()}:
            raise RuntimeError(f"the fast lane answers {STATUS_ROUTE}, which the app no longer has")
        svc = app.extensions["delineate"]
        self.inner = inner
        self.store: JobStore = svc.store
        self.keys: dict[str, str] = dict(svc.settings.api_keys)
        self.edge: Edge = app.extensions["delineate_edge"]
        self.observer: RequestObserver = app.extensions["delineate_observer"]
        self.default = app.json.default  # type: ignore[attr-defined]  # what orjson cannot encode itself
        self.mimetype: str = app.json.mimetype  # type: ignore[attr-defined]
        self.tracer: RequestTracer | None = app.extensions.get("delineate_tracer")  # set up with tracing

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET" or not path.startswith(STATUS_PREFIX):
            return self.inner(environ, start_response)
        raw = path[len(STATUS_PREFIX) :]
        if not is_job_id(raw):  # not a job id (or a deeper path): Flask's 400 or 404
            return self.inner(environ, start_response)
        started = time.perf_counter()
        owner = owner_for(presented_key(header_lookup(environ)), self.keys) if self.keys else ""
        if owner is None:  # no valid key: Flask counts it and answers 401
            return self.inner(environ, start_response)
        handoff = Handoff(started, request_id_for(environ.get("HTTP_X_REQUEST_ID")), owner)
        command = self.store.read_command(raw.lower())
        try:
            window, reply = self.edge.limiter.hit(self.edge.caller(owner, environ.get("REMOTE_ADDR")), 1, command)
        except Exception as exc:  # noqa: BLE001 - Flask's handlers answer it (503 for Redis away)
            handoff.error = exc
            return self._hand_over(handoff, environ, start_response)
        handoff.window, handoff.prefetched = window, (command, reply)
        if window.exceeded:
            return self._hand_over(handoff, environ, start_response)
        try:
            job = self.store.job_from_reply(reply)
        except Exception:  # noqa: BLE001 - the view meets the same error and Flask answers it
            return self._hand_over(handoff, environ, start_response)
        if job is None or (self.keys and job.owner != owner):
            return self._hand_over(handoff, environ, start_response)  # Flask's 404
        span = self.tracer.open(environ, "GET", path, STATUS_ROUTE) if self.tracer is not None else None
        try:
            body = orjson.dumps(self.store.status(job), default=self.default)
        except Exception as exc:  # noqa: BLE001 - as above
            if span is not None:
                self.tracer.close(*span, exc)  # type: ignore[union-attr]
            return self._hand_over(handoff, environ, start_response)
        headers = [("Content-Type", self.mimetype), ("Content-Length", str(len(body)))]
        if span is not None:
            headers.append(self.tracer.answered(span[0], 200))  # type: ignore[union-attr]
        headers += self.edge.headers(handoff.request_id, started, window, environ.get("HTTP_ORIGIN"), False)
        start_response("200 OK", headers)
        self.observer.record("GET", STATUS_ROUTE, path, 200, time.perf_counter() - started, handoff.request_id, raw)
        if span is not None:
            self.tracer.close(*span)  # type: ignore[union-attr]
        return [body]

    def _hand_over(
        self, handoff: Handoff, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        environ[HANDOFF] = handoff
        return self.inner(environ, start_response)


def install(app: Flask) -> None:
    """Put the lane in front of Flask (before :func:`delineate.security.trust_proxies`,
    which must see the request first)."""
    app.wsgi_app = StatusLane(app, app.wsgi_app)  # type: ignore[method-assign]
