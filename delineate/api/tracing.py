"""The API's request spans: one SERVER span per request, started by our own hooks.

Tracing itself (the provider, the sampler, ``tracing_ready``) is set up by
:mod:`delineate.telemetry.tracing`, which imports no web framework; this is its Flask side.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, request
from opentelemetry import trace

from delineate.telemetry.tracing import TRACE_ID_HEADER, tracing_ready


def init_app(app: Flask) -> None:
    """Trace the app's requests (when tracing is set up) and answer with ``X-Trace-Id``."""
    if tracing_ready():
        RequestTracer().init_app(app)


UNTRACED_PREFIXES = ("/metrics", "/health", "/livez", "/dashboard")
"""Paths whose requests start no span (scrapes and probes)."""


class RequestTracer:
    """One SERVER span per request, in three hooks.

    Not opentelemetry-instrumentation-flask: it builds a dozen semantic-convention
    attributes from the environ and starts its span for every request, sampled or not,
    which cost about a tenth of a status read's CPU at 10 % sampling. Here the sampler
    decides first (the parent from ``traceparent`` when one came, as the SDK's parent
    based samplers want), and only a recording span gets the WSGI attributes.
    """

    def __init__(self) -> None:
        from opentelemetry import context
        from opentelemetry.instrumentation.wsgi import collect_request_attributes, wsgi_getter
        from opentelemetry.propagate import extract

        self.tracer = trace.get_tracer("delineate.http")
        self._context, self._extract, self._getter = context, extract, wsgi_getter
        self._attributes = collect_request_attributes

    def init_app(self, app: Flask) -> None:
        app.extensions["delineate_tracer"] = self  # the fast lane opens its spans here too
        app.before_request(self.start)
        app.after_request(self.finish)
        app.teardown_request(self.end)

    # -- one request's span, wherever it is served ---------------------------------------

    def open(self, environ: dict[str, Any], method: str, path: str, rule: str) -> tuple[Any, Any] | None:
        """Start the request's SERVER span and make it current; None for an untraced path."""
        if path.startswith(UNTRACED_PREFIXES):
            return None
        parent = self._extract(environ, getter=self._getter) if "HTTP_TRACEPARENT" in environ else None
        span = self.tracer.start_span(f"{method} {rule}", context=parent, kind=trace.SpanKind.SERVER)
        if span.is_recording():
            span.set_attributes(self._attributes(environ))
            span.set_attribute("http.route", rule)
        return span, self._context.attach(trace.set_span_in_context(span))

    @staticmethod
    def answered(span: Any, status: int) -> tuple[str, str]:
        """Note the response's status on ``span``; the ``X-Trace-Id`` header that names it."""
        if span.is_recording():
            span.set_attribute("http.status_code", status)
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR)
        return TRACE_ID_HEADER, format(span.get_span_context().trace_id, "032x")

    def close(self, span: Any, token: Any, exc: BaseException | None = None) -> None:
        if exc is not None and span.is_recording():
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR)
        span.end()
        self._context.detach(token)

    # -- Flask's hooks -------------------------------------------------------------------

    def start(self) -> None:
        rule = request.url_rule.rule if request.url_rule else request.path
        opened = self.open(request.environ, request.method, request.path, rule)
        if opened is not None:
            g.otel_span, g.otel_token = opened

    def finish(self, response: Response) -> Response:
        span = g.get("otel_span")
        if span is not None:
            name, value = self.answered(span, response.status_code)
            response.headers[name] = value
        return response

    def end(self, exc: BaseException | None) -> None:
        span = g.pop("otel_span", None)
        if span is not None:
            self.close(span, g.pop("otel_token"), exc)
