"""gunicorn's gevent worker, made fair between keep-alive connections; and its logger.

gunicorn's async worker serves a keep-alive connection in a loop: read a request,
answer it, read the next. Under gevent a read that finds data already waiting returns
without passing through the event loop, so a client that sends its next request as
soon as it has the answer (a poller on a fast link, a load generator) keeps the
worker to itself while the other connections wait: with 50 connections the bare
hello-world answered half its requests in 0.5 ms and the slowest in over a second
(wrk timeouts). Waiting for the loop to go idle after each response lets every
connection with a request waiting go first; the median wait is then what queueing
predicts (connections / throughput) and the tail stays close to it.

The worker also writes :class:`~delineate.api.checked_headers.CheckedHeaders` (the fast
lane's) without checking each again (:class:`CheckedResponse`).

Used by ``deploy/gunicorn.conf.py`` (``worker_class``, ``logger_class``); the
benchmarks' hello-world ceiling runs on the same classes.
"""

from __future__ import annotations

from typing import Any

import gevent
from gunicorn.glogging import Logger
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker

from delineate.api.checked_headers import CheckedHeaders


class CheckedResponse(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response, taking :class:`CheckedHeaders` as they are: what its own
    checks would leave of them (the same names and values, and the body's length) at
    none of their cost. Any other header list gets gunicorn's checks."""

    def process_headers(self, headers: Any) -> None:
        if type(headers) is CheckedHeaders:
            self.headers.extend(headers)
            self.response_length = headers.content_length
            return
        super().process_headers(headers)


class FairGeventWorker(GeventWorker):
    def init_process(self) -> None:
        # gunicorn's wsgi.create() makes each request's response from this module name.
        wsgi.Response = CheckedResponse
        super().init_process()

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            gevent.idle()  # every other connection with work gets a turn before our next request


class AppAccessLogger(Logger):
    """gunicorn's logger without its access log: the app writes one JSON access line per
    request itself (``delineate.telemetry.logs.AccessLog``). With a logging config set, gunicorn
    would otherwise build its access-log atoms for every request only to drop them."""

    @property
    def access_log_enabled(self) -> bool:
        return False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None
