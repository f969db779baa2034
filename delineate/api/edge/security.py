"""The edge of every request: ids, headers, CORS, proxies, API keys and rate limits.

Order matters, and :func:`init_security` sets it in one ``before_request`` hook: the
request id first (so even a refused request has one), then who is calling (the API
key's name), then the rate limit (counted per key, or per address for requests
without a valid key, so guessing keys is limited too), then the refusal of a missing
or bad key. One ``after_request`` hook writes every header the edge owns.

Every header that does not depend on the request is computed once, when the app is
built: this runs on every request, and the hot routes (status, initiate) are only a
few times the cost of a bare hello-world.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Request, Response, g, request
from werkzeug.datastructures import Headers
from werkzeug.middleware.proxy_fix import ProxyFix

from delineate.api.checked_headers import check_constant
from delineate.api.edge import auth
from delineate.api.edge.ratelimit import RATE_LIMIT_HEADERS, RateLimiter, Window, address_key
from delineate.api.flask_app import EdgeResponse
from delineate.config import Settings
from delineate.config.tenants import TenantsHolder
from delineate.ids import new_uuid
from delineate.redis_io.base import Command
from delineate.store.keys import RATE_LIMIT_PREFIX

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""An X-Request-ID the client sent is echoed only if it looks like this; else a new UUID."""

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
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_MAX_AGE_SECONDS = 600

UNCOUNTED_PATHS = frozenset({"/health", "/livez", "/metrics", "/favicon.ico"})
KNOWN_METHODS = frozenset({"GET", "POST", "DELETE", "HEAD", "OPTIONS"})
"""Methods the API serves; any other request is counted whatever its path (a probe of odd
methods costs its sender, not the metrics)."""
UNCOUNTED_PREFIXES = ("/docs/assets/", "/dashboard/static/")


class Cors:
    """CORS per CORS_ORIGINS: ``*`` on every response, or the request's Origin when listed.

    Written here rather than with flask-cors, which matched its resource patterns and
    rebuilt the same headers on every response; with a fixed origin list the answer
    for each origin can be computed once.
    """

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.wildcard = "*" in origins
        # Echoed as they are (the fast lane's headers are not checked again): checked here.
        self.origins = frozenset(check_constant("Access-Control-Allow-Origin", origin)[1] for origin in origins)
        exposed = ("Access-Control-Expose-Headers", ", ".join(CORS_EXPOSED_HEADERS))
        self._preflight = [
            ("Access-Control-Allow-Methods", CORS_METHODS),
            ("Access-Control-Allow-Headers", ", ".join(CORS_ALLOWED_HEADERS)),
            ("Access-Control-Max-Age", str(CORS_MAX_AGE_SECONDS)),
        ]
        # Everything but the echoed origin is the same for every response.
        self._wildcard = [("Access-Control-Allow-Origin", "*"), exposed]
        self._listed = [exposed, ("Vary", "Origin")]

    def headers(self, origin: str | None, preflight: bool) -> list[tuple[str, str]]:
        if self.wildcard:
            headers = self._wildcard
        elif origin is not None and origin in self.origins:
            headers = [("Access-Control-Allow-Origin", origin), *self._listed]
        else:
            return [("Vary", "Origin")]
        return headers + self._preflight if preflight else headers


def append_headers(headers: Headers, pairs: list[tuple[str, str]]) -> None:
    """Append headers whose values are known to be valid header text.

    Werkzeug checks every value it is given for line breaks (a regex per header); these
    are constants checked once, digits, or a request id that already matched
    :data:`REQUEST_ID`, so they go straight onto the list when werkzeug keeps one.
    """
    target = getattr(headers, "_list", None)
    if isinstance(target, list):
        target.extend(pairs)
    else:
        headers.extend(pairs)


Prefetch = Callable[[dict[str, Any]], Command | None]
"""Given a request's view arguments, the one Redis read its view will need (or None)."""

HANDOFF = "delineate.handoff"
"""The environ key of a :class:`Handoff` (a request the fast lane began and Flask finishes)."""


def request_id_for(sent: str | None) -> str:
    """The request's id: the client's ``X-Request-ID`` when it matches :data:`REQUEST_ID`, else a new UUID."""
    return sent if sent is not None and REQUEST_ID.fullmatch(sent) else new_uuid()


@dataclass(slots=True)
class Handoff:
    """What the edge already did for a request that :mod:`delineate.api.edge.fast_lane` began and
    handed to Flask (an error, a refusal, a job it may not show): Flask's hooks take it
    as theirs, so the request keeps its id and is counted once."""

    started: float
    request_id: str
    owner: str | None
    window: Window | None = None
    prefetched: tuple[Command, Any] | None = None
    error: BaseException | None = None


class Edge:
    """The edge's steps, with what they need computed once per app, and Flask's hooks
    that run them. The fast lane (:mod:`delineate.api.edge.fast_lane`) runs the same steps
    (:meth:`begin`, :meth:`counted`, :meth:`hit`, :meth:`may_see`, :meth:`headers`) on the
    WSGI environ; a rule lives here once and holds on both entrances
    (``tests/http/test_edge_entrances.py`` checks each on both).
    """

    def __init__(self, settings: Settings, limiter: RateLimiter, tenants: TenantsHolder) -> None:
        self.settings = settings
        self.tenants = tenants
        self.fast = settings.fast_paths
        self.limiter = limiter
        self.cors = Cors(settings.cors_origins)
        self.static_headers = [check_constant(name, value) for name, value in SECURITY_HEADERS.items()]
        self.prefetch: dict[str, Prefetch] = {}

    def prefetch_on(self, endpoint: str, read: Prefetch) -> None:
        """Send ``endpoint``'s job read with the rate-limit hit: one round trip, not two.

        The reply waits in ``g.prefetched`` as ``(command, reply)``; whoever reads it
        still checks ownership, and a request refused by the limit or the key check
        never sees it. Only for reads that may happen before the view (not the stream,
        which must subscribe first).
        """
        self.prefetch[endpoint] = read

    # -- the steps, on plain values (both entrances) ---------------------------------------

    def begin(self, header: Callable[[str], str | None]) -> Handoff:
        """Steps 1 and 2: the request's id and who calls (the key's name; ``""`` in open
        mode; None for a missing or bad key, refused later, after the count)."""
        started = time.perf_counter()
        tenants = self.tenants.current
        owner = tenants.owner_for(auth.presented_key(header)) if tenants.keyed else ""
        return Handoff(started, request_id_for(header("X-Request-ID")), owner)

    @staticmethod
    def counted(method: str, path: str) -> bool:
        """Whether a request counts against its caller's limit (probes, scrapes, static
        files and CORS preflights do not; a method the API does not serve always does)."""
        if method not in KNOWN_METHODS:
            return True
        return method != "OPTIONS" and path not in UNCOUNTED_PATHS and not path.startswith(UNCOUNTED_PREFIXES)

    def caller(self, owner: str | None, address: str | None) -> str:
        """The rate-limit counter of a request: its key's name, else its address."""
        return f"key:{owner}" if owner else address_key(address)

    def hit(self, passage: Handoff, address: str | None, cost: int = 1, also: Command | None = None) -> Window:
        """Step 3: count the request (``cost`` times) against its caller, with ``also`` (the
        view's read) in the same round trip; the window and the read's reply go on
        ``passage``. Exceeded or not, the caller decides (both refuse with the same 429).

        :raise redis.RedisError: Redis did not answer (503).
        """
        limit = self.tenants.current.tenant(passage.owner).rate_limit if passage.owner else None
        window, reply = self.limiter.hit(self.caller(passage.owner, address), cost, also, limit)
        passage.window = window
        if also is not None:
            passage.prefetched = (also, reply)
        return window

    def may_see(self, job_owner: str, owner: str | None) -> bool:
        """Step 5, for a job's routes: the caller's own job, or any job in open mode."""
        return not self.tenants.current.keyed or job_owner == owner

    # -- Flask's hooks ----------------------------------------------------------------------

    def before(self) -> None:
        # The request and g bound once: each access through Flask's proxies costs ~1 µs.
        req, ctx = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        handoff: Handoff | None = req.environ.get(HANDOFF)
        if handoff is not None:
            self._take(handoff, ctx)
            return
        passage = self.begin(req.headers.get)
        ctx.started, ctx.request_id, ctx.owner = passage.started, passage.request_id, passage.owner
        if self.counted(req.method, req.path):
            self.count(req=req, ctx=ctx)
        auth.require_key(req, passage.owner)  # step 4

    def _take(self, handoff: Handoff, ctx: Any) -> None:
        """Carry on from the fast lane: its id, owner and count (never a second hit)."""
        ctx.started, ctx.request_id, ctx.owner = handoff.started, handoff.request_id, handoff.owner
        if handoff.error is not None:
            raise handoff.error
        ctx.rate_window = window = handoff.window
        if handoff.prefetched is not None:
            ctx.prefetched = handoff.prefetched
        if window is not None and window.exceeded:
            raise self.limiter.refuse(window)

    def count(self, cost: int = 1, req: Request | None = None, ctx: Any = None) -> Window:
        """Count this request (``cost`` times) against its caller.

        :raise RateLimited: over the limit (the 429 still carries the headers).
        """
        if req is None:
            req, ctx = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        read = self.prefetch.get(req.endpoint or "")
        also = read(req.view_args or {}) if read is not None else None
        passage = Handoff(0.0, "", ctx.get("owner"))
        window = ctx.rate_window = self.hit(passage, req.remote_addr, cost, also)
        if passage.prefetched is not None:
            ctx.prefetched = passage.prefetched
        if window.exceeded:
            raise self.limiter.refuse(window)
        return window

    def headers(
        self, request_id: str, started: float | None, window: Window | None, origin: str | None, preflight: bool
    ) -> list[tuple[str, str]]:
        """Step 6: every header the edge puts on a response (Flask's and the fast lane's alike)."""
        added: list[tuple[str, str]] = [("X-Request-ID", request_id)]
        if started is not None:
            # Server time in ms (W3C Server-Timing): what the app spent, without the network.
            added.append(("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.2f}"))
        added += self.static_headers
        if window is not None:
            added += window.headers()
        added += self.cors.headers(origin, preflight)
        return added

    def after(self, response: Response) -> Response:
        req, ctx = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        # Views never set these, so they are appended in one go rather than each
        # replacing a previous value (a scan of the header list per name).
        window: Window | None = ctx.get("rate_window")
        preflight = req.method == "OPTIONS" and "Access-Control-Request-Method" in req.headers
        added = self.headers(
            ctx.get("request_id") or new_uuid(), ctx.get("started"), window, req.headers.get("Origin"), preflight
        )
        headers = response.headers
        if not self.fast:
            headers.extend(added)  # werkzeug's own way (FAST_PATHS false)
        elif isinstance(response, EdgeResponse) and response.edge_headers is None:
            response.edge_headers = added  # joined when the response is sent, unchecked
        else:
            append_headers(headers, added)
        if headers.get("Content-Type", "").startswith("text/html") and "Content-Security-Policy" not in headers:
            headers["Content-Security-Policy"] = HTML_CSP
        if window is not None and response.status_code == 429 and "Retry-After" not in headers:
            headers["Retry-After"] = str(max(1, window.reset_seconds))
        return response


def init_security(app: Flask) -> Edge:
    svc = app.extensions["delineate"]
    settings: Settings = svc.settings
    limiter = RateLimiter(
        svc.direct_redis,
        RATE_LIMIT_PREFIX,
        settings.rate_limit_max_requests,
        max(1, settings.rate_limit_window_ms),
    )
    edge = Edge(settings, limiter, svc.tenants)
    app.extensions["delineate_edge"] = edge
    app.before_request(edge.before)
    app.after_request(edge.after)
    return edge


def trust_proxies(app: Flask) -> None:
    """Trust X-Forwarded-* only as far as our own proxies go (TRUSTED_PROXY_HOPS); a
    client's invented X-Forwarded-For entries are further left and ignored. Wraps the
    app's outermost layer (the fast lane too), so it is the last step of building it."""
    hops = app.extensions["delineate"].settings.trusted_proxy_hops
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
