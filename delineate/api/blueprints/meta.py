"""Service-level routes: the index, liveness (``/livez``) and readiness (``/health``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from flask import Blueprint, Response, jsonify

from delineate.api.flask_app import services
from delineate.services import REQUEST_ANSWER_SECONDS

logger = logging.getLogger(__name__)

bp = Blueprint("meta", __name__)

HEALTH_CHECK_TIMEOUT_SECONDS = REQUEST_ANSWER_SECONDS
"""How long /health waits for its checks (run at once) before calling a dependency down, in
seconds: under the second a request may take during a stall (design.md, "Failure behaviour")."""

HEALTH_RETRY_AFTER_SECONDS = 5
"""Retry-After of /health's 503, in seconds."""


@bp.get("/")
def index() -> Response:
    return jsonify(message="delineate: long-running downloads. Start at POST /v1/download/initiate.", docs="/docs")


@bp.get("/livez")
def livez() -> Response:
    """Liveness: this process serves requests. Touches neither Redis nor S3 and is never
    counted by the rate limiter (``security.UNCOUNTED_PATHS``), so a Redis outage does not
    make Kubernetes restart every API pod (and drop every SSE stream) at once."""
    return jsonify(status="alive")


@bp.get("/health")
def health() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, Callable[[], object]] = {
        "storage": svc.health_storage.check_bucket,
        "redis": svc.health_redis.ping,
    }
    results: dict[str, Any] = {}
    # Both checks run at once and each is cut off, so a hung dependency cannot hold
    # the answer past ~HEALTH_CHECK_TIMEOUT_SECONDS.
    # (No ``with``: its exit would wait for a hung check.)
    pool = ThreadPoolExecutor(max_workers=len(checks))
    futures: dict[str, Future[object]] = {name: pool.submit(check) for name, check in checks.items()}
    wait(futures.values(), timeout=HEALTH_CHECK_TIMEOUT_SECONDS)
    pool.shutdown(wait=False, cancel_futures=True)
    for name, future in futures.items():
        if not future.done():
            results[name] = "error"
            logger.warning("health: %s did not answer in time", name)
        elif (exc := future.exception()) is not None:
            results[name] = "error"
            logger.warning("health: %s failed: %s", name, exc)
        else:
            results[name] = "ok"
    healthy = all(v == "ok" for v in results.values())
    body: dict[str, Any] = {"status": "healthy" if healthy else "unhealthy", "checks": results}
    if healthy:
        return jsonify(body), 200
    failing = [name for name, v in results.items() if v != "ok"]
    body["error"] = f"unavailable: {', '.join(failing)}"
    response = jsonify(body)
    response.headers["Retry-After"] = str(HEALTH_RETRY_AFTER_SECONDS)  # as every 503 of a stall
    return response, 503
