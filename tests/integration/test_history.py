"""Download history: GET /v1/downloads and /v1/downloads/summary against real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from delineate import create_app
from delineate.models import JobState
from delineate.store.keys import history_key, job_key

pytestmark = pytest.mark.contract  # run in both FAST_PATHS modes by `make test`


def _make(settings: Any, **overrides: Any) -> FlaskClient:
    return create_app(settings.replace(**overrides)).test_client()


def _initiate(client: FlaskClient, key: str | None = None, ids: list[int] | None = None) -> str:
    headers = {"X-API-Key": key} if key else {}
    response = client.post("/v1/download/initiate", json={"file_ids": ids or [70001]}, headers=headers)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["jobId"])


def _page(client: FlaskClient, query: str = "", key: str | None = None) -> dict[str, Any]:
    headers = {"X-API-Key": key} if key else {}
    response = client.get(f"/v1/downloads{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def test_lists_only_the_callers_jobs(make_settings: Any) -> None:
    client = _make(make_settings(), api_keys={"ka": "alice", "kb": "bob"}, max_active_jobs_per_key=1000)
    alice = [_initiate(client, "ka") for _ in range(3)]
    bob = [_initiate(client, "kb") for _ in range(2)]
    assert [j["jobId"] for j in _page(client, key="ka")["jobs"]] == alice[::-1]  # newest first
    assert [j["jobId"] for j in _page(client, key="kb")["jobs"]] == bob[::-1]
    assert client.get("/v1/downloads").status_code == 401
    summary = client.get("/v1/downloads/summary", headers={"X-API-Key": "kb"}).get_json()
    assert summary["total"] == 2 and summary["counts"]["queued"] == 2


def test_paging_250_jobs_with_new_jobs_between_pages(make_settings: Any) -> None:
    client = _make(make_settings())
    created = [_initiate(client) for _ in range(250)]
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = _page(client, f"?limit=100{cursor}")
        seen += [j["jobId"] for j in page["jobs"]]
        pages += 1
        _initiate(client)  # new jobs arrive while paging: they must not shift the pages
        if not page["nextCursor"]:
            break
        cursor = f"&cursor={page['nextCursor']}"
    assert pages == 3
    assert seen == created[::-1]  # no duplicates, no gaps, newest first


def test_status_filter_follows_state_changes(make_settings: Any) -> None:
    settings = make_settings()
    client = _make(settings)
    jobs = [_initiate(client) for _ in range(4)]
    store = create_app(settings).extensions["delineate"].store
    store.update(jobs[0], status=JobState.PROCESSING)
    store.update(jobs[1], status=JobState.CANCELLED)
    store.update(jobs[2], status=JobState.PROCESSING)
    store.update(jobs[2], status=JobState.COMPLETED)
    assert [j["jobId"] for j in _page(client, "?status=processing")["jobs"]] == [jobs[0]]
    assert [j["jobId"] for j in _page(client, "?status=cancelled,completed")["jobs"]] == [jobs[2], jobs[1]]
    assert [j["jobId"] for j in _page(client, "?status=queued")["jobs"]] == [jobs[3]]
    counts = client.get("/v1/downloads/summary").get_json()["counts"]
    assert counts == {"queued": 1, "processing": 1, "completed": 1, "failed": 0, "cancelled": 1}


def test_expired_jobs_leave_the_list(make_settings: Any) -> None:
    settings = make_settings(job_ttl_seconds=1)
    client = _make(settings)
    old = [_initiate(client) for _ in range(3)]
    time.sleep(2.2)
    fresh = _initiate(client)
    assert [j["jobId"] for j in _page(client)["jobs"]] == [fresh]
    assert client.get("/v1/downloads/summary").get_json()["total"] == 1
    redis = create_app(settings).extensions["delineate"].redis
    queued = redis.zrange(history_key("", "queued"), 0, -1)
    assert not set(old) & set(queued)  # the stale entries were removed, not only hidden


def test_a_page_steps_over_gone_records_at_its_head(make_settings: Any) -> None:
    """The page's records are read first and the rest of the scan only when some are gone:
    the newest two here, whose hashes went without the history noticing."""
    settings = make_settings()
    client = _make(settings)
    oldest_first = [_initiate(client) for _ in range(5)]
    redis = create_app(settings).extensions["delineate"].redis
    redis.delete(*(job_key(job_id) for job_id in oldest_first[-2:]))
    first = _page(client, "?limit=2")
    assert [j["jobId"] for j in first["jobs"]] == oldest_first[2::-1][:2]
    assert [j["jobId"] for j in _page(client, f"?limit=2&cursor={first['nextCursor']}")["jobs"]] == oldest_first[:1]
    assert not set(oldest_first[-2:]) & set(redis.zrange(history_key("", "queued"), 0, -1))


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=abc", "limit"),
        ("?status=done", "status"),
        ("?cursor=%%%", "cursor"),
        ("?cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("?colour=blue", "colour"),
    ],
)
def test_bad_parameters_are_400_naming_them(client: FlaskClient, query: str, parameter: str) -> None:
    response = client.get(f"/v1/downloads{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert parameter in body["message"] and body["details"][0]["path"] == f"query {parameter}"
