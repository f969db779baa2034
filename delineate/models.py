"""The job record: its states, and the status JSON every reader gets."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class Phase(StrEnum):
    QUEUED = "queued"
    CHECKING = "checking"
    BUNDLING = "bundling"
    UPLOADING = "uploading"
    DONE = "done"


def utcnow() -> str:
    """ISO-8601 in UTC with milliseconds, e.g. ``2026-11-28T14:32:33.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(value: str | None, default: int = 0) -> int:
    return int(value) if value not in (None, "") else default


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

    @property
    def total_files(self) -> int:
        return len(self.file_ids)

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> Job:
        return cls(
            job_id=raw["jobId"],
            status=JobState(raw["status"]),
            file_ids=json.loads(raw.get("fileIds") or "[]"),
            owner=raw.get("owner", ""),
            phase=Phase(raw.get("phase") or "queued"),
            progress=_int(raw.get("progress")),
            completed_files=_int(raw.get("completedFiles")),
            available_files=_int(raw.get("availableFiles")),
            missing_file_ids=json.loads(raw.get("missingFileIds") or "[]"),
            attempts=_int(raw.get("attempts")),
            redeliveries=_int(raw.get("redeliveries")),
            result_key=raw.get("resultKey", ""),
            size=_int(raw["size"]) if raw.get("size") else None,
            error=raw.get("error") or None,
            created_at=raw.get("createdAt", ""),
            updated_at=raw.get("updatedAt", ""),
            completed_at=raw.get("completedAt") or None,
            version=_int(raw.get("version")),
            bytes_done=_int(raw.get("bytesDone")),
            bytes_total=_int(raw.get("bytesTotal")),
            delay_ms=_int(raw["delayMs"]) if raw.get("delayMs") else None,
            callback_url=raw.get("callbackUrl", ""),
            callback=json.loads(raw["callback"]) if raw.get("callback") else None,
        )

    def to_status(self, presign: Callable[[Job], str] | None = None) -> dict[str, Any]:
        """The public status JSON (design.md). ``presign`` makes a fresh download link."""
        url = None
        if self.status is JobState.COMPLETED and self.result_key and presign is not None:
            url = presign(self)
        return {
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
        }


def encode_fields(**fields: Any) -> dict[str, str]:
    """Python values → hash field strings (camelCase names as stored)."""
    encoded: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            encoded[name] = ""
        elif isinstance(value, (list, dict)):
            encoded[name] = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, StrEnum):
            encoded[name] = value.value
        else:
            encoded[name] = str(value)
    return encoded
