"""A small Python client for the delineate API, for scripts and for the CLI.

    from delineate.client.api import Client

    with Client("http://localhost:3000") as api:
        job = api.initiate([70000, 70007])
        for status in api.watch(job["jobId"]):
            print(status["status"], status["progress"])
        api.download_parts(job["jobId"], "out.zip")   # resumed on a dropped connection, verified

Errors are :class:`ApiError` (and subclasses) carrying the server's error body and request
id; :class:`VerificationError` when a downloaded result does not match its manifest
(:mod:`delineate.client.errors`, :mod:`delineate.client.verify`; both re-exported here).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from delineate.client.errors import (
    ApiError,
    AuthError,
    ClientError,
    JobFailed,
    MultipleParts,
    Unreachable,
    VerificationError,
    raise_for,
)
from delineate.client.errors import NotFound as NotFound  # (re-exported, as every error is here)
from delineate.client.errors import RateLimited as RateLimited
from delineate.client.errors import Revoked as Revoked
from delineate.client.verify import verify, verify_part
from delineate.models import TERMINAL_STATES, JobState

TERMINAL = frozenset(state.value for state in TERMINAL_STATES)
_UNSUCCESSFUL = TERMINAL - {JobState.COMPLETED.value}

DOWNLOAD_CHUNK_BYTES = 256 * 1024
"""Bytes written to disk at a time while downloading."""

MAX_RESUMES = 20
"""How many times a dropped download is resumed with a Range request before giving up."""

MAX_RATE_LIMIT_WAITS = 5
"""How many 429 answers a call waits out (per Retry-After) before raising."""


class Client:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"User-Agent": "delineate-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing -----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(MAX_RATE_LIMIT_WAITS + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise Unreachable(f"cannot reach {self.base_url}: {exc}") from None
            if response.status_code != 429 or attempt == MAX_RATE_LIMIT_WAITS:
                break
            self._sleep(_retry_after(response))
        raise_for(response)
        return response

    # -- the API ------------------------------------------------------------------------

    def initiate(
        self,
        file_ids: Iterable[int],
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> dict[str, Any]:
        """Start a job. Always sends an Idempotency-Key, so a retried call starts one job."""
        body: dict[str, Any] = {"file_ids": list(file_ids)}
        if callback_url:
            body["callback_url"] = callback_url
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return dict(self._request("POST", "/v1/download/initiate", json=body, headers=headers).json())

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/download/status/{job_id}").json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or processing job; a completed one is revoked (see :meth:`revoke`)."""
        return dict(self._request("DELETE", f"/v1/download/{job_id}").json())

    def revoke(self, job_id: str) -> dict[str, Any]:
        """Withdraw a completed job's result: its bundle is deleted, links handed out stop
        working, downloads answer 410. Idempotent. Refuses (:class:`ClientError`) a job that
        has not completed, rather than cancel it.
        """
        status = self.status(job_id)
        if status.get("status") != JobState.COMPLETED.value:
            raise ClientError(
                f"job {job_id} is {status.get('status')}: only a completed job's result can be revoked"
                " (to stop a running job, cancel it)"
            )
        return dict(self._request("DELETE", f"/v1/download/{job_id}").json())

    def estimate(self, file_ids: Iterable[int]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/download/estimate", json={"file_ids": list(file_ids)}).json())

    def jobs(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """One page of the caller's jobs, newest first: ``{"jobs": [...], "nextCursor"}``."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return dict(self._request("GET", "/v1/downloads", params=params).json())

    def download_url(self, job_id: str, part: int | None = None) -> str:
        """A fresh presigned link to the result, or to its part ``part`` (the 302's Location)."""
        params = {"part": part} if part is not None else None
        response = self._request("GET", f"/v1/download/{job_id}", params=params, follow_redirects=False)
        return response.headers["location"]

    # -- waiting ------------------------------------------------------------------------

    def watch(
        self, job_id: str, poll_interval: float = 1.0, unreachable_for: float = 120.0
    ) -> Iterator[dict[str, Any]]:
        """Yield status snapshots until the job is terminal.

        Uses the SSE stream; when it cannot be opened or is cut, reconnects with
        Last-Event-ID, and falls back to polling (with backoff) while it keeps failing.
        Snapshots never go backwards: an older ``version`` than one already yielded is skipped.
        An API that cannot be reached is retried for ``unreachable_for`` seconds (a restart).
        """
        last_version = -1
        failures = 0
        use_stream = True
        down_since: float | None = None
        while True:
            if use_stream:
                try:
                    for status in self._stream(job_id, last_version):
                        if status.get("version", 0) > last_version:
                            last_version = status.get("version", 0)
                            failures = 0
                            yield status
                        if status.get("status") in TERMINAL:
                            return
                except ApiError as exc:
                    if isinstance(exc, AuthError):
                        raise
                    # No stream here (an old server, a proxy): poll. An unknown job
                    # raises NotFound from the status call below.
                    use_stream = exc.status_code not in (404, 405, 501)
                    failures += 1
                except (httpx.TransportError, SSEError, json.JSONDecodeError):
                    failures += 1
            # The stream ended early or failed: poll once, then try the stream again.
            try:
                status = self.status(job_id)
                down_since = None
            except Unreachable:
                # The API may be restarting: keep trying for a while before giving up.
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > unreachable_for:
                    raise
                failures += 1
                self._sleep(min(poll_interval * (2 ** min(failures, 4)), 15) * random.uniform(0.5, 1.0))
                continue
            if status.get("version", 0) > last_version:
                last_version = status.get("version", 0)
                yield status
            if status.get("status") in TERMINAL:
                return
            self._sleep(min(poll_interval * (2 ** min(failures, 4)), 15) * random.uniform(0.5, 1.0))

    def _stream(self, job_id: str, last_version: int) -> Iterator[dict[str, Any]]:
        headers = {"Last-Event-ID": str(last_version)} if last_version >= 0 else {}
        timeout = httpx.Timeout(10.0, read=60.0)  # the server's heartbeat keeps reads alive
        with connect_sse(
            self._http, "GET", f"/v1/download/stream/{job_id}", headers=headers, timeout=timeout
        ) as source:
            if source.response.status_code >= 400:
                source.response.read()
                raise_for(source.response)
            for event in source.iter_sse():
                if event.data:
                    yield dict(json.loads(event.data))

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job is terminal; :raise TimeoutError: past ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: dict[str, Any] = {}
        for last in self.watch(job_id):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {last.get('status')} after {timeout} s")
        return last

    # -- downloading --------------------------------------------------------------------

    def download(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        on_bytes: Callable[[int, int | None], None] = lambda done, total: None,
    ) -> Path:
        """Fetch a completed job's result to ``path``, resuming and verifying it.

        Streams into a temporary file beside ``path``, resumes with ``Range`` after a dropped
        connection, verifies the result (each zip entry against ``manifest.json`` sha256;
        a single-file result against its size) and only then renames it into place.

        :raise JobFailed: the job is failed or cancelled.
        :raise VerificationError: the bytes do not match.
        :raise MultipleParts: the result is in parts (:meth:`download_parts` fetches them).
        """
        status = self._completed(job_id)
        if status.get("parts"):
            raise MultipleParts(f"job {job_id}'s result is in {len(status['parts'])} parts: use download_parts")
        return self._save(job_id, None, Path(path), on_bytes, lambda tmp: verify(tmp, status.get("size")))

    def download_parts(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        on_bytes: Callable[[int, int | None], None] = lambda done, total: None,
    ) -> list[Path]:
        """Fetch every file of a completed job's result: ``[path]`` for one zip or file (as
        :meth:`download`); a result in parts (its status lists them) as :func:`part_path`
        files beside ``path``, each resumed like :meth:`download` and verified against its
        status entry (size, sha256) and its own manifest. A part already saved that
        verifies is kept, so a second call fetches only what the first did not finish.

        :raise JobFailed: the job is failed or cancelled.
        :raise VerificationError: the bytes do not match.
        """
        status = self._completed(job_id)
        parts: list[dict[str, Any]] = status.get("parts") or []
        if not parts:
            return [self.download(job_id, path, on_bytes)]
        total, offset, saved = sum(p["size"] for p in parts), 0, []
        for part in parts:
            target = part_path(Path(path), part["index"])
            try:
                verify_part(target, part, job_id, len(parts))  # saved by an earlier call?
            except (OSError, VerificationError):
                self._save_part(job_id, part, len(parts), target, on_bytes, (offset, total))
            offset += part["size"]
            on_bytes(offset, total)
            saved.append(target)
        return saved

    def _save_part(
        self,
        job_id: str,
        part: dict[str, Any],
        count: int,
        target: Path,
        on_bytes: Callable[[int, int | None], None],
        at: tuple[int, int],
    ) -> None:
        """Save one part; ``on_bytes`` counts over the whole result (``at``: the bytes of the
        parts before this one, and of them all)."""
        offset, total = at

        def progress(done: int, _: int | None) -> None:
            on_bytes(offset + done, total)

        def check(tmp: Path) -> None:
            verify_part(tmp, part, job_id, count)

        self._save(job_id, part["index"], target, progress, check)

    def _completed(self, job_id: str) -> dict[str, Any]:
        status = self.status(job_id)
        if status["status"] in _UNSUCCESSFUL:
            raise JobFailed(status)
        return status

    def _save(
        self,
        job_id: str,
        part: int | None,
        target: Path,
        on_bytes: Callable[[int, int | None], None],
        check: Callable[[Path], object],
    ) -> Path:
        """Stream the result (or part) into a temporary file beside ``target``, ``check`` it,
        and only then rename it into place."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            self._fetch(job_id, tmp, on_bytes, part)
            check(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def _fetch(
        self, job_id: str, tmp: Path, on_bytes: Callable[[int, int | None], None], part: int | None = None
    ) -> None:
        url = self.download_url(job_id, part)
        done = 0
        total: int | None = None
        with open(tmp, "wb") as out, httpx.Client(timeout=httpx.Timeout(30.0)) as s3:
            for _ in range(MAX_RESUMES + 1):
                headers = {"Range": f"bytes={done}-"} if done else {}
                try:
                    with s3.stream("GET", url, headers=headers) as response:
                        if response.status_code == 403:  # the link expired: ask for a new one
                            url = self.download_url(job_id, part)
                            continue
                        if response.status_code not in (200, 206):
                            response.read()
                            raise ClientError(f"download failed: HTTP {response.status_code}")
                        if done and response.status_code == 200:  # Range ignored: start over
                            out.seek(0)
                            out.truncate()
                            done = 0
                        if total is None:
                            total = _total_size(response, done)
                        for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                            out.write(chunk)
                            done += len(chunk)
                            on_bytes(done, total)
                    if total is None or done >= total:
                        return
                except (httpx.TransportError, httpx.RemoteProtocolError):
                    pass  # dropped mid-transfer: resume from `done`
                out.flush()
        raise ClientError(f"download of job {job_id} kept failing after {MAX_RESUMES} resumes")


def part_path(path: Path, index: int) -> Path:
    """Where part ``index`` of a result in parts is saved: ``out.zip`` → ``out-part-0001.zip``."""
    return path.with_name(f"{path.stem}-part-{index:04d}{path.suffix or '.zip'}")


def _total_size(response: httpx.Response, offset: int) -> int | None:
    content_range = response.headers.get("content-range", "")
    if "/" in content_range:
        size = content_range.rsplit("/", 1)[1]
        return int(size) if size.isdigit() else None
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "1")
    try:
        return max(0.0, min(float(value), 60.0))
    except ValueError:
        return 1.0
