"""Exports of 10,000 ids (design.md, "Large exports"), against the real stack: a gunicorn API
(the fast lane in front of Flask with FAST_PATHS, Flask alone without) and a Celery worker,
with the simulated delay off.

Initiate and estimate take up to MAX_FILE_IDS ids in a body of up to MAX_INITIATE_BODY_BYTES;
every other route keeps MAX_BODY_BYTES. A 10,000-id job runs to its end with the right counts,
its status, history page and bundle manifest carry them, and an estimate of 10,000 ids
answers within its budget.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from delineate import create_app
from delineate.api import sources
from delineate.config import Settings
from delineate.dev.seed import SAMPLE_IDS
from tests.support.stack import Service, poll_status, start_api, start_worker

MAX_IDS = 10_000
AVAILABLE = list(SAMPLE_IDS[:3])
"""Seeded objects (tests/conftest.py seeds SAMPLE_IDS): the bundle stays small."""
ABSENT = [200_000 + n for n in range(MAX_IDS - len(AVAILABLE))]
"""Ids no test ever uploads."""
IDS = [*AVAILABLE, *ABSENT]

INITIATE = "/v1/download/initiate"
ESTIMATE = "/v1/download/estimate"


@dataclass
class Stack:
    base: str
    settings: Settings
    api: Service
    worker: Service

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base + path, timeout=60, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def stack(make_settings: Callable[..., Settings], workdir: Path) -> Iterator[Stack]:
    settings = make_settings(download_delay_enabled=False)
    worker = start_worker(settings, workdir, "worker-large-ids", concurrency=2)
    try:
        api, base = start_api(settings, workdir, "api-large-ids", workers=1)
    except Exception:
        worker.stop()
        raise
    try:
        yield Stack(base, settings, api, worker)
    finally:
        api.stop()
        worker.stop()


def _body(ids: list[int]) -> bytes:
    return json.dumps({"file_ids": ids}).encode()


def _error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    body: dict[str, Any] = response.json()
    assert body["error"] == error and body["requestId"] == response.headers["X-Request-ID"]
    return body


# -- the limits ----------------------------------------------------------------------------


@pytest.mark.contract
@pytest.mark.parametrize("path", [INITIATE, ESTIMATE])
def test_more_ids_than_max_file_ids_is_400_naming_the_limit(stack: Stack, path: str) -> None:
    body = _body([*IDS, 300_000])  # 10,001 ids: ~70 KB, past MAX_BODY_BYTES but within the route's limit
    assert stack.settings.max_body_bytes < len(body) < stack.settings.max_initiate_body_bytes
    answer = stack.post(path, content=body, headers={"Content-Type": "application/json"})
    refused = _error(answer, 400, "invalid_request")
    assert "10000" in refused["message"] and "MAX_FILE_IDS" in refused["message"]
    assert [d["path"] for d in refused["details"]] == ["$.file_ids"]


@pytest.mark.contract
@pytest.mark.parametrize("path", [INITIATE, ESTIMATE])
def test_a_body_past_max_initiate_body_bytes_is_413(stack: Stack, path: str) -> None:
    limit = stack.settings.max_initiate_body_bytes
    raw = b'{"file_ids": [' + b"70000, " * (limit // 7) + b"70000]}"  # valid JSON, a byte too many
    assert len(raw) > limit
    _error(stack.post(path, content=raw, headers={"Content-Type": "application/json"}), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut at the limit all the same
        yield raw[: len(raw) // 2]
        yield raw[len(raw) // 2 :]

    chunked = stack.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    _error(chunked, 413, "payload_too_large")


@pytest.mark.contract
def test_other_routes_keep_max_body_bytes(stack: Stack) -> None:
    # The same ~70 KB that initiate takes is too large for check (MAX_BODY_BYTES, 64 KiB).
    padded = b'{"file_id": 70000' + b" " * stack.settings.max_body_bytes + b"}"
    response = stack.post("/v1/download/check", content=padded, headers={"Content-Type": "application/json"})
    _error(response, 413, "payload_too_large")
    small = stack.post("/v1/download/check", json={"file_id": 70000})
    assert small.status_code == 200 and small.json()["available"] is True


def test_the_openapi_document_names_the_limits(stack: Stack) -> None:
    spec = stack.get("/openapi.json").json()
    ids = spec["components"]["schemas"]["FileIdsBody"]["properties"]["file_ids"]
    assert ids["maxItems"] == MAX_IDS
    for path in (INITIATE, ESTIMATE):
        operation = spec["paths"][path]["post"]
        assert f"1-{MAX_IDS}" in operation["description"]
        assert str(stack.settings.max_initiate_body_bytes) in operation["responses"]["413"]["description"]
    check = spec["paths"]["/v1/download/check"]["post"]
    assert str(stack.settings.max_body_bytes) in check["responses"]["413"]["description"]


# -- 10,000 ids end to end -------------------------------------------------------------------


def test_an_estimate_of_ten_thousand_ids_answers_within_its_budget(stack: Stack) -> None:
    from delineate.api.blueprints.downloads import ESTIMATE_BUDGET_SECONDS

    began = time.monotonic()
    response = stack.post(ESTIMATE, content=_body(IDS), headers={"Content-Type": "application/json"})
    took = time.monotonic() - began
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert took < ESTIMATE_BUDGET_SECONDS + 2, f"{took:.1f} s"
    checked = set(body["availableFileIds"]) | set(body["missingFileIds"])
    assert checked | set(body["uncheckedFileIds"]) == set(IDS)
    assert len(body["availableFileIds"]) + len(body["missingFileIds"]) + len(body["uncheckedFileIds"]) == MAX_IDS
    assert set(body["availableFileIds"]) == set(AVAILABLE) & checked
    print(f"\nestimate of {MAX_IDS} ids: {took:.2f} s, {len(body['uncheckedFileIds'])} unchecked")


@pytest.mark.parametrize("page", [7, 1000])
def test_listed_and_headed_estimates_agree(stack: Stack, monkeypatch: pytest.MonkeyPatch, page: int) -> None:
    """LIST pages (of ``page`` keys, so several) settle the ids they reach as the HEADs would;
    a sparse stretch hands the rest to HEADs; ids of every digit count, so key order is not
    number order."""
    client = create_app(stack.settings).test_client()
    ids = [*SAMPLE_IDS, *range(69_990, 70_100), 10_000, 99_999_999, 1_000_000, 700_000, 7_000_000, 70_994]
    ids = list(dict.fromkeys(ids))

    def estimate() -> dict[str, Any]:
        response = client.post(ESTIMATE, json={"file_ids": ids})
        assert response.status_code == 200, response.get_data(as_text=True)
        body: dict[str, Any] = response.get_json()
        assert body["uncheckedFileIds"] == []
        return body

    monkeypatch.setattr(sources, "LIST_MIN_IDS", 1_000_000)
    headed = estimate()
    assert set(headed["availableFileIds"]) == set(SAMPLE_IDS)
    monkeypatch.setattr(sources, "LIST_MIN_IDS", 1)
    monkeypatch.setattr(sources, "LIST_PAGE_KEYS", page)
    monkeypatch.setattr(sources, "LIST_MIN_SETTLED_PER_PAGE", 0)
    assert estimate() == headed
    monkeypatch.setattr(sources, "LIST_MIN_SETTLED_PER_PAGE", 10_000)  # "sparse" after one page: HEADs
    assert estimate() == headed


def test_a_ten_thousand_id_job_runs_to_the_end(stack: Stack) -> None:
    began = time.monotonic()
    accepted = stack.post(INITIATE, content=_body(IDS), headers={"Content-Type": "application/json"})
    initiated = time.monotonic() - began
    assert accepted.status_code == 202, accepted.text[:500]
    assert accepted.json()["totalFileIds"] == MAX_IDS
    job_id = accepted.json()["jobId"]

    done = poll_status(lambda i: stack.get(f"/v1/download/status/{i}").json(), job_id, {"completed", "failed"}, 120)
    ran = time.monotonic() - began
    assert done["status"] == "completed", done.get("error")
    assert (done["totalFiles"], done["completedFiles"], done["availableFiles"]) == (MAX_IDS, MAX_IDS, len(AVAILABLE))
    assert done["missingFileIds"] == ABSENT  # in the order sent
    assert done["progress"] == 100

    # The status read of such a job, and a history page holding it.
    reads = []
    for _ in range(5):
        started = time.monotonic()
        assert stack.get(f"/v1/download/status/{job_id}").status_code == 200
        reads.append(time.monotonic() - started)
    page = stack.get("/v1/downloads", params={"limit": 5}).json()
    listed = next(job for job in page["jobs"] if job["jobId"] == job_id)
    assert listed["totalFiles"] == MAX_IDS and len(listed["missingFileIds"]) == len(ABSENT)

    # The bundle: the available files and a manifest naming every missing id.
    link = stack.get(f"/v1/download/{job_id}", follow_redirects=False)
    assert link.status_code == 302
    bundle = zipfile.ZipFile(io.BytesIO(httpx.get(link.headers["Location"], timeout=30).content))
    manifest = json.loads(bundle.read("manifest.json"))
    assert sorted(f["file_id"] for f in manifest["files"]) == AVAILABLE
    assert manifest["missing"] == sorted(ABSENT)
    assert sorted(bundle.namelist()) == sorted([*(f"{i}.zip" for i in AVAILABLE), "manifest.json"])
    print(
        f"\n{MAX_IDS}-id job: initiate {initiated * 1000:.0f} ms, completed after {ran:.1f} s; "
        f"status read {min(reads) * 1000:.1f}-{max(reads) * 1000:.1f} ms"
    )
