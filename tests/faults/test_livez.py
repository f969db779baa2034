"""Liveness while Redis and the object store hang: ``/livez`` touches neither."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.stack import start_api, start_redis


def test_livez_answers_while_redis_and_s3_are_paused(make_settings: Any, seaweed: Any, workdir: Path) -> None:
    redis_service, port = start_redis(workdir)  # our own Redis: pausing it touches no other test
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{port}/0", api_keys="ops:secret-key", rate_limit_max_requests=2
    )
    api, base = start_api(settings, workdir, "api-livez")
    paused: list[int] = []
    try:
        with httpx.Client(base_url=base, timeout=5) as http:
            assert http.get("/livez").json() == {"status": "alive"}
            for pid in (redis_service.pid, seaweed.service.pid):
                os.kill(pid, signal.SIGSTOP)
                paused.append(pid)
            for _ in range(5):  # past the rate limit of 2, without a key
                began = time.monotonic()
                response = http.get("/livez")
                assert time.monotonic() - began < 1.0
                assert response.status_code == 200 and response.json() == {"status": "alive"}
                assert "RateLimit-Limit" not in response.headers
            began = time.monotonic()
            assert http.get("/health").status_code == 503  # readiness does see the outage
            assert time.monotonic() - began < 2.5
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        api.stop()
        redis_service.stop()
