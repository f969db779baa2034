"""The status fast lane (delineate/fast_lane.py) against the real Redis and S3: it answers
as Flask does, counts each read once, and hands every other outcome to Flask."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Flask
from werkzeug.test import Client

from delineate import create_app
from delineate.config import Settings
from delineate.fast_lane import StatusLane
from delineate.store.keys import RATE_LIMIT_PREFIX
from tests.stack import completed_job as stack_completed_job
from tests.test_api import _closed_port, assert_error
from tests.test_edge import ALICE, BOB, KEYS

REQUEST_ID = "lane-test-0001"


def completed_job(app: Flask, owner: str = "") -> str:
    return stack_completed_job(app.extensions["delineate"].store, owner)


class Counted:
    """Flask's own WSGI app behind the lane, counting the requests the lane passes on."""

    def __init__(self, lane: StatusLane) -> None:
        self.inner, self.calls = lane.inner, 0
        lane.inner = self

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.calls += 1
        return self.inner(environ, start_response)


def lane_of(app: Flask) -> StatusLane:
    lane = app.wsgi_app
    assert isinstance(lane, StatusLane)
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
    varying = {"Server-Timing", "RateLimit-Remaining"}
    lane_headers = [(k, v) for k, v in by_lane.headers if k not in varying]
    flask_headers = [(k, v) for k, v in by_flask.headers if k not in varying]
    assert sorted(lane_headers) == sorted(flask_headers)
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
