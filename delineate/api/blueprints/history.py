"""Download history: each caller lists, filters and pages through its own jobs."""

from __future__ import annotations

import base64
import binascii
import re

from flask import Blueprint, Response, g, jsonify, request

from delineate.api.edge.auth import current_owner
from delineate.api.flask_app import services
from delineate.api.validation import bad_query, query_number
from delineate.models import JobState
from delineate.telemetry.audit import NO_STORE, audit_link

bp = Blueprint("history", __name__, url_prefix="/v1/downloads")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_STATUS_LENGTH = 100
"""Characters of the status filter: every state once, comma-separated, fits in 50."""
MAX_CURSOR_LENGTH = 200
"""Characters of a cursor; ours are under 100."""

_SCORE = re.compile(r"[0-9]{1,20}")


def _states() -> list[JobState]:
    raw = request.args.get("status")
    if not raw:  # absent or empty: every state
        return list(JobState)
    if len(raw) > MAX_STATUS_LENGTH:
        raise bad_query("status", f"at most {MAX_STATUS_LENGTH} characters")
    states: list[JobState] = []
    for name in raw.split(","):
        try:
            state = JobState(name)
        except ValueError:
            allowed = ", ".join(s.value for s in JobState)
            message = f"{name[:32]!r} is not a state (one or more of {allowed}, comma-separated)"
            raise bad_query("status", message) from None
        if state not in states:
            states.append(state)
    return states


def encode_cursor(score: int, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{job_id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[int, str]:
    """:raise InvalidRequest: the cursor is not one this server made."""
    if len(raw) > MAX_CURSOR_LENGTH:
        raise bad_query("cursor", "not a cursor from a previous page (use nextCursor as given)")
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        score, _, job_id = text.partition(":")
        if not job_id or len(job_id) > 64 or not _SCORE.fullmatch(score):
            raise ValueError
        return int(score), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_query("cursor", "not a cursor from a previous page (use nextCursor as given)") from None


@bp.get("")
def list_jobs() -> Response:
    """The caller's jobs, newest first (all jobs in open mode)."""
    states = _states()
    limit = query_number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    raw_cursor = request.args.get("cursor")
    cursor = decode_cursor(raw_cursor) if raw_cursor else None
    unknown = set(request.args) - {"status", "limit", "cursor"}
    if unknown:
        raise bad_query(sorted(unknown)[0], "unknown parameter (status, limit and cursor are known)")
    store = services().store
    jobs, next_position = store.history(current_owner(), states, limit, cursor)
    statuses = [store.status(job) for job in jobs]
    response = jsonify(jobs=statuses, nextCursor=encode_cursor(*next_position) if next_position else None)
    linked = False
    for job, status in zip(jobs, statuses, strict=True):
        url = status["downloadUrl"]
        if url is not None:  # a presigned link handed out: audited, as by every route
            audit_link(url, job.owner, job.job_id, g.get("request_id"), request.remote_addr, "history")
            linked = True
    if linked:
        response.headers["Cache-Control"] = NO_STORE
    return response


@bp.get("/summary")
def summary() -> Response:
    """How many of the caller's jobs are in each state."""
    counts = services().store.history_counts(current_owner())
    return jsonify(counts=counts, total=sum(counts.values()))
