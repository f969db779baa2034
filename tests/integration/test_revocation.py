"""Revocation (``DELETE`` on a completed job), the audit line of every presigned link, and
``Cache-Control: no-store`` on the answers that carry one, against the real Redis, S3 and
Celery workers, through both entrances (the fast lane and Flask's own path)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from delineate import create_app
from delineate.api.edge.fast_lane import FastLane
from delineate.config import Settings
from delineate.jobs.sweeper import Sweeper, SweepReport
from delineate.jobs.webhooks import verify
from delineate.models import Job, JobState, Phase
from delineate.storage import Storage, bundle_key, source_key
from delineate.store import JobStore
from delineate.store.revocation import REVOKED_KEY, NotRevocable
from tests.support.receivers import WebhookReceiver
from tests.support.stack import Service, completed_job, poll_status, start_worker, wait_for

pytestmark = pytest.mark.contract  # run in both FAST_PATHS modes by `make test`

INITIATE = "/v1/download/initiate"
SECRET = "revocation-test-secret"


def _status(client: FlaskClient) -> Callable[[str], dict[str, Any]]:
    def get(job_id: str) -> dict[str, Any]:
        response = client.get(f"/v1/download/status/{job_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()  # type: ignore[no-any-return]

    return get


def _error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == error and body["requestId"] == response.headers["X-Request-ID"]
    return body  # type: ignore[no-any-return]


def _completed(client: FlaskClient, ids: list[int], **extra: Any) -> dict[str, Any]:
    response = client.post(INITIATE, json={"file_ids": ids, **extra})
    assert response.status_code == 202, response.get_json()
    done = poll_status(_status(client), response.get_json()["jobId"], {"completed", "failed"})
    assert done["status"] == "completed", done
    return done


def _bundle_job(store: JobStore, storage: Storage, owner: str = "") -> str:
    """A completed bundle job, written as a worker writes it, with its bundle in the bucket."""
    job = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, file_ids=[70000, 70007], owner=owner)
    store.create(job)
    key = bundle_key(job.job_id)
    storage.put(key, b"PK\x05\x06" + bytes(18), "application/zip")  # an empty zip is enough here
    store.update(job.job_id, status=JobState.PROCESSING, phase=Phase.CHECKING, attempts=1)
    store.update(
        job.job_id, status=JobState.COMPLETED, phase=Phase.DONE, progress=100, completedFiles=2,
        availableFiles=2, resultKey=key, size=22,
    )  # fmt: skip
    return job.job_id


def _audit_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "delineate.audit"]


# -- revoking a bundle ------------------------------------------------------------------------------


def test_revoking_a_completed_bundle_deletes_it_and_downloads_answer_410(
    client: FlaskClient, app: Flask, storage: Storage
) -> None:
    done = _completed(client, [70000, 70007, 70014])
    job_id = done["jobId"]
    assert done["downloadUrl"] and "revokedAt" not in done
    assert storage.head(bundle_key(job_id)) is not None

    response = client.delete(f"/v1/download/{job_id}")
    assert response.status_code == 202
    revoked = response.get_json()
    assert revoked["status"] == "completed" and revoked["downloadUrl"] is None
    assert revoked["version"] == done["version"] + 1
    at = datetime.fromisoformat(revoked["revokedAt"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - at).total_seconds()) < 30
    assert storage.head(bundle_key(job_id)) is None  # deleted by the request itself
    store: JobStore = app.extensions["delineate"].store
    assert job_id not in store.revoked_bundles(1000)  # nothing left for the sweeper

    status = _status(client)(job_id)
    assert status["revokedAt"] == revoked["revokedAt"] and status["downloadUrl"] is None
    body = _error(client.get(f"/v1/download/{job_id}"), 410, "revoked")
    assert body["details"]["revokedAt"] == revoked["revokedAt"] and body["details"]["downloadUrl"] is None

    again = client.delete(f"/v1/download/{job_id}")  # idempotent: nothing written again
    assert again.status_code == 202 and again.get_json() == revoked
    assert _status(client)(job_id)["version"] == revoked["version"]
    _error(client.get(f"/v1/download/{job_id}"), 410, "revoked")


def test_a_single_file_jobs_source_stays(client: FlaskClient, storage: Storage) -> None:
    done = _completed(client, [70000])
    job_id = done["jobId"]
    response = client.delete(f"/v1/download/{job_id}")
    assert response.status_code == 202 and response.get_json()["revokedAt"]
    assert storage.head(source_key(70000)) is not None  # a source is shared: only the job's link goes
    assert _status(client)(job_id)["downloadUrl"] is None
    _error(client.get(f"/v1/download/{job_id}"), 410, "revoked")


def test_failed_and_cancelled_jobs_still_answer_409(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())  # no worker on this database: a job stays queued
    client = app.test_client()
    store: JobStore = app.extensions["delineate"].store
    job_id = client.post(INITIATE, json={"file_ids": [70000]}).get_json()["jobId"]
    assert client.delete(f"/v1/download/{job_id}").get_json()["status"] == "cancelled"
    body = _error(client.delete(f"/v1/download/{job_id}"), 409, "conflict")
    assert body["details"]["status"] == "cancelled" and "revokedAt" not in body["details"]

    failed = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, file_ids=[70001])
    store.create(failed)
    store.update(failed.job_id, status=JobState.FAILED, phase=Phase.DONE, error="No files available for download")
    assert _error(client.delete(f"/v1/download/{failed.job_id}"), 409, "conflict")["details"]["status"] == "failed"
    with pytest.raises(NotRevocable):
        store.revoke(failed.job_id)
    with pytest.raises(NotRevocable) as gone:
        store.revoke(str(uuid.uuid4()))
    assert gone.value.job is None
    assert "revokedAt" not in _status(client)(failed.job_id)


def test_a_revoker_that_died_after_the_write_leaves_the_bundle_to_the_sweeper(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    app = create_app(settings)
    svc = app.extensions["delineate"]
    store: JobStore = svc.store
    storage = Storage(settings)
    bundle_id, single_id = _bundle_job(store, storage), completed_job(store)
    store.revoke(bundle_id)  # the write alone: as if the request died before deleting
    store.revoke(single_id)
    assert storage.head(bundle_key(bundle_id)) is not None
    assert set(store.revoked_bundles(1000)) == {bundle_id, single_id}
    assert store.redis.zscore(REVOKED_KEY, bundle_id) is not None

    sweeper = Sweeper(settings, store, storage, svc.redis, app.extensions["celery"])
    report = SweepReport()
    sweeper.delete_revoked(report)
    assert report.revoked_cleaned == 2 and store.revoked_bundles(1000) == []
    assert storage.head(bundle_key(bundle_id)) is None
    assert storage.head(source_key(70000)) is not None  # never a source


# -- the revoked webhook --------------------------------------------------------------------------


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver()
    yield hook
    hook.close()


def test_a_job_with_a_callback_gets_one_revoked_delivery(
    make_settings: Callable[..., Settings], workdir: Path, receiver: WebhookReceiver
) -> None:
    settings = make_settings(
        callback_allowed_hosts=(f"127.0.0.1:{receiver.port}",), callback_secret=SECRET, download_delay_enabled=False
    )
    worker: Service = start_worker(settings, workdir, "worker-revocation", concurrency=4)
    try:
        client = create_app(settings).test_client()
        job_id = _completed(client, [70000, 70007], callback_url=receiver.url)["jobId"]

        def events() -> list[str]:
            return [headers.get("x-delineate-event", "") for headers, _ in receiver.received]

        wait_for(lambda: "completed" in events(), 20, "the job's own delivery")
        assert client.delete(f"/v1/download/{job_id}").status_code == 202
        wait_for(lambda: "revoked" in events(), 20, "the revoked delivery")
        assert client.delete(f"/v1/download/{job_id}").status_code == 202  # asks again: still one
        time.sleep(2)
        assert sorted(events()) == ["completed", "revoked"]
        headers, body = next((h, b) for h, b in receiver.received if h.get("x-delineate-event") == "revoked")
        assert verify(body, headers["x-delineate-signature"], SECRET)
        status = json.loads(body)
        assert status["jobId"] == job_id and status["status"] == "completed"
        assert status["revokedAt"] and status["downloadUrl"] is None
    finally:
        worker.stop()


# -- both entrances: no-store and the audit line ------------------------------------------------------


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast-lane", "flask"])
def test_links_are_audited_and_never_cached_on_both_entrances(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture, fast_paths: bool
) -> None:
    settings = make_settings(fast_paths=fast_paths, trusted_proxy_hops=1)
    app = create_app(settings)
    assert isinstance(getattr(app.wsgi_app, "app", None), FastLane) is fast_paths
    store: JobStore = app.extensions["delineate"].store
    client = app.test_client()
    job_id = completed_job(store, owner="")
    headers = {"X-Request-ID": "audit-1", "X-Forwarded-For": "203.0.113.7"}
    caplog.set_level(logging.INFO, logger="delineate.audit")

    status = client.get(f"/v1/download/status/{job_id}", headers=headers)
    assert status.status_code == 200 and status.get_json()["downloadUrl"]
    assert status.headers["Cache-Control"] == "no-store"
    redirect = client.get(f"/v1/download/{job_id}", headers={**headers, "X-Request-ID": "audit-2"})
    assert redirect.status_code == 302 and redirect.headers["Cache-Control"] == "no-store"

    stream = client.get(f"/v1/download/stream/{job_id}", headers={**headers, "X-Request-ID": "audit-3"})
    assert stream.status_code == 200 and stream.headers["Cache-Control"] == "no-store"
    assert "event: completed" in stream.get_data(as_text=True)  # its data carries the link
    page = client.get("/v1/downloads", headers={**headers, "X-Request-ID": "audit-h"})
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert any(job["jobId"] == job_id and job["downloadUrl"] for job in page.get_json()["jobs"])
    # A poller reading the same link again is not written again; another client is.
    again = client.get(f"/v1/download/status/{job_id}", headers={**headers, "X-Request-ID": "audit-4"})
    assert again.get_json()["downloadUrl"] == status.get_json()["downloadUrl"]
    elsewhere = {"X-Request-ID": "audit-5", "X-Forwarded-For": "198.51.100.9"}
    assert client.get(f"/v1/download/status/{job_id}", headers=elsewhere).status_code == 200

    lines = _audit_lines(caplog)
    assert [(r.jobId, r.requestId, r.client, r.owner, r.via) for r in lines] == [  # type: ignore[attr-defined]
        (job_id, "audit-1", "203.0.113.7", "", "status"),
        (job_id, "audit-2", "203.0.113.7", "", "download"),
        (job_id, "audit-3", "203.0.113.7", "", "stream"),
        (job_id, "audit-h", "203.0.113.7", "", "history"),
        (job_id, "audit-5", "198.51.100.9", "", "status"),
    ]
    expected = time.time() + settings.presigned_url_expiry_seconds
    for record in lines:
        expires = datetime.fromisoformat(record.expiresAt.replace("Z", "+00:00")).timestamp()  # type: ignore[attr-defined]
        assert abs(expires - expected) < 60, record.expiresAt  # type: ignore[attr-defined]
        assert "X-Amz" not in record.getMessage()  # the link itself is never logged

    not_ready = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, file_ids=[70000])
    store.create(not_ready)
    plain = client.get(f"/v1/download/status/{not_ready.job_id}")
    assert plain.status_code == 200 and "Cache-Control" not in plain.headers
    unlinked = client.get("/v1/downloads?status=queued")
    assert unlinked.get_json()["jobs"] and "Cache-Control" not in unlinked.headers

    caplog.clear()
    assert client.delete(f"/v1/download/{job_id}").status_code == 202
    revoked = client.get(f"/v1/download/status/{job_id}")
    assert revoked.get_json()["downloadUrl"] is None and "Cache-Control" not in revoked.headers
    _error(client.get(f"/v1/download/{job_id}"), 410, "revoked")
    assert _audit_lines(caplog) == []  # a revoked job's reads presign nothing


# -- ?sentry_test -----------------------------------------------------------------------------------


def test_sentry_test_is_an_unknown_parameter_unless_the_route_is_on(make_settings: Callable[..., Settings]) -> None:
    off = create_app(make_settings()).test_client()
    body = _error(off.post("/v1/download/check?sentry_test=true", json={"file_id": 70000}), 400, "invalid_request")
    assert body["details"] == [{"path": "query sentry_test", "message": "unknown parameter (known: none)"}]
    _error(off.post("/v1/download/check?other=1", json={"file_id": 70000}), 400, "invalid_request")
    assert off.post("/v1/download/check", json={"file_id": 70000}).status_code == 200

    on = create_app(make_settings(sentry_test_route=True)).test_client()
    _error(on.post("/v1/download/check?sentry_test=true", json={"file_id": 70000}), 500, "internal_error")
    assert on.post("/v1/download/check?sentry_test=false", json={"file_id": 70000}).status_code == 200
    body = _error(on.post("/v1/download/check?other=1", json={"file_id": 70000}), 400, "invalid_request")
    assert body["details"][0]["path"] == "query other"
