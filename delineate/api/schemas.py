"""Response bodies as pydantic models: what the OpenAPI document promises we send.

Request bodies live in ``delineate/api/validation.py`` (they also validate); these only
describe. The tests check real responses against them (through the spec, with
schemathesis), so a change to what a view returns shows up there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatusName = Literal["queued", "processing", "completed", "failed", "cancelled"]
PhaseName = Literal["queued", "checking", "bundling", "uploading", "done"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Body):
    """One thing wrong with a request, named by its JSON path (``$.file_ids[3]``)."""

    path: str
    message: str


class ErrorBody(_Body):
    """Every 4xx and 5xx answer."""

    error: str = Field(description="short machine name, e.g. invalid_request, not_found, rate_limited")
    message: str = Field(description="one sentence for a person")
    requestId: str = Field(description="equals the response's X-Request-ID header")
    details: Any = Field(
        default=None,
        description="validation errors: a list of {path, message}; 409: the job's status or the earlier job; "
        "410: the revoked job's status",
    )


class CallbackState(BaseModel):
    status: str
    attempts: int
    lastError: str | None = None


class BundlePart(_Body):
    """One part of a result written in parts (past BUNDLE_PART_BYTES): a complete zip."""

    index: int = Field(ge=1, description="download it with GET /v1/download/{jobId}?part={index}")
    size: int = Field(ge=0, description="its bytes")
    sha256: str = Field(description="hex digest of the whole part")
    files: int = Field(ge=1, description="how many files it holds (its manifest.json lists them)")


class JobStatus(_Body):
    """A job's status: what polling, SSE events and webhooks carry."""

    jobId: str = Field(json_schema_extra={"format": "uuid"})
    status: JobStatusName
    progress: int = Field(ge=0, le=100, description="100 only when completed")
    completedFiles: int = Field(ge=0)
    totalFiles: int = Field(ge=0)
    availableFiles: int = Field(ge=0)
    missingFileIds: list[int]
    attempts: int = Field(ge=0)
    downloadUrl: str | None = Field(
        description="a fresh presigned link when completed (null once revoked, and for a result in parts)"
    )
    size: int | None = Field(description="bytes behind downloadUrl (a result in parts: of all its parts)")
    error: str | None
    createdAt: str = Field(description="ISO-8601, UTC")
    updatedAt: str
    completedAt: str | None
    revokedAt: str | None = Field(
        default=None,
        description="ISO-8601, UTC: when DELETE revoked the completed job's result (the status stays completed, "
        "downloadUrl is null and downloads answer 410); absent until then",
    )
    reused: bool | None = Field(
        default=None,
        description="true when the job completed with a bundle an earlier job built from the same ids and the same "
        "sources (their ETags), for any tenant: no byte was read, and its manifest.json names that job; absent "
        "otherwise",
    )
    version: int = Field(ge=0, description="increases by one on every write")
    phase: PhaseName
    bytesDone: int = Field(ge=0)
    bytesTotal: int = Field(ge=0)
    callback: CallbackState | None = Field(description="webhook delivery, when a callback_url was given")
    parts: list[BundlePart] | None = Field(
        description="a result written in parts, in order (downloadUrl is then null; size is their total); "
        "null for a single zip or file"
    )


class Accepted(_Body):
    """initiate: 202 for a new job, 200 for an idempotent replay."""

    jobId: str = Field(json_schema_extra={"format": "uuid"})
    status: JobStatusName = Field(description="queued for a new job; the current status on a replay")
    totalFileIds: int = Field(ge=1, description="unique ids")
    estimatedTimeSeconds: int = Field(ge=0)


class Estimate(_Body):
    availableFileIds: list[int]
    missingFileIds: list[int]
    uncheckedFileIds: list[int] = Field(
        default_factory=list,
        description="ids the object store had not answered for within the estimate's time budget "
        "(empty when every id was checked); their bytes are not in totalBytes: ask again for these",
    )
    totalBytes: int = Field(ge=0)
    estimatedTimeSeconds: int = Field(ge=0)


class CheckResult(_Body):
    file_id: int
    available: bool
    s3Key: str | None
    size: int | None


class StartResult(_Body):
    file_id: int
    status: Literal["completed", "failed"]
    downloadUrl: str | None
    size: int | None
    processingTimeMs: int = Field(ge=0)
    message: str


class DownloadRedirect(_Body):
    """The body of the 302 (the link is also in Location)."""

    downloadUrl: str
    expiresInSeconds: int


class Health(_Body):
    status: Literal["healthy", "unhealthy"]
    checks: dict[str, Literal["ok", "error"]]
    error: str | None = Field(default=None, description="names the failing checks (503 only)")


class Live(_Body):
    status: Literal["alive"]


class Index(_Body):
    message: str
    docs: str


class Stats(_Body):
    """GET /v1/stats: live numbers for the dashboard."""

    queueDepth: int = Field(ge=0, description="messages waiting in the Celery queue")
    jobsInProgress: int = Field(ge=0)
    jobsFinished: dict[str, int] = Field(description="finished jobs by terminal state, since the counters began")


class TimelineBucket(_Body):
    """One bucket of GET /v1/stats/timeline (every API process and worker together)."""

    t: str = Field(description="the bucket's start, ISO-8601 UTC")
    requests: int = Field(ge=0, description="requests answered")
    errors4xx: int = Field(ge=0)
    errors5xx: int = Field(ge=0)
    p50Ms: float | None = Field(description="latency percentiles in ms (within 20 %); null without requests")
    p95Ms: float | None
    p99Ms: float | None
    jobsCompleted: int = Field(ge=0)
    jobsFailed: int = Field(ge=0)
    jobsCancelled: int = Field(ge=0)
    queueDepth: int | None = Field(description="the bucket's last sample; null when none was taken")
    inProgress: int | None


class Timeline(_Body):
    """GET /v1/stats/timeline: the last minutes, oldest bucket first."""

    stepSeconds: int = Field(ge=10, description="the width of each bucket")
    buckets: list[TimelineBucket]


class ErrorEntry(_Body):
    """One error the service met: a 5xx answer, a failed job or a failed webhook delivery."""

    time: str = Field(description="ISO-8601 UTC")
    source: Literal["api", "worker", "webhook"]
    message: str
    status: int | None = Field(default=None, description="the HTTP status (api)")
    route: str | None = Field(default=None, description="method and route (api)")
    jobId: str | None = None
    requestId: str | None = None
    traceId: str | None = None
    sentryEventId: str | None = Field(default=None, description="the Sentry event sent for it, if any")


class ErrorLog(_Body):
    """GET /v1/errors: the caller's newest errors (with API keys, only its own)."""

    errors: list[ErrorEntry]


class JobPage(_Body):
    """GET /v1/downloads: one page of the caller's jobs, newest first."""

    jobs: list[JobStatus]
    nextCursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class JobSummary(_Body):
    """GET /v1/downloads/summary: the caller's jobs by state."""

    counts: dict[JobStatusName, int]
    total: int = Field(ge=0)
