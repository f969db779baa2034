"""The HTTP API through Flask's test client, against the real Redis, S3 and Celery worker."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from delineate import create_app
from delineate.config import Settings
from delineate.jobs.run import NO_FILES_ERROR
from delineate.storage import Storage, source_key
from tests.support.stack import poll_status

pytestmark = pytest.mark.contract  # run in both FAST_PATHS modes by `make test`

INITIATE = "/v1/download/initiate"
JSON = {"Content-Type": "application/json"}


def initiate(client: FlaskClient, ids: list[Any]) -> dict[str, Any]:
    response = client.post(INITIATE, json={"file_ids": ids})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def status_of(client: FlaskClient) -> Any:
    def get(job_id: str) -> dict[str, Any]:
        response = client.get(f"/v1/download/status/{job_id}")
        assert response.status_code == 200
        return response.get_json()

    return get


def assert_error(response: Any, status: int, error: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) >= {"error", "message", "requestId"}
    assert body["requestId"] == response.headers["X-Request-ID"]
    if error:
        assert body["error"] == error
    return body


# -- meta -------------------------------------------------------------------------------


def test_index(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.get_json()["docs"] == "/docs"
    assert response.get_json()["message"]


def test_health_ok(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "healthy", "checks": {"storage": "ok", "redis": "ok"}}


def test_health_names_a_dead_redis(settings: Settings) -> None:
    dead = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{_closed_port()}/0"))
    response = dead.test_client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy"
    assert body["checks"] == {"storage": "ok", "redis": "error"}
    assert "redis" in body["error"]


@pytest.fixture()
def hanging_port() -> Iterator[int]:
    """A TCP server that accepts and never answers: a hung dependency."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_health_answers_within_1s_when_dependencies_hang(settings: Settings, hanging_port: int) -> None:
    hung = settings.replace(
        redis_url=f"redis://127.0.0.1:{hanging_port}/0",
        s3_endpoint=f"http://127.0.0.1:{hanging_port}",
        s3_public_endpoint=f"http://127.0.0.1:{hanging_port}",
    )
    client = create_app(hung).test_client()
    began = time.monotonic()
    client.get("/health")  # the first also builds the process's health clients (boto3's: ~0.2 s)
    assert time.monotonic() - began < 2.0
    began = time.monotonic()
    response = client.get("/health")
    assert time.monotonic() - began < 1.0
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    assert response.get_json()["checks"] == {"storage": "error", "redis": "error"}


def test_redis_down_is_503_json_not_500(settings: Settings) -> None:
    dead = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{_closed_port()}/0"))
    client = dead.test_client()
    assert_error(client.get(f"/v1/download/status/{uuid.uuid4()}"), 503, "service_unavailable")
    assert_error(client.post(INITIATE, json={"file_ids": [70000]}), 503, "service_unavailable")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- initiate and validation ----------------------------------------------------------


def test_initiate_answers_202_with_location(client: FlaskClient) -> None:
    response = client.post(INITIATE, json={"file_ids": [70000, 70007, 70000]})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert body["totalFileIds"] == 2  # duplicates removed
    assert isinstance(body["estimatedTimeSeconds"], int)
    assert response.headers["Location"] == f"/v1/download/status/{body['jobId']}"
    uuid.UUID(body["jobId"])


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"file_ids": []}, "$.file_ids"),
        ({"file_ids": list(range(10000, 20001))}, "$.file_ids"),  # MAX_FILE_IDS + 1
        ({"file_ids": ["70000"]}, "$.file_ids[0]"),
        ({"file_ids": [70000.0]}, "$.file_ids[0]"),
        ({"file_ids": [70000.5]}, "$.file_ids[0]"),
        ({"file_ids": [True]}, "$.file_ids[0]"),
        ({"file_ids": [None]}, "$.file_ids[0]"),
        ({"file_ids": [9999]}, "$.file_ids[0]"),
        ({"file_ids": [100000001]}, "$.file_ids[0]"),
        ({"file_ids": [-70000]}, "$.file_ids[0]"),
        ({"file_ids": 70000}, "$.file_ids"),
        ({"file_ids": {"a": 1}}, "$.file_ids"),
        ({"file_ids": None}, "$.file_ids"),
        ({}, "$.file_ids"),
        ({"file_ids": [70000], "extra": 1}, "$.extra"),
        ([70000], "$"),
    ],
)
def test_invalid_file_ids_are_400_with_path(client: FlaskClient, body: Any, path: str) -> None:
    body = assert_error(client.post(INITIATE, json=body), 400)
    assert path in {d["path"] for d in body.get("details", [])}


@pytest.mark.parametrize("raw", ['{"file_ids": [7e4]}', '{"file_ids": [70000.0]}', '{"file_ids": [NaN]}'])
def test_numbers_that_are_not_integers_are_rejected(client: FlaskClient, raw: str) -> None:
    assert_error(client.post(INITIATE, data=raw, headers=JSON), 400)


def test_a_thousand_ids_are_accepted_and_duplicates_counted_once(client: FlaskClient) -> None:
    ids = list(range(20000, 21000))
    response = client.post(INITIATE, json={"file_ids": ids})
    assert response.status_code == 202
    response = client.post(INITIATE, json={"file_ids": [70000] * 1000})
    assert response.get_json()["totalFileIds"] == 1


def test_malformed_json_is_400(client: FlaskClient) -> None:
    assert_error(client.post(INITIATE, data="{not json", headers=JSON), 400)


def test_non_json_body_is_415(client: FlaskClient) -> None:
    assert_error(client.post(INITIATE, data="file_ids=1", content_type="text/plain"), 415, "unsupported_media_type")


def test_oversized_body_is_413(client: FlaskClient) -> None:
    raw = json.dumps({"file_ids": [70000] * 40000})  # past MAX_INITIATE_BODY_BYTES (256 KiB)
    assert_error(client.post(INITIATE, data=raw, headers=JSON), 413, "payload_too_large")


def test_callback_url_refused_when_webhooks_are_off(client: FlaskClient) -> None:
    response = client.post(INITIATE, json={"file_ids": [70000], "callback_url": "http://example.com/hook"})
    assert_error(response, 400)


# -- routing -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/download/check", "/v1/download/initiate", "/v1/download/estimate"])
def test_route_names_are_never_job_ids(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 405, "method_not_allowed")


def test_unknown_path_is_404_json(client: FlaskClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")


def test_wrong_method_is_405_json(client: FlaskClient) -> None:
    assert_error(client.delete("/"), 405, "method_not_allowed")
    assert_error(client.put(INITIATE, json={}), 405)


@pytest.mark.parametrize("route", ["/v1/download/status/{}", "/v1/download/{}"])
def test_job_routes_reject_non_uuid_and_unknown(client: FlaskClient, route: str) -> None:
    assert_error(client.get(route.format("not-a-uuid")), 400, "invalid_job_id")
    assert_error(client.get(route.format(uuid.uuid4())), 404, "not_found")
    assert_error(client.delete(f"/v1/download/{'x' * 40}"), 400, "invalid_job_id")


def test_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    response = client.get("/v1/download/status/nope", headers={"X-Request-ID": "trace-me-123"})
    assert response.headers["X-Request-ID"] == "trace-me-123"
    assert response.get_json()["requestId"] == "trace-me-123"
    response = client.get("/", headers={"X-Request-ID": "bad id\twith spaces"})
    uuid.UUID(response.headers["X-Request-ID"])
    for header in (
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Strict-Transport-Security",
        "Referrer-Policy",
    ):
        assert header in response.headers


# -- check, estimate, start ---------------------------------------------------------------


def test_check(client: FlaskClient, storage: Storage) -> None:
    response = client.post("/v1/download/check", json={"file_id": 70007})
    body = response.get_json()
    assert response.status_code == 200
    assert body == {
        "file_id": 70007,
        "available": True,
        "s3Key": "downloads/70007.zip",
        "size": storage.head(source_key(70007)).size,  # type: ignore[union-attr]
    }
    body = client.post("/v1/download/check", json={"file_id": 70001}).get_json()
    assert body == {"file_id": 70001, "available": False, "s3Key": None, "size": None}
    assert_error(client.post("/v1/download/check", json={"file_id": "70001"}), 400)


def test_check_sentry_test_is_500_json(make_settings: Any) -> None:
    client = create_app(make_settings(sentry_test_route=True)).test_client()
    body = assert_error(client.post("/v1/download/check?sentry_test=true", json={"file_id": 70000}), 500)
    assert "Traceback" not in json.dumps(body)


def test_check_sentry_test_is_refused_without_the_setting(client: FlaskClient) -> None:
    body = assert_error(client.post("/v1/download/check?sentry_test=true", json={"file_id": 70000}), 400)
    assert body["details"][0]["path"] == "query sentry_test"


def test_estimate(client: FlaskClient, storage: Storage) -> None:
    response = client.post("/v1/download/estimate", json={"file_ids": [70000, 70001, 70007, 70000]})
    body = response.get_json()
    assert response.status_code == 200
    assert body["availableFileIds"] == [70000, 70007]
    assert body["missingFileIds"] == [70001]
    sizes = [storage.head(source_key(i)).size for i in (70000, 70007)]  # type: ignore[union-attr]
    assert body["totalBytes"] == sum(sizes)


def test_start_synchronous(settings: Settings, worker: Any) -> None:
    client = create_app(settings.replace(download_delay_min_ms=10, download_delay_max_ms=20)).test_client()
    body = client.post("/v1/download/start", json={"file_id": 70000}).get_json()
    assert body["status"] == "completed" and body["downloadUrl"].startswith(settings.s3_public_endpoint)
    assert body["size"] > 0 and body["processingTimeMs"] >= 10
    body = client.post("/v1/download/start", json={"file_id": 70001}).get_json()
    assert body["status"] == "failed" and body["downloadUrl"] is None


def test_start_past_request_timeout_is_504(settings: Settings) -> None:
    slow = settings.replace(download_delay_min_ms=5000, download_delay_max_ms=5000, request_timeout_ms=200)
    began = time.monotonic()
    response = create_app(slow).test_client().post("/v1/download/start", json={"file_id": 70000})
    assert time.monotonic() - began < 2
    assert_error(response, 504, "gateway_timeout")


# -- the life of a job ----------------------------------------------------------------------


def test_full_lifecycle_bundle(client: FlaskClient, storage: Storage) -> None:
    job_id = initiate(client, [70000, 70007, 70014, 70001])["jobId"]
    get = status_of(client)
    first = get(job_id)
    assert first["status"] in {"queued", "processing"} and first["totalFiles"] == 4
    # Not ready yet: the download route answers 409 with the current status.
    body = assert_error(client.get(f"/v1/download/{job_id}"), 409, "job_not_ready")
    assert body["details"]["jobId"] == job_id

    seen_progress: set[int] = set()
    deadline = time.monotonic() + 30
    while (current := get(job_id))["status"] not in {"completed", "failed"}:
        seen_progress.add(current["progress"])
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert current["status"] == "completed", current
    assert any(0 < p < 100 for p in seen_progress), seen_progress  # progress rose on the way
    assert current["progress"] == 100 and current["phase"] == "done"
    assert current["completedFiles"] == 4 and current["availableFiles"] == 3
    assert current["missingFileIds"] == [70001]
    assert current["attempts"] == 1 and current["completedAt"]
    assert current["version"] > first["version"]

    response = client.get(f"/v1/download/{job_id}")
    assert response.status_code == 302
    url = response.headers["Location"]
    assert f"bundles/{job_id}.zip" in url and f"delineate-{job_id}.zip" in httpx.URL(url).params.get(
        "response-content-disposition", ""
    )
    # a fresh link at each call
    time.sleep(1.1)
    assert client.get(f"/v1/download/{job_id}").headers["Location"] != url

    raw = httpx.get(url, timeout=30).content
    assert len(raw) == current["size"]
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert sorted(zf.namelist()) == ["70000.zip", "70007.zip", "70014.zip", "manifest.json"]
        manifest = json.loads(zf.read("manifest.json"))
        for entry in manifest["files"]:
            data = zf.read(f"{entry['file_id']}.zip")
            original = b"".join(storage.iter_object(source_key(entry["file_id"])))
            assert data == original
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert entry["size"] == len(data)
    assert manifest["jobId"] == job_id and manifest["missing"] == [70001]


def test_single_file_presigns_the_source(client: FlaskClient, storage: Storage) -> None:
    job_id = initiate(client, [70021, 70002])["jobId"]
    done = poll_status(status_of(client), job_id, {"completed", "failed"})
    assert done["status"] == "completed"
    assert "downloads/70021.zip" in done["downloadUrl"]
    expected = b"".join(storage.iter_object(source_key(70021)))
    assert done["size"] == len(expected)
    location = client.get(f"/v1/download/{job_id}").headers["Location"]
    assert httpx.get(location, timeout=30).content == expected
    assert storage.head(f"bundles/{job_id}.zip") is None  # no bundle for one file


def test_no_available_file_fails(client: FlaskClient) -> None:
    job_id = initiate(client, [70001, 70002])["jobId"]
    done = poll_status(status_of(client), job_id, {"completed", "failed"})
    assert done["status"] == "failed"
    assert done["error"] == NO_FILES_ERROR
    assert done["progress"] < 100 and done["downloadUrl"] is None
    assert done["missingFileIds"] == [70001, 70002]
    body = assert_error(client.get(f"/v1/download/{job_id}"), 409)
    assert body["details"]["status"] == "failed"


def test_cancel_then_terminal_states_never_change(client: FlaskClient, app: Flask) -> None:
    job_id = initiate(client, [70000, 70007])["jobId"]
    response = client.delete(f"/v1/download/{job_id}")
    assert response.status_code == 202
    assert response.get_json()["status"] == "cancelled"
    assert_error(client.delete(f"/v1/download/{job_id}"), 409, "conflict")
    time.sleep(1.5)  # the worker sees the job and leaves it alone
    final = status_of(client)(job_id)
    assert final["status"] == "cancelled"
    store = app.extensions["delineate"].store
    store.update(job_id, status="completed")  # a late write from anyone
    assert status_of(client)(job_id)["status"] == "cancelled"
