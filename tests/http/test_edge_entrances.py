"""Every rule of the edge, on both entrances: the fast lane in front of Flask (FAST_PATHS=true)
and Flask's own request path (FAST_PATHS=false), under gunicorn, for the two routes the lane
answers (a status read and an initiate).

Each rule runs against each entrance and must hold the same: a key required, the owner
check, the rate limit's count and headers, the security headers, CORS, the request id, the
body checks, the metrics, the access line and the request's span.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from delineate.config import Settings
from delineate.services import build_services
from tests.support.receivers import OtlpReceiver
from tests.support.stack import Service, completed_job, start_api

ALICE = {"Authorization": "Bearer alice-key-0123"}
BOB = {"X-API-Key": "bob-key-4567"}
CAROL = {"X-API-Key": "carol-key-8910"}  # the rate-limit rule's own key: its window is its own
LIMIT = 40
ORIGIN = "https://app.example"
SERVER = 2


@dataclass
class Entrance:
    name: str
    base: str
    settings: Settings
    service: Service
    otlp: OtlpReceiver
    alices_job: str

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base + path, timeout=10, **kwargs)

    def status(self, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.get(f"/v1/download/status/{self.alices_job}", headers={**ALICE, **(headers or {})})

    def initiate(self, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("json", {"file_ids": [70000]})
        return self.post("/v1/download/initiate", headers={**ALICE, **(headers or {})}, **kwargs)

    def requests_counted(self, route: str, status: int) -> float:
        """``delineate_http_requests_total`` for one route and status, over the API processes."""
        text = self.get("/metrics").text
        pattern = (
            rf'delineate_http_requests_total{{[^}}]*route="{re.escape(route)}"[^}}]*status="{status}"[^}}]*}} (\S+)'
        )
        return sum(float(value) for value in re.findall(pattern, text))


@pytest.fixture(scope="module", params=["fast lane", "flask"])
def entrance(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], workdir: Path
) -> Iterator[Entrance]:
    fast = request.param == "fast lane"
    otlp = OtlpReceiver().start()
    settings = make_settings(
        api_keys={"alice-key-0123": "alice", "bob-key-4567": "bob", "carol-key-8910": "carol"},
        cors_origins=(ORIGIN,),
        rate_limit_max_requests=LIMIT,
        rate_limit_window_ms=60_000,
        otel_exporter_otlp_endpoint=otlp.endpoint,
        fast_paths=fast,
        max_body_bytes=4096,
        max_initiate_body_bytes=8192,
        max_file_ids=1000,
    )
    job = completed_job(build_services(settings).store, owner="alice")
    name = "api-entrance-fast" if fast else "api-entrance-flask"
    metrics_dir = workdir / f"{name}-metrics"
    metrics_dir.mkdir(exist_ok=True)
    service, base = start_api(settings, workdir, name, workers=1, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    try:
        yield Entrance(request.param, base, settings, service, otlp, job)
    finally:
        service.stop()
        otlp.stop()


def _json_error(response: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["requestId"] == response.headers["X-Request-ID"]
    if error:
        assert body["error"] == error
    return body  # type: ignore[no-any-return]


def test_a_key_is_required(entrance: Entrance) -> None:
    _json_error(entrance.get(f"/v1/download/status/{entrance.alices_job}"), 401, "unauthorized")
    refused = entrance.post("/v1/download/initiate", json={"file_ids": [70000]}, headers={"X-API-Key": "wrong"})
    _json_error(refused, 401, "unauthorized")
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_another_keys_job_is_not_found(entrance: Entrance) -> None:
    _json_error(entrance.get(f"/v1/download/status/{entrance.alices_job}", headers=BOB), 404, "not_found")
    assert entrance.status().status_code == 200


def test_each_request_is_counted_once_with_the_limits_headers(entrance: Entrance) -> None:
    path = f"/v1/download/status/{entrance.alices_job}"
    remaining = []
    for _ in range(3):
        answer = entrance.get(path, headers={**CAROL})  # carol may not see it: a 404, still counted
        assert answer.status_code == 404
        assert answer.headers["RateLimit-Limit"] == str(LIMIT)
        assert 0 < int(answer.headers["RateLimit-Reset"]) <= 60
        remaining.append(int(answer.headers["RateLimit-Remaining"]))
    for _ in range(3):
        answer = entrance.post("/v1/download/initiate", json={"file_ids": [70007]}, headers=CAROL)
        assert answer.status_code == 202
        remaining.append(int(answer.headers["RateLimit-Remaining"]))
    assert remaining == list(range(remaining[0], remaining[0] - 6, -1))  # one each, on both routes
    while remaining[-1] > 0:
        remaining.append(int(entrance.get(path, headers=CAROL).headers["RateLimit-Remaining"]))
    refused = entrance.get(path, headers=CAROL)
    _json_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    _json_error(entrance.post("/v1/download/initiate", json={"file_ids": [70007]}, headers=CAROL), 429)


@pytest.mark.parametrize("route", ["status", "initiate"])
def test_security_headers_cors_and_the_request_id(entrance: Entrance, route: str) -> None:
    send = entrance.status if route == "status" else entrance.initiate
    answer = send({"Origin": ORIGIN, "X-Request-ID": "edge-rule-0001"})
    assert answer.status_code in (200, 202)
    for name, value in (
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Access-Control-Allow-Origin", ORIGIN),
        ("Vary", "Origin"),
        ("X-Request-ID", "edge-rule-0001"),
    ):
        assert answer.headers.get(name) == value, (name, answer.headers.get(name))
    assert "max-age=" in answer.headers["Strict-Transport-Security"]
    assert answer.headers["Server-Timing"].startswith("app;dur=")
    elsewhere = send({"Origin": "https://evil.example", "X-Request-ID": "bad id with spaces"})
    assert "Access-Control-Allow-Origin" not in elsewhere.headers
    assert re.fullmatch(r"[0-9a-f-]{36}", elsewhere.headers["X-Request-ID"])


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        ('{"file_ids": [70000]}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ('{"file_ids": [70000]}', {"Content-Type": "application/json; charset=latin-1"}, 415, None),
        ('{"file_ids": [70000]}', {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 415, None),
        ('{"file_ids": [70000', {"Content-Type": "application/json"}, 400, "invalid_request"),
        ('{"file_ids": [70000], "extra": 1}', {"Content-Type": "application/json"}, 400, "invalid_request"),
        ('{"file_ids": [70000.0]}', {"Content-Type": "application/json"}, 400, "invalid_request"),
        ('{"file_ids": [' + "70000," * 2000 + "70000]}", {"Content-Type": "application/json"}, 413, None),
    ],
    ids=["not json", "latin-1", "gzip", "broken", "unknown field", "float id", "too large"],
)
def test_bodies_are_checked_alike(
    entrance: Entrance, body: str, headers: dict[str, str], status: int, error: str | None
) -> None:
    _json_error(entrance.initiate(headers, content=body.encode()), status, error)


def test_initiate_has_its_own_limits(entrance: Entrance) -> None:
    """Initiate takes MAX_FILE_IDS ids in up to MAX_INITIATE_BODY_BYTES; other routes keep MAX_BODY_BYTES."""
    json_body = {**BOB, "Content-Type": "application/json"}
    within = json.dumps({"file_ids": [70000] * 700}).encode()  # ~4.9 KB: past MAX_BODY_BYTES (4096)
    assert entrance.settings.max_body_bytes < len(within) < entrance.settings.max_initiate_body_bytes
    assert entrance.post("/v1/download/initiate", content=within, headers=json_body).status_code == 202
    too_many = json.dumps({"file_ids": [70000] * 1001}).encode()  # ~7 KB, one id past MAX_FILE_IDS
    refused = _json_error(entrance.post("/v1/download/initiate", content=too_many, headers=json_body), 400)
    assert "at most 1000 items (MAX_FILE_IDS)" in refused["message"]
    check = b'{"file_id": 70000' + b" " * 4096 + b"}"
    _json_error(entrance.post("/v1/download/check", content=check, headers=json_body), 413, "payload_too_large")


def test_metrics_count_each_request_once(entrance: Entrance) -> None:
    route = "/v1/download/status/<job_id>"
    before = entrance.requests_counted(route, 200)
    for _ in range(5):
        assert entrance.status().status_code == 200
    time.sleep(0.5)  # a process flushes its counts every 0.25 s (and before its own scrape)
    assert entrance.requests_counted(route, 200) == before + 5


def test_one_access_line_per_request(entrance: Entrance) -> None:
    request_id = f"edge-access-{entrance.name.replace(' ', '-')}"
    assert entrance.status({"X-Request-ID": request_id}).status_code == 200
    assert entrance.initiate({"X-Request-ID": request_id + "-2"}).status_code == 202

    def lines() -> list[dict[str, Any]]:
        found = []
        for line in entrance.service.log().splitlines():
            if request_id in line and '"delineate.access"' in line:
                found.append(json.loads(line))
        return found

    deadline = time.monotonic() + 5
    while len(lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    by_id = {line["request_id"]: line for line in lines()}
    assert set(by_id) == {request_id, request_id + "-2"}, by_id
    assert by_id[request_id]["route"] == "/v1/download/status/<job_id>" and by_id[request_id]["status"] == 200
    assert by_id[request_id + "-2"]["route"] == "/v1/download/initiate" and by_id[request_id + "-2"]["status"] == 202


@pytest.mark.parametrize("route", ["status", "initiate"])
def test_each_request_has_its_server_span(entrance: Entrance, route: str) -> None:
    trace_id = ("ab" if route == "status" else "cd") * 15 + ("01" if entrance.name == "flask" else "02")
    traceparent = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    answer = (entrance.status if route == "status" else entrance.initiate)(traceparent)
    assert answer.headers["X-Trace-Id"] == trace_id
    name = "GET /v1/download/status/<job_id>" if route == "status" else "POST /v1/download/initiate"

    def span() -> list[Any] | None:
        return [s for s in entrance.otlp.spans() if s.trace_id == trace_id and s.kind == SERVER] or None

    spans = entrance.otlp.wait_for(span, 15, f"the {route} span")
    assert [s.name for s in spans] == [name]
