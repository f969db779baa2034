"""The download API: start jobs, read their status, fetch and cancel them."""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from delineate.api.accept import accept, estimate_seconds, idempotency_key
from delineate.api.edge.auth import current_owner, load_owned_job
from delineate.api.fanout import bounded_map
from delineate.api.flask_app import services
from delineate.api.validation import ROUTE_NAMES, FileIdBody, FileIdsBody, is_job_id, parse_body, parse_job_id
from delineate.broker.queue import TaskQueue
from delineate.errors import (
    Conflict,
    GatewayTimeout,
    JobNotFound,
    JobNotReady,
    SourceUnavailable,
)
from delineate.jobs.webhooks import check_callback_url
from delineate.models import JobState, Phase
from delineate.services import download_name
from delineate.storage import source_key
from delineate.store import JobGone, JobStore

logger = logging.getLogger(__name__)

bp = Blueprint("downloads", __name__, url_prefix="/v1/download")


class JobIdConverter(BaseConverter):
    """A path segment that is not a route name: so ``/v1/download/check`` never matches
    ``/<job:job_id>``, GET on it is a plain 405, and OPTIONS' Allow lists only real methods."""

    regex = "(?!(?:" + "|".join(sorted(ROUTE_NAMES)) + ")$)[^/]+"


@bp.record_once  # before the routes below, which need the converter
def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["job"] = JobIdConverter


def _job_read(view_args: dict[str, Any]) -> tuple[str, str] | None:
    """The job read of a route with a job id, for the edge to send with the rate-limit hit."""
    raw = view_args.get("job_id")
    return JobStore.read_command(raw.lower()) if isinstance(raw, str) and is_job_id(raw) else None


@bp.record_once
def _prefetch_jobs(state: BlueprintSetupState) -> None:
    edge = state.app.extensions.get("delineate_edge")
    if edge is not None:
        for endpoint in ("status", "download", "cancel"):
            edge.prefetch_on(f"{bp.name}.{endpoint}", _job_read)


@bp.post("/initiate")
def initiate() -> tuple[Response, int, list[tuple[str, str]]]:
    body = parse_body(FileIdsBody)
    svc = services()
    callback_url = "" if body.callback_url is None else check_callback_url(body.callback_url, svc.settings)
    idem_key = idempotency_key(request.headers.get("Idempotency-Key"))
    queue: TaskQueue = current_app.extensions["delineate_tasks"]
    accepted = accept(svc, queue, body.unique_ids(), current_owner(), idem_key, callback_url)
    if not accepted.replayed:
        g.job_id = accepted.job.job_id  # the access log line names the new job
    return jsonify(accepted.body()), accepted.status, accepted.headers()


@bp.get("/status/<job_id>")
def status(job_id: str) -> Response:
    job = load_owned_job(parse_job_id(job_id))
    return jsonify(services().store.status(job))


@bp.get("/<job:job_id>")
def download(job_id: str) -> tuple[Response, int, dict[str, str]]:
    job = load_owned_job(parse_job_id(job_id))
    svc = services()
    if job.status is not JobState.COMPLETED:
        raise JobNotReady(
            f"Job {job.job_id} is {job.status.value}; the download is ready when it is completed.",
            details=svc.store.status(job),
        )
    url = svc.storage.presign(job.result_key, download_name(job))
    headers = {"Location": url, "Cache-Control": "no-store"}
    return jsonify(downloadUrl=url, expiresInSeconds=svc.settings.presigned_url_expiry_seconds), 302, headers


@bp.delete("/<job:job_id>")
def cancel(job_id: str) -> tuple[Response, int]:
    job = load_owned_job(parse_job_id(job_id))
    svc = services()
    if job.status.terminal:
        raise Conflict(f"Job {job.job_id} is already {job.status.value}.", details=svc.store.status(job))
    try:
        job = svc.store.update(job.job_id, status=JobState.CANCELLED, phase=Phase.DONE, error="Cancelled by the client")
    except JobGone:
        raise JobNotFound(f"No job {job_id}.") from None
    if job.status is not JobState.CANCELLED:  # it finished in the meantime
        raise Conflict(f"Job {job.job_id} is already {job.status.value}.", details=svc.store.status(job))
    logger.info("job %s cancelled", job.job_id)
    return jsonify(svc.store.status(job)), 202


ESTIMATE_CONCURRENCY = 16
"""HEAD requests one estimate has in flight at most."""

ESTIMATE_BUDGET_SECONDS = 10.0
"""Time one estimate may spend on its HEAD requests, in seconds; past it, 503."""

ESTIMATE_IDS_PER_REQUEST = 100
"""An estimate counts as one request against the rate limit per this many ids (rounded up)."""


@bp.post("/estimate")
def estimate() -> Response:
    body = parse_body(FileIdsBody)
    ids = body.unique_ids()
    extra = math.ceil(len(ids) / ESTIMATE_IDS_PER_REQUEST) - 1  # the edge counted one already
    edge = current_app.extensions.get("delineate_edge")
    if extra > 0 and edge is not None:
        edge.count(cost=extra)
    svc = services()
    storage = svc.storage
    try:
        infos = bounded_map(
            lambda file_id: storage.head(source_key(file_id)), ids, ESTIMATE_CONCURRENCY, ESTIMATE_BUDGET_SECONDS
        )
    except TimeoutError:
        raise SourceUnavailable(
            f"The object store did not answer for {len(ids)} files within {ESTIMATE_BUDGET_SECONDS:.0f} s; "
            "try again shortly, or with fewer ids."
        ) from None
    available: list[int] = []
    missing: list[int] = []
    total = 0
    for file_id, info in zip(ids, infos, strict=True):
        if info is None:
            missing.append(file_id)
        else:
            available.append(file_id)
            total += info.size
    return jsonify(
        availableFileIds=available,
        missingFileIds=missing,
        totalBytes=total,
        estimatedTimeSeconds=estimate_seconds(svc.settings, len(ids)),
    )


@bp.post("/check")
def check() -> Response:
    if request.args.get("sentry_test") == "true":
        # Deliberate: proves that errors reach Sentry (and still answer 500 JSON).
        raise RuntimeError("Sentry test error from POST /v1/download/check?sentry_test=true")
    body = parse_body(FileIdBody)
    info = services().storage.head(source_key(body.file_id))
    return jsonify(
        file_id=body.file_id,
        available=info is not None,
        s3Key=info.key if info else None,
        size=info.size if info else None,
    )


@bp.post("/start")
def start() -> Response:
    """The old synchronous endpoint, kept to show the problem: it holds the request."""
    body = parse_body(FileIdBody)
    svc = services()
    s = svc.settings
    began = time.monotonic()
    delay_ms = random.randint(s.download_delay_min_ms, s.download_delay_max_ms) if s.download_delay_enabled else 0
    timeout_ms = s.request_timeout_ms
    time.sleep(min(delay_ms, timeout_ms) / 1000)
    if delay_ms > timeout_ms:
        raise GatewayTimeout(
            f"Preparing file {body.file_id} took longer than {timeout_ms} ms; "
            "use POST /v1/download/initiate for long downloads."
        )
    info = svc.storage.head(source_key(body.file_id))
    elapsed_ms = int((time.monotonic() - began) * 1000)
    result: dict[str, Any] = {
        "file_id": body.file_id,
        "status": "completed" if info else "failed",
        "downloadUrl": svc.storage.presign(info.key, f"{body.file_id}.zip") if info else None,
        "size": info.size if info else None,
        "processingTimeMs": elapsed_ms,
        "message": "Download ready" if info else f"File {body.file_id} is not available",
    }
    return jsonify(result)
