"""The OpenAPI 3.1 document, built from the same pydantic models that validate requests.

Request bodies come from ``delineate/api/validation.py`` (the models ``parse_body`` uses),
response bodies from ``delineate/api/schemas.py``; both go through pydantic's
``models_json_schema`` into ``components.schemas``. The operations are listed once in
:data:`OPERATIONS`; an operation is published only when the app has its route, so the
document never promises a route this build does not serve (see ARCHITECTURE.md for why
a small builder instead of spectree or flask-openapi3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from delineate.api import schemas, validation
from delineate.api.openapi_limits import ESTIMATE_TEXT, INITIATE_TEXT, with_limits
from delineate.models import TERMINAL_STATES, JobState

REF = "#/components/schemas/{model}"
_STATES = "|".join(state.value for state in JobState)


@dataclass(frozen=True)
class Resp:
    description: str
    model: type[BaseModel] | None = None
    headers: tuple[str, ...] = ()
    media: str = "application/json"


@dataclass(frozen=True)
class Op:
    method: str
    path: str  # OpenAPI form, {jobId}
    rule: str  # Flask's rule, <job_id>
    operation_id: str
    summary: str
    responses: dict[int, Resp]
    body: type[BaseModel] | None = None
    job_id: bool = False
    idempotency: bool = False
    description: str = ""
    tags: tuple[str, ...] = ("downloads",)
    limited: bool = True  # counted by the rate limiter (RateLimit-* headers, 429)
    keyed: bool = True  # needs an API key when API_KEYS is set
    extra_params: tuple[dict[str, Any], ...] = field(default=())


def _err(description: str, *headers: str) -> Resp:
    return Resp(description, schemas.ErrorBody, headers)


def _query_number(name: str, description: str, maximum: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1, "maximum": maximum}
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


BAD_JOB_ID = _err("the job id is not a UUID")
NOT_FOUND = _err("no such job: unknown, expired, or another API key's")
BAD_BODY = _err("malformed JSON, or fields that break the schema (each listed in details with its JSON path)")
TOO_LARGE = _err("the body is larger than MAX_BODY_BYTES ({max_body_bytes} bytes)")
TOO_LARGE_IDS = _err("the body is larger than MAX_INITIATE_BODY_BYTES ({max_initiate_body_bytes} bytes)")
NOT_JSON = _err("the body is not declared as application/json")
REDIS_DOWN = _err("Redis (job store, rate limiter) or the object store is unavailable", "Retry-After")

OPERATIONS: tuple[Op, ...] = (
    Op(
        "get", "/", "/", "index", "Service index",
        {200: Resp("where to start", schemas.Index)},
        tags=("meta",), keyed=False,
    ),
    Op(
        "get", "/livez", "/livez", "livez", "Liveness: the process serves (no Redis, no S3 call)",
        {200: Resp("alive", schemas.Live)},
        tags=("meta",), limited=False, keyed=False,
    ),
    Op(
        "get", "/health", "/health", "health", "Health of Redis and the object store",
        {
            200: Resp("both answer", schemas.Health),
            503: Resp("a dependency failed or was slow (named in `error`)", schemas.Health, ("Retry-After",)),
        },
        tags=("meta",), limited=False, keyed=False,
    ),
    Op(
        "post", "/v1/download/initiate", "/v1/download/initiate", "initiateDownload",
        "Start a download job",
        {
            202: Resp("the job was queued", schemas.Accepted, ("Location",)),
            200: Resp(
                "an earlier request with the same Idempotency-Key and the same ids made this job",
                schemas.Accepted, ("Location", "Idempotent-Replayed"),
            ),
            400: BAD_BODY,
            409: _err("this Idempotency-Key was used with other file_ids"),
            413: TOO_LARGE_IDS,
            415: NOT_JSON,
            429: _err(
                "rate limited, or this API key has MAX_ACTIVE_JOBS_PER_KEY queued or processing jobs",
                "Retry-After",
            ),
            503: REDIS_DOWN,
        },
        body=validation.FileIdsBody, idempotency=True,
        description=INITIATE_TEXT,
    ),
    Op(
        "get", "/v1/download/status/{jobId}", "/v1/download/status/<job_id>", "getStatus",
        "A job's status",
        {200: Resp("the job's status", schemas.JobStatus), 400: BAD_JOB_ID, 404: NOT_FOUND, 503: REDIS_DOWN},
        job_id=True,
    ),
    Op(
        "get", "/v1/download/stream/{jobId}", "/v1/download/stream/<job_id>", "streamStatus",
        "A job's status as Server-Sent Events",
        {
            200: Resp(
                "`connected`, then `progress` events, then one terminal event (`completed`, `failed` or "
                "`cancelled`); every event's data is the job status, its id the status version",
                None, media="text/event-stream",
            ),
            400: BAD_JOB_ID, 404: NOT_FOUND, 503: REDIS_DOWN,
        },
        job_id=True,
    ),
    Op(
        "get", "/v1/download/{jobId}", "/v1/download/<job:job_id>", "download",
        "Follow to the result",
        {
            302: Resp(
                "to a freshly presigned link of the result (valid PRESIGNED_URL_EXPIRY_SECONDS)",
                schemas.DownloadRedirect, ("Location",),
            ),
            400: _err("the job id is not a UUID, or `part` is not one of the result's parts"), 404: NOT_FOUND,
            409: _err("not completed (its status in details); `multiple_parts`: in parts, listed in details.parts"),
            410: _err("`revoked`: DELETE revoked the job's result for good (its status in details)"), 503: REDIS_DOWN,
        },
        job_id=True, extra_params=(_query_number("part", "one part of a result in parts (1: a whole one)", 999_999),),
    ),
    Op(
        "delete", "/v1/download/{jobId}", "/v1/download/<job:job_id>", "cancelDownload",
        "Cancel a job, or revoke a completed job's result",
        {
            202: Resp(
                "cancelled (a running job stops at its next file step, leaving no partial result); or, for a "
                "completed job, revoked (again): `revokedAt` set, its bundle deleted if unused, downloads answer 410",
                schemas.JobStatus,
            ),
            400: BAD_JOB_ID, 404: NOT_FOUND,
            409: _err("the job already failed or was cancelled (its status is in details)"),
            503: REDIS_DOWN,
        },
        job_id=True,
    ),
    Op(
        "post", "/v1/download/estimate", "/v1/download/estimate", "estimateDownload",
        "What a job with these ids would get, without starting one",
        {
            200: Resp("available and missing ids, total bytes, expected time", schemas.Estimate),
            400: BAD_BODY, 413: TOO_LARGE_IDS, 415: NOT_JSON, 503: REDIS_DOWN,
        },
        body=validation.FileIdsBody,
        description=ESTIMATE_TEXT,
    ),
    Op(
        "post", "/v1/download/check", "/v1/download/check", "checkFile", "Is one file available?",
        {
            200: Resp("whether the file exists, its key and size", schemas.CheckResult),
            400: BAD_BODY, 413: TOO_LARGE, 415: NOT_JSON, 503: REDIS_DOWN,
        },
        body=validation.FileIdBody,
        description="A query parameter is a 400, but with SENTRY_TEST_ROUTE `?sentry_test=true`: a deliberate 500.",
    ),
    Op(
        "post", "/v1/download/start", "/v1/download/start", "startSynchronous",
        "The old synchronous download (kept to show the problem)",
        {
            200: Resp("the file is ready, or not available", schemas.StartResult),
            400: BAD_BODY, 413: TOO_LARGE, 415: NOT_JSON, 503: REDIS_DOWN,
            504: _err("preparing took longer than REQUEST_TIMEOUT_MS; use initiate"),
        },
        body=validation.FileIdBody,
    ),
    Op(
        "get", "/v1/downloads", "/v1/downloads", "listDownloads", "The caller's jobs, newest first",
        {
            200: Resp("a page of jobs and the cursor of the next", schemas.JobPage),
            400: _err("a bad query parameter (named)"),
        },
        tags=("history",),
        description="With API keys, only the caller's jobs; in open mode, every job. Expired jobs are not listed.",
        extra_params=(
            {"name": "status", "in": "query", "required": False, "description": "one or more states, comma-separated",
             "schema": {"type": "string", "pattern": f"^(({_STATES})(,({_STATES}))*)?$"}},
            _query_number("limit", "jobs per page (default 20)", 100),
            {"name": "cursor", "in": "query", "required": False, "description": "nextCursor of the previous page",
             "schema": {"type": "string"}},
        ),
    ),
    Op(
        "get", "/v1/downloads/summary", "/v1/downloads/summary", "summarizeDownloads",
        "How many of the caller's jobs are in each state",
        {200: Resp("counts by state", schemas.JobSummary)},
        tags=("history",),
    ),
    Op(
        "get", "/v1/stats", "/v1/stats", "stats", "Live numbers: queue depth, jobs in progress, finished jobs",
        {200: Resp("read from Redis", schemas.Stats)},
        tags=("meta",),
    ),
    Op(
        "get", "/v1/stats/timeline", "/v1/stats/timeline", "statsTimeline",
        "Requests, errors, latency and jobs over the last minutes, in buckets",
        {200: Resp("buckets, oldest first", schemas.Timeline), 400: _err("a bad query parameter (named)")},
        tags=("meta",), extra_params=(_query_number("minutes", "the window (default 15)", 60),),
        description="Every API process and worker, from 10 s steps kept an hour; at most 120 buckets.",
    ),
    Op(
        "get", "/v1/errors", "/v1/errors", "errorLog",
        "The newest errors: 5xx answers, failed jobs, failed webhook deliveries",
        {200: Resp("newest first", schemas.ErrorLog), 400: _err("a bad query parameter (named)")},
        tags=("meta",), extra_params=(_query_number("limit", "entries (default 50)", 100),),
        description="With API keys, only the caller's own; in open mode, every one. At most 100 are kept per key.",
    ),
    Op(
        "get", "/dashboard", "/dashboard", "dashboard", "The operator console: jobs, health, figures, errors, traces",
        {200: Resp("the console (HTML; its scripts are under /dashboard/static/)", None, media="text/html")},
        tags=("meta",), keyed=False,
    ),
    Op(
        "get", "/metrics", "/metrics", "metrics", "Prometheus metrics",
        {200: Resp("Prometheus text format", None, media="text/plain")},
        tags=("meta",), limited=False, keyed=False,
    ),
)  # fmt: skip

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "the id sent when sane (1-128 printable characters), else a new UUID",
        "schema": {"type": "string", "maxLength": 128},
    },
    "RateLimit-Limit": {"description": "requests allowed per window", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "requests left in this window", "schema": {"type": "integer"}},
    "RateLimit-Reset": {
        "description": "seconds until the window resets (draft-6)",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}},
    "Location": {
        "description": "the status link (initiate) or the presigned link (download)",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "this answer replays an earlier request",
        "schema": {"type": "string", "const": "true"},
    },
    "WWW-Authenticate": {"description": "how to authenticate", "schema": {"type": "string"}},
}


def _components(max_file_ids: int) -> dict[str, Any]:
    ids_body = validation.file_ids_body(max_file_ids)  # its schema's maxItems is this app's MAX_FILE_IDS
    models: list[type[BaseModel]] = [ids_body, validation.FileIdBody]
    models += [
        schemas.ErrorBody, schemas.Problem, schemas.JobStatus, schemas.Accepted, schemas.Estimate,
        schemas.CheckResult, schemas.StartResult, schemas.DownloadRedirect, schemas.Health, schemas.Index,
        schemas.JobPage, schemas.JobSummary, schemas.Stats, schemas.Timeline, schemas.TimelineBucket,
        schemas.ErrorLog, schemas.ErrorEntry, schemas.BundlePart,
    ]  # fmt: skip
    mode = {ids_body: "validation", validation.FileIdBody: "validation"}
    _, defs = models_json_schema(
        [(m, mode.get(m, "serialization")) for m in models],  # type: ignore[misc]
        ref_template=REF,
    )
    return defs.get("$defs", {})


SSE_EVENT: dict[str, Any] = {
    "description": "one event of the stream; its data is the job status as JSON",
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["connected", "progress", *(state.value for state in TERMINAL_STATES)]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "description": "the status version"},
        "retry": {"type": "integer"},
    },
}
"""The shape of one Server-Sent Event (OpenAPI 3.1 has no schema for a whole stream)."""

LINKS = (("status", "getStatus"), ("download", "download"), ("cancel", "cancelDownload"))
"""Operations that take the jobId an initiate answer gives (link name, operationId)."""


def _response(op: Op, status: int, resp: Resp) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID", "required": True}}
    if op.limited and status != 503:
        for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            headers[name] = {"$ref": f"#/components/headers/{name}"}
    for name in resp.headers:
        headers[name] = {"$ref": f"#/components/headers/{name}"}
    out: dict[str, Any] = {"description": resp.description, "headers": headers}
    if resp.model is schemas.Accepted:
        # Where the new job's id goes next (schemathesis' stateful phase follows these too).
        out["links"] = {
            name: {"operationId": target, "parameters": {"jobId": "$response.body#/jobId"}} for name, target in LINKS
        }
    if resp.model is not None:
        out["content"] = {resp.media: {"schema": {"$ref": REF.format(model=resp.model.__name__)}}}
    elif resp.media == "text/event-stream":
        out["content"] = {resp.media: {"schema": SSE_EVENT}}
    elif resp.media != "application/json":
        out["content"] = {resp.media: {"schema": {"type": "string"}}}
    return out


def _operation(op: Op, keyed_mode: bool) -> dict[str, Any]:
    responses = dict(op.responses)
    if op.keyed and keyed_mode:
        responses[401] = _err("no API key, or not a valid one", "WWW-Authenticate")
    if op.limited:
        responses.setdefault(429, _err("rate limited: RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW_MS", "Retry-After"))
        responses.setdefault(503, REDIS_DOWN)
    params: list[dict[str, Any]] = []
    if op.job_id and op.rule == "/v1/download/<job:job_id>":
        responses.setdefault(405, _err("the id is a route name, such as check or status"))
    if op.job_id:
        params.append({
            "name": "jobId", "in": "path", "required": True,
            "schema": {"type": "string", "format": "uuid"}, "description": "the job id (a UUID)",
        })  # fmt: skip
    if op.idempotency:
        params.append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
            "description": (
                "a client-chosen key, kept for JOB_TTL_SECONDS per API key: the same key with the same ids "
                "(as a set) answers 200 with the earlier job; with other ids, 409"
            ),
        })  # fmt: skip
    params.extend(op.extra_params)
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": list(op.tags),
        "responses": {
            str(status): _response(op, status, resp)
            for status, resp in sorted(responses.items(), key=lambda item: item[0])
        },
    }
    if op.description:
        out["description"] = op.description
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}},
        }
    if keyed_mode:
        out["security"] = [{"bearer": []}, {"apiKey": []}] if op.keyed else []
    return out


def build_spec(app: Flask) -> dict[str, Any]:
    """The document for ``app``: only routes it serves; security only when keys are set."""
    settings = app.extensions["delineate"].settings
    keyed_mode = app.extensions["delineate"].tenants.current.keyed
    served = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules() for method in rule.methods or ()}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        if (op.rule, op.method) in served:
            paths.setdefault(op.path, {})[op.method] = _operation(op, keyed_mode)
    window_s = settings.rate_limit_window_ms / 1000
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "delineate",
            "version": "1",
            "description": (
                "Long-running downloads: initiate a job, follow its status, then follow the download link. "
                f"Every error is JSON `{{error, message, requestId}}`. Rate limit: "
                f"{settings.rate_limit_max_requests} requests per {window_s:g} s per API key (or client IP)."
            ),
        },
        "paths": with_limits(paths, app),
        "components": {"schemas": _components(settings.max_file_ids), "headers": HEADERS},
    }
    if keyed_mode:
        spec["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    return spec
