"""HTTP behaviour that only a real server shows: gunicorn with gevent workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.stack import ROOT, poll_status

pytestmark = pytest.mark.contract  # run in both FAST_PATHS modes by `make test`


@pytest.fixture()
def http(api_server: str) -> httpx.Client:
    with httpx.Client(base_url=api_server, timeout=30) as client:
        yield client


def test_readme_flow_under_gunicorn(http: httpx.Client) -> None:
    response = http.post("/v1/download/initiate", json={"file_ids": [70000, 70007, 70014, 70001]})
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    done = poll_status(lambda j: http.get(f"/v1/download/status/{j}").json(), job_id, {"completed", "failed"})
    assert done["status"] == "completed"
    response = http.get(f"/v1/download/{job_id}")
    assert response.status_code == 302
    bundle = httpx.get(response.headers["location"], timeout=30)
    assert bundle.status_code == 200 and len(bundle.content) == done["size"]
    assert bundle.headers["content-disposition"] == f'attachment; filename="delineate-{job_id}.zip"'


def test_errors_from_the_server_are_json(http: httpx.Client) -> None:
    cases = [
        http.get("/nope"),
        http.delete("/"),
        http.get("/v1/download/check"),
        http.post("/v1/download/initiate", content=b"{oops", headers={"content-type": "application/json"}),
        http.post("/v1/download/initiate", content=b"x", headers={"content-type": "text/plain"}),
        http.post(
            "/v1/download/initiate",
            content=json.dumps({"file_ids": [70000] * 60000}).encode(),  # ~420 KB: past MAX_INITIATE_BODY_BYTES
            headers={"content-type": "application/json"},
        ),
        # SENTRY_TEST_ROUTE is off here: a query parameter the route does not take (the
        # deliberate 500 under gunicorn: tests/http/test_observability.py, test_console.py)
        http.post("/v1/download/check?sentry_test=true", json={"file_id": 70000}),
    ]
    assert [r.status_code for r in cases] == [404, 405, 405, 400, 415, 413, 400]
    for response in cases:
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["requestId"] == response.headers["x-request-id"]
        assert "Traceback" not in response.text and "<html" not in response.text.lower()


def test_chunked_oversized_body_is_413(http: httpx.Client) -> None:
    def chunks():
        yield b'{"file_ids": ['
        for _ in range(60000):  # ~360 KB: past MAX_INITIATE_BODY_BYTES (256 KiB)
            yield b"70000,"
        yield b"70000]}"

    response = http.post("/v1/download/initiate", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_sync_start_times_out_with_504_json(api_server: str, settings, workdir) -> None:
    from tests.support.stack import start_api

    service, base = start_api(
        settings,
        workdir,
        "api-slow",
        DOWNLOAD_DELAY_MIN_MS="5000",
        DOWNLOAD_DELAY_MAX_MS="5000",
        REQUEST_TIMEOUT_MS="300",
    )
    try:
        began = time.monotonic()
        response = httpx.post(f"{base}/v1/download/start", json={"file_id": 70000}, timeout=10)
        assert time.monotonic() - began < 3
        assert response.status_code == 504
        assert response.json()["error"] == "gateway_timeout"
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PORT", "abc"), ("S3_ENDPOINT", "::not a url::"), ("REDIS_URL", "localhost:6379")],
)
def test_bad_setting_stops_startup_in_one_line(variable: str, value: str) -> None:
    env = {**os.environ, variable: value}
    for command in (
        [sys.executable, "-m", "delineate.dev.devstack"],
        [
            os.path.join(os.path.dirname(sys.executable), "gunicorn"),
            "-c",
            "deploy/gunicorn.conf.py",
            "delineate.wsgi:app",
        ],
    ):
        result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr + result.stdout
        assert variable in result.stderr
        assert len([line for line in result.stderr.splitlines() if variable in line]) == 1
