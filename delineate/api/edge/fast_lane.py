"""The two routes clients hit hardest, answered in front of Flask: status reads and initiates.

Measured under gunicorn on this machine (2 gevent workers, wrk with 50 connections,
production defaults, ``bench/hot_path.py``): a status read through Flask ran at 0.54 of
the bare Flask hello and an initiate at 0.45; the same answers, header for header, made
here run at 1.0 and 0.73 of it. What
the lane skips is Flask's request machinery around the same work: the request object,
the URL map, the context push and pop, the proxies, the response object and its header
checks. What it runs is the edge's and the views' own code (:class:`Edge`,
:class:`RequestObserver`, :class:`JobStore`, :func:`delineate.api.accept.accept`), called
directly, not a copy of it.

It answers, with the edge's headers, the metrics and the access line:

- ``GET /v1/download/status/<job id>``: 200 when the caller may see the job;
- ``POST /v1/download/initiate`` with a JSON body of a declared length and no
  ``callback_url``: the 202 of a new job, or the 200 of an idempotent replay.

Anything else goes to Flask untouched. A request the lane has begun (counted) and
cannot answer with a success is handed to Flask in a :class:`Handoff`: Flask's hooks
carry on from it, so the request keeps its id and is counted once. Before anything is
written (a bad body, a job it may not show) Flask redoes the view and answers in its
own words; once a write may have happened, the handoff carries the error and Flask's
handlers only render it, so a job is never created twice.

With tracing set up, the lane opens the request's server span through the same
:class:`delineate.api.tracing.RequestTracer` as Flask's hooks, after the count and
around the work, so a traced request looks the same either way.
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from delineate.api.accept import accept, idempotency_key
from delineate.api.checked_headers import CheckedHeaders
from delineate.api.edge.security import HANDOFF, Edge, Handoff
from delineate.api.metrics import RequestObserver
from delineate.api.tracing import RequestTracer
from delineate.api.validation import body_refusal, file_ids_body, is_job_id, parse_json
from delineate.broker.queue import TaskQueue
from delineate.services import Services
from delineate.telemetry.audit import NO_STORE, audit_link

STATUS_PREFIX = "/v1/download/status/"
STATUS_ROUTE = STATUS_PREFIX + "<job_id>"
INITIATE_ROUTE = "/v1/download/initiate"
"""The Flask rules of the routes the lane answers (their metrics labels and access-log routes)."""

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Span = tuple[Any, Any]  # (span, context token), from RequestTracer.open


def status_line(code: int) -> str:
    """As werkzeug writes it (``202 ACCEPTED``)."""
    return f"{code} {HTTP_STATUS_CODES[code].upper()}"


@functools.cache
def _environ_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def environ_header(environ: dict[str, Any], name: str) -> str | None:
    """A request header from the WSGI environ, as PEP 3333 names it (``X-Request-ID`` is
    ``HTTP_X_REQUEST_ID``): werkzeug's ``EnvironHeaders(environ).get`` without building one
    per request (about 10 µs of a status read). Only for headers sent as ``HTTP_*``."""
    return environ.get(_environ_key(name))


class FastLane:
    """WSGI middleware: the requests above, then Flask (``inner``) for the rest."""

    def __init__(self, app: Flask, inner: WsgiApp) -> None:
        missing = {STATUS_ROUTE, INITIATE_ROUTE} - {rule.rule for rule in app.url_map.iter_rules()}
        if missing:
            raise RuntimeError(f"the fast lane answers {sorted(missing)}, which the app no longer has")
        self.inner = inner
        self.svc: Services = app.extensions["delineate"]
        self.store = self.svc.store
        # The initiate's own limits (as Flask's view applies them: validation.parse_file_ids).
        self.max_body = self.svc.settings.max_initiate_body_bytes
        self.body_model = file_ids_body(self.svc.settings.max_file_ids)
        self.queue: TaskQueue = app.extensions["delineate_tasks"]
        self.edge: Edge = app.extensions["delineate_edge"]
        self.observer: RequestObserver = app.extensions["delineate_observer"]
        self.tracer: RequestTracer | None = app.extensions.get("delineate_tracer")  # set up with tracing
        self.default = app.json.default  # type: ignore[attr-defined]  # what orjson cannot encode itself
        self.mimetype: str = app.json.mimetype  # type: ignore[attr-defined]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        if method == "GET" and path.startswith(STATUS_PREFIX):
            raw = path[len(STATUS_PREFIX) :]
            if is_job_id(raw):  # else not a job id, or a deeper path: Flask's 400 or 404
                return self._status(environ, start_response, path, raw)
        elif method == "POST" and path == INITIATE_ROUTE:
            length = self._body_length(environ)
            if length is not None:
                return self._initiate(environ, start_response, path, length)
        return self.inner(environ, start_response)

    # -- the routes ----------------------------------------------------------------------

    def _status(self, environ: dict[str, Any], start_response: Callable[..., Any], path: str, raw: str) -> Any:
        handoff = self._begin(environ)
        if handoff is None:
            return self.inner(environ, start_response)
        command = self.store.read_command(raw.lower())
        if not self._count(handoff, environ, command):
            return self._hand_over(handoff, environ, start_response)
        try:
            job = self.store.job_from_reply(handoff.prefetched[1])  # type: ignore[index]
        except Exception:  # noqa: BLE001 - the view meets the same error and Flask answers it
            return self._hand_over(handoff, environ, start_response)
        if job is None or not self.edge.may_see(job.owner, handoff.owner):
            return self._hand_over(handoff, environ, start_response)  # Flask's 404
        span = self._open(environ, "GET", path, STATUS_ROUTE)
        try:
            status = self.store.status(job)
            body = orjson.dumps(status, default=self.default)
        except Exception as exc:  # noqa: BLE001 - nothing was written: Flask renders it
            handoff.error = exc
            return self._hand_over(handoff, environ, start_response, span)
        extra: list[tuple[str, str]] = []
        url = status["downloadUrl"]
        if url is not None:  # a presigned link: audited and never cached, as by Flask's view
            audit_link(url, job.owner, job.job_id, handoff.request_id, environ.get("REMOTE_ADDR"))
            extra.append(("Cache-Control", NO_STORE))
        return self._answer(environ, start_response, 200, body, extra, handoff, span, ("GET", STATUS_ROUTE, path, raw))

    def _initiate(self, environ: dict[str, Any], start_response: Callable[..., Any], path: str, length: int) -> Any:
        handoff = self._begin(environ)
        if handoff is None:
            return self.inner(environ, start_response)
        if not self._count(handoff, environ, None):
            return self._hand_over(handoff, environ, start_response)
        try:
            raw = environ["wsgi.input"].read(length)
        except Exception as exc:  # noqa: BLE001 - a client gone mid-body: Flask's handlers answer it
            handoff.error = exc
            return self._hand_over(handoff, environ, start_response)
        environ["wsgi.input"] = io.BytesIO(raw)  # Flask reads it again if the lane hands over
        if len(raw) != length:  # cut short: Flask's 400
            return self._hand_over(handoff, environ, start_response)
        try:
            body = parse_json(raw, self.body_model)
            idem_key = idempotency_key(environ.get("HTTP_IDEMPOTENCY_KEY"))
        except Exception:  # noqa: BLE001 - nothing written yet: Flask's view answers in its own words
            return self._hand_over(handoff, environ, start_response)
        if body.callback_url is not None:  # a webhook URL to check: Flask's
            return self._hand_over(handoff, environ, start_response)
        span = self._open(environ, "POST", path, INITIATE_ROUTE)
        try:
            accepted = accept(self.svc, self.queue, body.unique_ids(), handoff.owner or "", idem_key)
            answer = orjson.dumps(accepted.body(), default=self.default)
        except Exception as exc:  # noqa: BLE001 - a write may have happened: Flask only renders it
            handoff.error = exc
            return self._hand_over(handoff, environ, start_response, span)
        job_id = None if accepted.replayed else accepted.job.job_id
        where = ("POST", INITIATE_ROUTE, path, job_id)
        return self._answer(environ, start_response, accepted.status, answer, accepted.headers(), handoff, span, where)

    # -- the steps they share ------------------------------------------------------------

    def _body_length(self, environ: dict[str, Any]) -> int | None:
        """The declared length of a JSON body the lane may read; None leaves it to Flask
        (the body rule refuses it, or it is chunked, empty or over MAX_INITIATE_BODY_BYTES:
        Flask's view answers)."""
        if environ.get("HTTP_TRANSFER_ENCODING"):
            return None
        if body_refusal(environ.get("CONTENT_TYPE"), environ.get("HTTP_CONTENT_ENCODING")) is not None:
            return None
        declared = environ.get("CONTENT_LENGTH", "")
        if not declared.isdigit() or not 0 < int(declared) <= self.max_body:
            return None
        return int(declared)

    def _begin(self, environ: dict[str, Any]) -> Handoff | None:
        """The edge's first steps (:meth:`Edge.begin`); None without a valid key: Flask begins
        again, counts it and answers 401 (the lane never answers a refusal)."""
        passage = self.edge.begin(functools.partial(environ_header, environ))
        return passage if passage.owner is not None else None

    def _count(self, handoff: Handoff, environ: dict[str, Any], also: Any) -> bool:
        """The edge's count (:meth:`Edge.hit`, with ``also``, the view's read, in the same
        round trip); False when Flask must answer (over the limit, or Redis away: in
        ``handoff``)."""
        try:
            window = self.edge.hit(handoff, environ.get("REMOTE_ADDR"), 1, also)
        except Exception as exc:  # noqa: BLE001 - Flask's handlers answer it (503 for Redis away)
            handoff.error = exc
            return False
        return not window.exceeded

    def _open(self, environ: dict[str, Any], method: str, path: str, route: str) -> Span | None:
        return self.tracer.open(environ, method, path, route) if self.tracer is not None else None

    def _answer(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        code: int,
        body: bytes,
        extra: list[tuple[str, str]],
        handoff: Handoff,
        span: Span | None,
        where: tuple[str, str, str, str | None],
    ) -> list[bytes]:
        headers = [("Content-Type", self.mimetype), ("Content-Length", str(len(body))), *extra]
        if span is not None:
            headers.append(RequestTracer.answered(span[0], code))
        origin = environ.get("HTTP_ORIGIN")
        headers += self.edge.headers(handoff.request_id, handoff.started, handoff.window, origin, False)
        # Every value here is a constant checked at start-up, a number or a matched id.
        start_response(status_line(code), CheckedHeaders(headers, len(body)))
        method, route, path, job_id = where
        seconds = time.perf_counter() - handoff.started
        self.observer.record(method, route, path, code, seconds, handoff.request_id, job_id)
        if span is not None:
            self.tracer.close(*span)  # type: ignore[union-attr]
        return [body]

    def _hand_over(
        self, handoff: Handoff, environ: dict[str, Any], start_response: Callable[..., Any], span: Span | None = None
    ) -> Iterable[bytes]:
        environ[HANDOFF] = handoff
        if span is None:
            return self.inner(environ, start_response)
        tracer = self.tracer
        assert tracer is not None

        def traced(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(tracer.answered(span[0], int(status.split(" ", 1)[0])))
            return start_response(status, headers, exc_info)

        try:
            return self.inner(environ, traced)
        finally:
            tracer.close(*span)  # a handled error is an answer, not a failed span (as in Flask)


def install(app: Flask) -> None:
    """Put the lane in front of Flask (before :func:`delineate.api.edge.security.trust_proxies`,
    which must see the request first), with FAST_PATHS (the default); without, every request
    takes Flask's own path."""
    if app.extensions["delineate"].settings.fast_paths:
        app.wsgi_app = FastLane(app, app.wsgi_app)  # type: ignore[method-assign]
