"""The fast lane (delineate/api/edge/fast_lane.py) against the real Redis, S3 and Celery: status reads
and initiates answered as Flask does, each counted once, every other outcome handed to Flask."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Flask
from werkzeug.test import Client

from delineate import create_app
from delineate.api.edge.fast_lane import FastLane
from delineate.config import Settings
from delineate.store.keys import RATE_LIMIT_PREFIX
from tests.integration.test_api import INITIATE, _closed_port, assert_error
from tests.integration.test_edge import ALICE, BOB, KEYS
from tests.support.stack import Service, poll_status
from tests.support.stack import completed_job as stack_completed_job

REQUEST_ID = "lane-test-0001"
GZIP = {"Content-Encoding": "gzip"}


def completed_job(app: Flask, owner: str = "") -> str:
    return stack_completed_job(app.extensions["delineate"].store, owner)


class Counted:
    """Flask's own WSGI app behind the lane, counting the requests the lane passes on."""

    def __init__(self, lane: FastLane) -> None:
        self.inner, self.calls = lane.inner, 0
        lane.inner = self

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.calls += 1
        return self.inner(environ, start_response)


def lane_of(app: Flask) -> FastLane:
    lane = app.wsgi_app
    assert isinstance(lane, FastLane)
    return lane


def test_the_lane_answers_a_status_read_as_flask_does(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(cors_origins="https://app.example"))
    job_id = completed_job(app)
    lane = lane_of(app)
    counted = Counted(lane)
    headers = {"X-Request-ID": REQUEST_ID, "Origin": "https://app.example"}
    url = f"/v1/download/status/{job_id.upper()}"  # ids are case-blind on both paths
    by_lane = Client(lane).get(url, headers=headers)
    assert counted.calls == 0  # the lane answered it
    by_flask = Client(counted.inner).get(url, headers=headers)
    assert by_lane.status_code == by_flask.status_code == 200
    assert by_lane.get_json() == by_flask.get_json()
    assert by_lane.get_json()["downloadUrl"].startswith("http")
    varying = {"Server-Timing", "RateLimit-Remaining", "RateLimit-Reset"}  # (Reset: a second may tick between)
    lane_headers = [(k, v) for k, v in by_lane.headers if k not in varying]
    flask_headers = [(k, v) for k, v in by_flask.headers if k not in varying]
    assert sorted(lane_headers) == sorted(flask_headers)
    assert 0 <= int(by_lane.headers["RateLimit-Reset"]) - int(by_flask.headers["RateLimit-Reset"]) <= 1
    assert by_lane.headers["X-Request-ID"] == REQUEST_ID
    assert by_lane.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert by_lane.headers["Server-Timing"].startswith("app;dur=")
    assert int(by_lane.headers["RateLimit-Remaining"]) == int(by_flask.headers["RateLimit-Remaining"]) + 1


def test_each_read_is_counted_once_and_the_refusal_is_flasks(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(rate_limit_max_requests=3, rate_limit_window_ms=30_000)
    app = create_app(settings)
    job_id = completed_job(app)
    counted = Counted(lane_of(app))
    client = app.test_client()
    remaining = []
    for _ in range(3):
        response = client.get(f"/v1/download/status/{job_id}")
        assert response.status_code == 200
        remaining.append(response.headers["RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"] and counted.calls == 0
    response = client.get(f"/v1/download/status/{job_id}", headers={"X-Request-ID": REQUEST_ID})
    body = assert_error(response, 429, "rate_limited")
    assert body["requestId"] == REQUEST_ID  # the lane's id, kept by Flask
    assert response.headers["Retry-After"] and response.headers["RateLimit-Remaining"] == "0"
    assert counted.calls == 1
    store = redis.Redis.from_url(settings.redis_url)
    assert int(store.get(f"{RATE_LIMIT_PREFIX}:ip:127.0.0.1") or 0) == 4  # never a second hit


def test_an_unknown_job_is_flasks_404_counted_once(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(rate_limit_max_requests=10, rate_limit_window_ms=30_000)
    app = create_app(settings)
    counted = Counted(lane_of(app))
    response = app.test_client().get(f"/v1/download/status/{uuid.uuid4()}", headers={"X-Request-ID": REQUEST_ID})
    body = assert_error(response, 404, "not_found")
    assert body["requestId"] == REQUEST_ID
    assert response.headers["RateLimit-Remaining"] == "9"
    assert counted.calls == 1


def test_keys_and_ownership_hold_on_the_lane(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(api_keys=KEYS))
    job_id = completed_job(app, owner="alice")
    counted = Counted(lane_of(app))
    client = app.test_client()
    url = f"/v1/download/status/{job_id}"
    assert client.get(url, headers=ALICE).status_code == 200
    assert counted.calls == 0
    assert_error(client.get(url, headers=BOB), 404, "not_found")  # another key's job looks unknown
    assert_error(client.get(url), 401, "unauthorized")
    assert_error(client.get(url, headers={"X-API-Key": "not-a-key"}), 401, "unauthorized")
    assert counted.calls == 3


def test_behind_a_trusted_proxy_each_client_address_has_its_own_count(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(trusted_proxy_hops=1, rate_limit_max_requests=5, rate_limit_window_ms=30_000))
    job_id = completed_job(app)
    client = app.test_client()
    url = f"/v1/download/status/{job_id}"
    for address, remaining in (("203.0.113.7", "4"), ("203.0.113.7", "3"), ("198.51.100.9", "4")):
        response = client.get(url, headers={"X-Forwarded-For": f"10.9.9.9, {address}"})
        assert response.status_code == 200 and response.headers["RateLimit-Remaining"] == remaining


def test_redis_away_is_flasks_503(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(redis_url=f"redis://127.0.0.1:{_closed_port()}/0"))
    counted = Counted(lane_of(app))
    response = app.test_client().get(f"/v1/download/status/{uuid.uuid4()}", headers={"X-Request-ID": REQUEST_ID})
    body = assert_error(response, 503)
    assert body["requestId"] == REQUEST_ID
    assert counted.calls == 1


def test_other_requests_go_to_flask_untouched(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    job_id = completed_job(app)
    counted = Counted(lane_of(app))
    client = app.test_client()
    assert_error(client.get("/v1/download/status/not-a-uuid"), 400)
    assert client.get(f"/v1/download/status/{job_id}/").status_code == 404
    assert client.head(f"/v1/download/status/{job_id}").status_code == 200
    assert client.options(f"/v1/download/status/{job_id}").status_code == 200
    assert client.get(f"/v1/download/{job_id}").status_code == 302
    assert counted.calls == 5


# -- initiate ----------------------------------------------------------------------------


def test_the_lane_accepts_a_job_as_flask_does(settings: Settings, worker: Service) -> None:
    app = create_app(settings)  # the session worker's broker
    lane = lane_of(app)
    counted = Counted(lane)
    headers = {"X-Request-ID": REQUEST_ID}
    by_lane = Client(lane).post(INITIATE, json={"file_ids": [70000, 70007, 70000]}, headers=headers)
    assert counted.calls == 0
    by_flask = Client(counted.inner).post(INITIATE, json={"file_ids": [70000, 70007, 70000]}, headers=headers)
    assert by_lane.status_code == by_flask.status_code == 202
    body = by_lane.get_json()
    assert set(body) == set(by_flask.get_json()) and body["totalFileIds"] == 2 and body["status"] == "queued"
    assert by_lane.headers["Location"] == f"/v1/download/status/{body['jobId']}"
    varying = {"Server-Timing", "RateLimit-Remaining", "Location"}
    assert sorted((k, v) for k, v in by_lane.headers if k not in varying) == sorted(
        (k, v) for k, v in by_flask.headers if k not in varying
    )
    # The record went with its task message: a worker runs the job.
    client = app.test_client()
    done = poll_status(lambda job: client.get(f"/v1/download/status/{job}").get_json(), body["jobId"], {"completed"})
    assert done["status"] == "completed" and done["completedFiles"] == 2


def test_an_idempotent_replay_and_its_conflict(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    counted = Counted(lane_of(app))
    client = app.test_client()
    key = {"Idempotency-Key": f"lane-{uuid.uuid4()}"}
    first = client.post(INITIATE, json={"file_ids": [70000]}, headers=key)
    again = client.post(INITIATE, json={"file_ids": [70000, 70000]}, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["jobId"] == first.get_json()["jobId"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert counted.calls == 0
    other = client.post(INITIATE, json={"file_ids": [70007]}, headers={**key, "X-Request-ID": REQUEST_ID})
    body = assert_error(other, 409, "conflict")
    assert body["requestId"] == REQUEST_ID and body["details"]["jobId"] == first.get_json()["jobId"]
    assert counted.calls == 1  # rendered by Flask from the lane's error, never created twice


def test_a_bad_body_is_flasks_400_counted_once(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(rate_limit_max_requests=10, rate_limit_window_ms=30_000))
    counted = Counted(lane_of(app))
    client = app.test_client()
    response = client.post(INITIATE, json={"file_ids": [0, "x"]}, headers={"X-Request-ID": REQUEST_ID})
    body = assert_error(response, 400, "invalid_request")
    assert body["requestId"] == REQUEST_ID
    assert {d["path"] for d in body["details"]} == {"$.file_ids[0]", "$.file_ids[1]"}
    assert response.headers["RateLimit-Remaining"] == "9"
    assert_error(client.post(INITIATE, data=b'{"file_ids": [70000', content_type="application/json"), 400)
    assert counted.calls == 2


def test_the_active_job_cap_holds_on_the_lane(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(api_keys=KEYS, max_active_jobs_per_key=1))
    counted = Counted(lane_of(app))
    client = app.test_client()
    assert client.post(INITIATE, json={"file_ids": [70000]}, headers=ALICE).status_code == 202
    assert_error(client.post(INITIATE, json={"file_ids": [70007]}, headers=ALICE), 429, "too_many_active_jobs")
    assert client.post(INITIATE, json={"file_ids": [70007]}, headers=BOB).status_code == 202
    assert counted.calls == 1


def test_other_initiates_go_to_flask_untouched(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    counted = Counted(lane_of(app))
    client = app.test_client()
    hook = {"file_ids": [70000], "callback_url": "https://hooks.example.com/delineate"}
    assert client.post(INITIATE, json=hook).status_code in (202, 400)  # the webhook rules are Flask's
    assert_error(client.post(INITIATE, data=b'{"file_ids": [70000]}', content_type="text/plain"), 415)
    assert_error(client.post(INITIATE, data=b"{}", content_type="application/json", headers=GZIP), 415)
    assert counted.calls == 3
