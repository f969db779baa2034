"""The job record: its states, and the status JSON every reader gets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class JobState(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


TERMINAL_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
"""The states a job never leaves, in the order they are listed (API, metrics). The one
definition: the client, SSE and OpenAPI derive theirs from it, and tests/unit/test_store.py
pins the copies that cannot import it (``store/lua/update.lua``, the dashboard's script)."""
_TERMINAL = frozenset(TERMINAL_STATES)
_STATES = {state.value: state for state in JobState}


class Phase(StrEnum):
    QUEUED = "queued"
    CHECKING = "checking"
    BUNDLING = "bundling"
    UPLOADING = "uploading"
    DONE = "done"


_PHASES = {phase.value: phase for phase in Phase}


def utcnow() -> str:
    """ISO-8601 in UTC with milliseconds, e.g. ``2026-11-28T14:32:33.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(value: str | None) -> int:
    return int(value) if value else 0


@dataclass
class Job:
    """A job as stored in its Redis hash (every field a string there)."""

    job_id: str
    status: JobState
    file_ids: list[int]
    owner: str = ""
    phase: Phase = Phase.QUEUED
    progress: int = 0
    completed_files: int = 0
    available_files: int = 0
    missing_file_ids: list[int] = field(default_factory=list)
    attempts: int = 0
    redeliveries: int = 0
    result_key: str = ""
    size: int | None = None
    error: str | None = None
    created_at: str = ""
    updated_at: str = ""
    completed_at: str | None = None
    version: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    delay_ms: int | None = None
    callback_url: str = ""
    callback: dict[str, Any] | None = None
    revoked_at: str | None = None
    #: A bundle written in parts (``delineate/jobs/parts.py``): ``[{"index", "size", "sha256",
    #: "files"}]``, ``files`` counting its entries; None for one zip or object.
    parts: list[dict[str, Any]] | None = None
    reused_from: str = ""  # the job whose bundle this one completed with ("": its own, or none)

    @property
    def total_files(self) -> int:
        return len(self.file_ids)

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> Job:
        get = raw.get  # every status read decodes one of these: kept to plain lookups
        size, delay, callback, parts = get("size"), get("delayMs"), get("callback"), get("parts")
        return cls(
            job_id=raw["jobId"],
            status=_STATES[raw["status"]],
            file_ids=orjson.loads(get("fileIds") or "[]"),
            owner=get("owner", ""),
            phase=_PHASES[get("phase") or "queued"],
            progress=_int(get("progress")),
            completed_files=_int(get("completedFiles")),
            available_files=_int(get("availableFiles")),
            missing_file_ids=orjson.loads(get("missingFileIds") or "[]"),
            attempts=_int(get("attempts")),
            redeliveries=_int(get("redeliveries")),
            result_key=get("resultKey", ""),
            size=int(size) if size else None,
            error=get("error") or None,
            created_at=get("createdAt", ""),
            updated_at=get("updatedAt", ""),
            completed_at=get("completedAt") or None,
            version=_int(get("version")),
            bytes_done=_int(get("bytesDone")),
            bytes_total=_int(get("bytesTotal")),
            delay_ms=int(delay) if delay else None,
            callback_url=get("callbackUrl", ""),
            callback=orjson.loads(callback) if callback else None,
            revoked_at=get("revokedAt") or None,
            parts=orjson.loads(parts) if parts else None,
            reused_from=get("reusedFrom", ""),
        )

    def to_status(self, presign: Callable[[Job], str] | None = None) -> dict[str, Any]:
        """The public status JSON (design.md). ``presign`` makes a fresh download link; a
        revoked job never gets one, and is the only one whose status has ``revokedAt``. A bundle
        in parts has no one link (null): each part is ``GET /v1/download/{jobId}?part=N``."""
        url = None
        if self.status is JobState.COMPLETED and self.result_key and presign is not None and not self.revoked_at:
            url = None if self.parts else presign(self)
        status: dict[str, Any] = {
            "jobId": self.job_id,
            "status": self.status.value,
            "progress": self.progress,
            "completedFiles": self.completed_files,
            "totalFiles": self.total_files,
            "availableFiles": self.available_files,
            "missingFileIds": self.missing_file_ids,
            "attempts": self.attempts,
            "downloadUrl": url,
            "size": self.size,
            "error": self.error,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "completedAt": self.completed_at,
            "version": self.version,
            "phase": self.phase.value,
            "bytesDone": self.bytes_done,
            "bytesTotal": self.bytes_total,
            "callback": self.callback,
            "parts": self.parts,
        }
        if self.revoked_at:
            status["revokedAt"] = self.revoked_at
        if self.reused_from:  # (absent otherwise, like revokedAt: every other status is unchanged)
            status["reused"] = True
        return status


def encode_fields(**fields: Any) -> dict[str, str]:
    """Python values → hash field strings (camelCase names as stored)."""
    encoded: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            encoded[name] = ""
        elif isinstance(value, (list, dict)):
            encoded[name] = orjson.dumps(value).decode()
        elif isinstance(value, StrEnum):
            encoded[name] = value.value
        else:
            encoded[name] = str(value)
    return encoded
