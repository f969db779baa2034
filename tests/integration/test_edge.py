"""The API's edge against the real Redis, S3 and Celery: headers, CORS, API keys and
ownership, rate limits, the active-job cap, idempotency, cancellation, the spec."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from delineate import create_app
from delineate.config import Settings
from delineate.storage import Storage, bundle_key
from delineate.store.keys import active_key, events_channel, job_key
from tests.integration.test_api import INITIATE, _closed_port, assert_error
from tests.support.stack import poll_status, start_worker, wait_for

pytestmark = pytest.mark.contract  # run in both FAST_PATHS modes by `make test`

ALICE = {"Authorization": "Bearer alice-key-0123"}
BOB = {"X-API-Key": "bob-key-4567"}
KEYS = "alice:alice-key-0123,bob:bob-key-4567"
SECURITY = ("X-Content-Type-Options", "X-Frame-Options", "Strict-Transport-Security", "Referrer-Policy")


def keyed_client(make_settings: Any, **overrides: Any) -> tuple[FlaskClient, Settings]:
    settings = make_settings(api_keys=KEYS, **overrides)
    return create_app(settings).test_client(), settings


def _status(client: FlaskClient, headers: dict[str, str]) -> Any:
    def get(job_id: str) -> dict[str, Any]:
        response = client.get(f"/v1/download/status/{job_id}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    return get


# -- headers on every response ----------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/", 200),
        ("GET", "/health", 200),
        ("GET", "/nope", 404),
        ("DELETE", "/", 405),
        ("GET", "/v1/download/status/not-a-uuid", 400),
        ("GET", "/v1/download/status/00000000-0000-4000-8000-000000000404", 404),
        ("GET", "/openapi.json", 200),
        ("GET", "/docs", 200),
    ],
)
def test_every_response_has_request_id_security_and_cors_headers(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    response = client.open(path, method=method)  # no Origin header at all
    assert response.status_code == status
    assert response.headers["X-Request-ID"]
    for name in SECURITY:
        assert response.headers[name]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    assert "RateLimit-Remaining" in response.headers["Access-Control-Expose-Headers"]
    if response.mimetype == "text/html":
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    if status >= 400:
        assert_error(response, status)


@pytest.mark.parametrize("sent, echoed", [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("a b", False)])
def test_request_id_echoed_only_when_sane(client: FlaskClient, sent: str, echoed: bool) -> None:
    response = client.get("/nope", headers={"X-Request-ID": sent})
    got = response.headers["X-Request-ID"]
    assert (got == sent) is echoed
    if not echoed:
        uuid.UUID(got)
    assert response.get_json()["requestId"] == got


def test_preflight_is_answered_with_allowed_headers(client: FlaskClient) -> None:
    response = client.options(
        INITIATE,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Idempotency-Key, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "idempotency-key", "content-type"} <= {h.strip() for h in allowed.split(",")}


def test_cors_with_listed_origins(make_settings: Any) -> None:
    client = create_app(make_settings(cors_origins="https://good.example")).test_client()
    good = client.get("/", headers={"Origin": "https://good.example"})
    assert good.headers["Access-Control-Allow-Origin"] == "https://good.example"
    bad = client.get("/", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in bad.headers


# -- API keys and ownership ------------------------------------------------------------------


def test_keys_are_required_on_v1_only(make_settings: Any) -> None:
    client, _ = keyed_client(make_settings)
    for path in ("/", "/health", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path
    body = assert_error(client.post(INITIATE, json={"file_ids": [70000]}), 401, "unauthorized")
    assert "API key" in body["message"]
    response = client.get(f"/v1/download/status/{uuid.uuid4()}", headers={"X-API-Key": "nope"})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(client.get("/v1/download/check", headers={"Authorization": "Basic abc"}), 401)
    assert_error(client.get("/v1/download/check", headers={"Authorization": "Bearer "}), 401)


def test_another_key_sees_404_on_every_job_route(make_settings: Any, caplog: Any) -> None:
    client, _ = keyed_client(make_settings, download_delay_enabled=False)
    with caplog.at_level(logging.DEBUG):
        response = client.post(INITIATE, json={"file_ids": [70000, 70007]}, headers=ALICE)
        assert response.status_code == 202
        job_id = response.get_json()["jobId"]
        assert _status(client, ALICE)(job_id)["jobId"] == job_id
        for method, path in (
            ("GET", f"/v1/download/status/{job_id}"),
            ("GET", f"/v1/download/{job_id}"),
            ("DELETE", f"/v1/download/{job_id}"),
        ):
            assert_error(client.open(path, method=method, headers=BOB), 404, "not_found")
        # the owner still can
        assert client.delete(f"/v1/download/{job_id}", headers=ALICE).status_code == 202
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "alice-key-0123" not in text and "bob-key-4567" not in text


def test_open_mode_has_no_owner_checks(client: FlaskClient) -> None:
    job_id = client.post(INITIATE, json={"file_ids": [70000]}).get_json()["jobId"]
    assert client.get(f"/v1/download/status/{job_id}", headers=BOB).status_code == 200


# -- rate limits --------------------------------------------------------------------------------


def test_rate_limit_headers_and_429(make_settings: Any) -> None:
    client, _ = keyed_client(make_settings, rate_limit_max_requests=3, rate_limit_window_ms=30_000)
    remaining = []
    for _ in range(3):
        response = client.get("/", headers=ALICE)
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "3"
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 30
        remaining.append(int(response.headers["RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    response = client.get(f"/v1/download/status/{uuid.uuid4()}", headers=ALICE)
    body = assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert response.headers["RateLimit-Remaining"] == "0"
    assert "3 per 30 s" in body["message"]
    # per key: bob has his own budget; /health is never counted nor limited
    assert client.get("/", headers=BOB).status_code == 200
    health = client.get("/health", headers=ALICE)
    assert health.status_code == 200 and "RateLimit-Limit" not in health.headers


def test_rate_limit_counts_bad_keys_per_ip(make_settings: Any) -> None:
    client, _ = keyed_client(make_settings, rate_limit_max_requests=2)
    guesses = [{"X-API-Key": f"guess{i}"} for i in range(3)]
    statuses = [client.get("/v1/download/check", headers=h).status_code for h in guesses]
    assert statuses == [401, 401, 429]


def test_limiter_with_redis_down_answers_503_json(settings: Settings) -> None:
    dead = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{_closed_port()}/0"))
    client = dead.test_client()
    assert_error(client.get("/"), 503, "service_unavailable")
    assert client.get("/health").status_code == 503  # exempt: its own body, no limiter


# -- the cap on active jobs ------------------------------------------------------------------


def test_active_job_cap_per_key_follows_terminal_states_and_expiry(make_settings: Any) -> None:
    # No worker on this database: jobs stay queued until cancelled or expired.
    client, settings = keyed_client(make_settings, max_active_jobs_per_key=2, job_ttl_seconds=3)
    ids = [client.post(INITIATE, json={"file_ids": [70000]}, headers=ALICE).get_json()["jobId"] for _ in "ab"]
    response = client.post(INITIATE, json={"file_ids": [70000]}, headers=ALICE)
    assert_error(response, 429, "too_many_active_jobs")
    assert response.headers["Retry-After"]
    assert client.post(INITIATE, json={"file_ids": [70000]}, headers=BOB).status_code == 202  # per key
    # a job leaving for a terminal state frees its slot (the Lua update keeps the set)
    assert client.delete(f"/v1/download/{ids[0]}", headers=ALICE).status_code == 202
    assert client.post(INITIATE, json={"file_ids": [70000]}, headers=ALICE).status_code == 202
    assert_error(client.post(INITIATE, json={"file_ids": [70000]}, headers=ALICE), 429)
    # jobs that expire (a dead worker, a lost hash) stop counting with them
    time.sleep(settings.job_ttl_seconds + 1.1)
    assert client.post(INITIATE, json={"file_ids": [70000]}, headers=ALICE).status_code == 202
    r = redis.Redis.from_url(settings.redis_url)
    assert r.zcard(active_key("alice")) == 1


# -- idempotency -----------------------------------------------------------------------------


def test_idempotency_replays_same_set_and_refuses_other_ids(make_settings: Any) -> None:
    client, _ = keyed_client(make_settings)
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = client.post(INITIATE, json={"file_ids": [70000, 70007]}, headers={**ALICE, **key})
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    job_id = first.get_json()["jobId"]
    again = client.post(INITIATE, json={"file_ids": [70007, 70000, 70007]}, headers={**ALICE, **key})
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    other = client.post(INITIATE, json={"file_ids": [70014]}, headers={**ALICE, **key})
    assert assert_error(other, 409, "conflict")["details"] == {"jobId": job_id}
    # scoped to the owner: the same key from bob is a new job
    bobs = client.post(INITIATE, json={"file_ids": [70000, 70007]}, headers={**BOB, **key})
    assert bobs.status_code == 202 and bobs.get_json()["jobId"] != job_id


@pytest.mark.parametrize("value", ["x" * 256, "has space", "tab\there"])
def test_malformed_idempotency_key_is_400(client: FlaskClient, value: str) -> None:
    response = client.post(INITIATE, json={"file_ids": [70000]}, headers={"Idempotency-Key": value})
    assert_error(response, 400, "invalid_request")


# -- strict input ----------------------------------------------------------------------------


def test_unknown_fields_and_every_problem_are_listed(client: FlaskClient) -> None:
    body = {"file_ids": [70000, "70007", 7.5, True, 5], "mode": "zip", "extra": 1}
    details = assert_error(client.post(INITIATE, json=body), 400, "invalid_request")["details"]
    paths = {d["path"] for d in details}
    assert {"$.file_ids[1]", "$.file_ids[2]", "$.file_ids[3]", "$.file_ids[4]", "$.mode", "$.extra"} <= paths
    assert any("unknown field" in d["message"] for d in details if d["path"] == "$.mode")


# -- estimate ------------------------------------------------------------------------------------


def test_estimate_creates_no_job(client: FlaskClient, app: Any) -> None:
    r = app.extensions["delineate"].redis
    before = len(list(r.scan_iter(job_key("*"), count=1000)))
    response = client.post("/v1/download/estimate", json={"file_ids": [70000, 70001, 70000]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["availableFileIds"] == [70000] and body["missingFileIds"] == [70001]
    assert body["totalBytes"] > 0 and body["estimatedTimeSeconds"] >= 0
    assert len(list(r.scan_iter(job_key("*"), count=1000))) == before


# -- cancellation of a running job ---------------------------------------------------------------


def test_cancelling_a_running_job_stops_it_within_one_step(make_settings: Any, workdir: Path) -> None:
    ids = [70000 + 7 * i for i in range(8)]
    settings = make_settings(download_delay_min_ms=4000, download_delay_max_ms=4000)  # 0.5 s per file
    worker = start_worker(settings, workdir, "worker-cancel", concurrency=2)
    try:
        app = create_app(settings)
        client = app.test_client()
        get = _status(client, {})
        pubsub = app.extensions["delineate"].redis.pubsub()
        job_id = client.post(INITIATE, json={"file_ids": ids}).get_json()["jobId"]
        pubsub.subscribe(events_channel(job_id))
        wait_for(lambda: get(job_id)["completedFiles"] >= 2, 20, "two files checked")
        response = client.delete(f"/v1/download/{job_id}")
        assert response.status_code == 202 and response.get_json()["status"] == "cancelled"
        at_cancel = response.get_json()["completedFiles"]
        wait_for(lambda: "stopped: job is cancelled" in worker.log(), 5, "the worker to stop")
        time.sleep(1.0)  # longer than one file step
        final = get(job_id)
        assert final["status"] == "cancelled" and final["completedFiles"] <= at_cancel + 1
        assert final["progress"] < 100 and final["downloadUrl"] is None
        assert Storage(settings).head(bundle_key(job_id)) is None  # no partial bundle
        assert_error(client.delete(f"/v1/download/{job_id}"), 409, "conflict")
        assert_error(client.get(f"/v1/download/{job_id}"), 409, "job_not_ready")
        events = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                events.append(json.loads(message["data"]))
        assert [e["type"] for e in events if e["type"] != "progress"] == ["cancelled"]
        pubsub.close()
    finally:
        worker.stop()


def test_deleting_a_completed_job_revokes_it(client: FlaskClient) -> None:
    job_id = client.post(INITIATE, json={"file_ids": [70000]}).get_json()["jobId"]
    poll_status(_status(client, {}), job_id, {"completed"})
    response = client.delete(f"/v1/download/{job_id}")  # (tests/integration/test_revocation.py)
    assert response.status_code == 202
    assert response.get_json()["status"] == "completed" and response.get_json()["revokedAt"]
    assert_error(client.get(f"/v1/download/{job_id}"), 410, "revoked")


# -- the OpenAPI document and /docs ---------------------------------------------------------------


def test_spec_covers_every_route_and_docs_work_offline(client: FlaskClient, app: Any) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    internal = {
        "/openapi.json", "/docs", "/docs/init.js", "/docs/assets/<name>", "/static/<path:filename>",
        "/dashboard/static/<path:filename>", "/favicon.ico",
    }  # fmt: skip
    for rule in app.url_map.iter_rules():
        if rule.rule in internal:
            continue
        path = rule.rule.replace("<job_id>", "{jobId}").replace("<job:job_id>", "{jobId}")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
    initiate_op = spec["paths"]["/v1/download/initiate"]["post"]
    assert {"200", "202", "400", "409", "413", "415", "429", "503"} <= set(initiate_op["responses"])
    body_schema = spec["components"]["schemas"]["FileIdsBody"]
    assert body_schema["additionalProperties"] is False
    assert body_schema["properties"]["file_ids"]["maxItems"] == 10_000  # MAX_FILE_IDS
    assert "/v1/download/estimate" in spec["paths"]
    page = client.get("/docs").get_data(as_text=True)
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    for asset in ("/docs/assets/swagger-ui.css", "/docs/assets/swagger-ui-bundle.js", "/docs/init.js"):
        assert asset in page
        response = client.get(asset)
        assert response.status_code == 200
        response.close()
    assert client.get("/docs/assets/index.html").status_code == 404
