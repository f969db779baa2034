"""The edge under gunicorn: limits shared by processes, X-Forwarded-For trust, races."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.support.stack import start_api

KEY = "edge-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_limits_shared_by_processes_and_forwarded_for_trusted_one_hop(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(rate_limit_max_requests=4, rate_limit_window_ms=60_000, trusted_proxy_hops=1)
    service, base = start_api(settings, workdir, "api-limits", workers=2)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            # The proxy appends the client's address last; anything before it is the client's to invent.
            statuses = [
                http.get("/", headers={"X-Forwarded-For": f"{invented}, 203.0.113.7"}).status_code
                for invented in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5")
            ]
            # 5 requests over 2 worker processes, one counter in Redis
            assert statuses == [200, 200, 200, 200, 429]
            limited = http.get("/", headers={"X-Forwarded-For": "203.0.113.7"})
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            assert limited.json()["requestId"] == limited.headers["x-request-id"]
            other = http.get("/", headers={"X-Forwarded-For": "203.0.113.8"})
            assert other.status_code == 200 and other.headers["ratelimit-remaining"] == "3"
            assert http.get("/health").status_code == 200  # exempt
            cors = http.get("/", headers={"X-Forwarded-For": "203.0.113.9"})
            assert cors.headers["access-control-allow-origin"] == "*"
    finally:
        service.stop()


def test_forwarded_for_ignored_without_trusted_hops(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(rate_limit_max_requests=50, trusted_proxy_hops=0)
    service, base = start_api(settings, workdir, "api-noproxy", workers=1)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            answers = [http.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(3)]
        remaining = [int(r.headers["ratelimit-remaining"]) for r in answers]
        # one counter for 127.0.0.1, whatever addresses the client invents
        assert remaining[1] == remaining[0] - 1 and remaining[2] == remaining[0] - 2
    finally:
        service.stop()


def test_concurrent_requests_with_one_idempotency_key_make_one_job(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(api_keys=f"racer:{KEY}", max_active_jobs_per_key=1000)
    service, base = start_api(settings, workdir, "api-idem", workers=2)
    try:
        headers = {**AUTH, "Idempotency-Key": f"race-{uuid.uuid4()}"}

        def post(_: int) -> httpx.Response:
            return httpx.post(f"{base}/v1/download/initiate", json={"file_ids": [70000, 70007]}, headers=headers)

        with ThreadPoolExecutor(max_workers=12) as pool:
            responses = list(pool.map(post, range(12)))
        assert sorted(r.status_code for r in responses) == [200] * 11 + [202]
        assert len({r.json()["jobId"] for r in responses}) == 1
        assert all(r.headers.get("idempotent-replayed") == "true" for r in responses if r.status_code == 200)
    finally:
        service.stop()
