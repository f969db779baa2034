"""The download API: start jobs, read their status, fetch, cancel and revoke them."""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from delineate.api.accept import accept, estimate_seconds, idempotency_key
from delineate.api.edge.auth import current_owner, load_owned_job
from delineate.api.fanout import bounded_map
from delineate.api.flask_app import services
from delineate.api.sources import check_sources
from delineate.api.validation import (
    ROUTE_NAMES,
    FileIdBody,
    bad_query,
    is_job_id,
    parse_body,
    parse_file_ids,
    parse_job_id,
    query_number,
    refuse_unknown_query,
)
from delineate.broker.queue import TaskQueue
from delineate.errors import (
    Conflict,
    GatewayTimeout,
    JobNotFound,
    JobNotReady,
    MultipleParts,
    Revoked,
    SourceUnavailable,
    StorageError,
)
from delineate.jobs.parts import result_objects
from delineate.jobs.webhooks import check_callback_url, send_revoked
from delineate.models import Job, JobState, Phase
from delineate.services import Services, download_name
from delineate.storage import ObjectInfo, part_key, source_key
from delineate.store import JobGone, JobStore
from delineate.store.revocation import NotRevocable
from delineate.telemetry.audit import NO_STORE, audit_link

logger = logging.getLogger(__name__)

REVOKE_DELETE_BUDGET_SECONDS = 1.0
"""How long a revoking request waits for the object store to delete the bundle, in seconds;
past it (or on an error) the request still answers 202 and the sweeper deletes it."""

REVOKE_DELETE_CONCURRENCY = 8
"""Objects a revoking request deletes at once (a bundle in parts is several)."""


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
    svc = services()
    body = parse_file_ids(svc.settings)
    owner = current_owner()
    tenant = svc.tenants.current.tenant(owner)  # its callback hosts and webhook secret
    callback_url = "" if body.callback_url is None else check_callback_url(body.callback_url, tenant)
    idem_key = idempotency_key(request.headers.get("Idempotency-Key"))
    queue: TaskQueue = current_app.extensions["delineate_tasks"]
    accepted = accept(svc, queue, body.unique_ids(), owner, idem_key, callback_url)
    if not accepted.replayed:
        g.job_id = accepted.job.job_id  # the access log line names the new job
    return jsonify(accepted.body()), accepted.status, accepted.headers()


@bp.get("/status/<job_id>")
def status(job_id: str) -> Response:
    job = load_owned_job(parse_job_id(job_id))
    body = services().store.status(job)
    response = jsonify(body)
    url = body["downloadUrl"]
    if url is not None:  # (the fast lane answers the same: delineate/api/edge/fast_lane.py)
        audit_link(url, job.owner, job.job_id, g.get("request_id"), request.remote_addr)
        response.headers["Cache-Control"] = NO_STORE
    return response


MAX_PART = 999_999
"""The largest ``?part=`` read as a number (a larger one is a 400 like any other)."""


@bp.get("/<job:job_id>")
def download(job_id: str) -> tuple[Response, int, dict[str, str]]:
    """:raise JobNotReady: not completed (409). :raise Revoked: its result was revoked (410).
    :raise MultipleParts: the result is in parts and ``part`` names none (409).
    :raise InvalidRequest: ``part`` is not a number of one of the result's parts (400)."""
    checked_id = parse_job_id(job_id)
    part = query_number("part", 0, 1, MAX_PART)  # 0: none asked for
    job = load_owned_job(checked_id)
    svc = services()
    if job.revoked_at:
        raise Revoked(f"Job {job.job_id}'s result was revoked at {job.revoked_at}.", details=svc.store.status(job))
    if job.status is not JobState.COMPLETED:
        raise JobNotReady(
            f"Job {job.job_id} is {job.status.value}; the download is ready when it is completed.",
            details=svc.store.status(job),
        )
    url = svc.storage.presign(*_result_object(job, part))
    audit_link(url, job.owner, job.job_id, g.get("request_id"), request.remote_addr, via="download")
    headers = {"Location": url, "Cache-Control": NO_STORE}
    return jsonify(downloadUrl=url, expiresInSeconds=svc.settings.presigned_url_expiry_seconds), 302, headers


def _result_object(job: Job, part: int) -> tuple[str, str]:
    """The key and download name of what ``?part=`` asks for (0: the whole result). A single
    result is its own part 1."""
    count = len(job.parts) if job.parts is not None else 1
    if part > count:
        raise bad_query("part", f"must be a whole number from 1 to {count} (the result has {count})")
    if job.parts is None:
        return job.result_key, download_name(job)
    if part == 0:
        listed = [{**p, "url": f"{bp.url_prefix}/{job.job_id}?part={p['index']}"} for p in job.parts]
        raise MultipleParts(
            f"Job {job.job_id}'s result is in {count} parts: download each with ?part=1 to ?part={count}.",
            details={"parts": listed},
        )
    return part_key(job.result_key, part), f"delineate-{job.job_id}-part-{part:04d}.zip"


@bp.delete("/<job:job_id>")
def cancel(job_id: str) -> tuple[Response, int]:
    """Cancel a queued or processing job; revoke a completed one's result.

    :raise Conflict: the job already failed or was cancelled (409).
    """
    job = load_owned_job(parse_job_id(job_id))
    svc = services()
    if job.status is JobState.COMPLETED:
        return _revoke(svc, job)
    if job.status.terminal:
        raise Conflict(f"Job {job.job_id} is already {job.status.value}.", details=svc.store.status(job))
    try:
        job = svc.store.update(job.job_id, status=JobState.CANCELLED, phase=Phase.DONE, error="Cancelled by the client")
    except JobGone:
        raise JobNotFound(f"No job {job_id}.") from None
    if job.status is JobState.COMPLETED:  # it completed in the meantime: DELETE revokes it
        return _revoke(svc, job)
    if job.status is not JobState.CANCELLED:  # it failed in the meantime
        raise Conflict(f"Job {job.job_id} is already {job.status.value}.", details=svc.store.status(job))
    logger.info("job %s cancelled", job.job_id)
    return jsonify(svc.store.status(job)), 202


def _revoke(svc: Services, job: Job) -> tuple[Response, int]:
    """Revoke a completed job's result (idempotent): the write (which also records the
    ``revoked`` webhook a job with a callback owes, and schedules it for the sweeper), then
    its bundle deleted (by the request that revoked it; else by the sweeper), then the
    webhook's first attempt sent."""
    revoked_now: list[tuple[Job, bool]] = []
    try:
        job = svc.store.revoke(job.job_id, on_revoked=lambda revoked, send: revoked_now.append((revoked, send)))
    except NotRevocable as exc:
        if exc.job is None:
            raise JobNotFound(f"No job {job.job_id}.") from None
        raise Conflict(
            f"Job {job.job_id} is already {exc.job.status.value}.", details=svc.store.status(exc.job)
        ) from None
    if revoked_now:
        _delete_result(svc, job)
        if revoked_now[0][1]:
            _send_revoked(job)
    return jsonify(svc.store.status(job)), 202


def _delete_result(svc: Services, job: Job) -> None:
    """Delete a revoked job's bundle (or its parts) and take it off the revocation index. A
    single-file job's result is its source object, shared with every other job: only its
    links are revoked. A bundle other jobs reused goes only with its last user
    (``store/bundles.py``). What this request cannot delete in time, the sweeper does."""
    keys = result_objects(job)
    if keys:
        try:
            if not svc.store.release_revoked([job.job_id]):
                keys = []  # another job still uses this bundle
            bounded_map(svc.storage.delete, keys, REVOKE_DELETE_CONCURRENCY, REVOKE_DELETE_BUDGET_SECONDS)
        except (TimeoutError, StorageError, redis.RedisError) as exc:
            logger.warning("job %s revoked; its bundle is left to the sweeper: %s", job.job_id, str(exc) or "timed out")
            return
    try:
        svc.store.forget_revoked([job.job_id])
    except redis.RedisError as exc:  # the sweeper deletes it again: harmless
        logger.warning("job %s revoked; its entry in the revocation index stays: %s", job.job_id, exc)


def _send_revoked(job: Job) -> None:
    """The first attempt of the job's ``revoked`` webhook delivery (the sweeper sends it if
    this message is lost)."""
    try:
        send_revoked(current_app.extensions["celery"], job.job_id)
    except Exception:  # the revocation stands and the sweeper sends it: never a 500
        logger.exception("job %s: could not send the revoked webhook now; the sweeper will", job.job_id)


ESTIMATE_CONCURRENCY = 16
"""HEAD requests one estimate has in flight at most."""

ESTIMATE_BUDGET_SECONDS = 10.0
"""Time one estimate may spend on its LIST and HEAD requests, in seconds; past it, the answer lists
the ids not checked yet in ``uncheckedFileIds`` (503 only when none was checked)."""

ESTIMATE_IDS_PER_REQUEST = 100
"""An estimate counts as one request against the rate limit per this many ids (rounded up)."""


@bp.post("/estimate")
def estimate() -> Response:
    """:raise SourceUnavailable: the store answered for none of the ids within the budget (503)."""
    svc = services()
    body = parse_file_ids(svc.settings)
    ids = body.unique_ids()
    extra = math.ceil(len(ids) / ESTIMATE_IDS_PER_REQUEST) - 1  # the edge counted one already
    edge = current_app.extensions.get("delineate_edge")
    if extra > 0 and edge is not None:
        edge.count(cost=extra)
    # Within the budget whatever the count (MAX_FILE_IDS, 10,000 by default): LIST pages where
    # the ids are dense, HEADs elsewhere; the ids not settled by then are named, not guessed.
    infos = check_sources(svc.storage, ids, ESTIMATE_CONCURRENCY, ESTIMATE_BUDGET_SECONDS)
    available: list[int] = []
    missing: list[int] = []
    unchecked: list[int] = []
    total = 0
    for file_id, info in zip(ids, infos, strict=True):
        if isinstance(info, ObjectInfo):
            available.append(file_id)
            total += info.size
        elif info is None:
            missing.append(file_id)
        else:  # PENDING: not answered within the budget
            unchecked.append(file_id)
    if len(unchecked) == len(ids):
        raise SourceUnavailable(
            f"The object store did not answer for any of {len(ids)} files within {ESTIMATE_BUDGET_SECONDS:g} s; "
            "try again shortly."
        )
    return jsonify(
        availableFileIds=available,
        missingFileIds=missing,
        uncheckedFileIds=unchecked,
        totalBytes=total,
        estimatedTimeSeconds=estimate_seconds(svc.settings, len(ids)),
    )


@bp.post("/check")
def check() -> Response:
    """:raise InvalidRequest: a query parameter (400; ``sentry_test`` is one only with
    SENTRY_TEST_ROUTE on, and then ``sentry_test=true`` is a deliberate 500)."""
    test_route = services().settings.sentry_test_route
    if test_route and request.args.get("sentry_test") == "true":
        # Deliberate: proves that errors reach Sentry (and still answer 500 JSON).
        raise RuntimeError("Sentry test error from POST /v1/download/check?sentry_test=true")
    refuse_unknown_query(*(("sentry_test",) if test_route else ()))
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
    url = svc.storage.presign(info.key, f"{body.file_id}.zip") if info else None
    result: dict[str, Any] = {
        "file_id": body.file_id,
        "status": "completed" if info else "failed",
        "downloadUrl": url,
        "size": info.size if info else None,
        "processingTimeMs": elapsed_ms,
        "message": "Download ready" if info else f"File {body.file_id} is not available",
    }
    response = jsonify(result)
    if url is not None:  # a link too, of no job
        audit_link(url, current_owner(), None, g.get("request_id"), request.remote_addr, via="start")
        response.headers["Cache-Control"] = NO_STORE
    return response
