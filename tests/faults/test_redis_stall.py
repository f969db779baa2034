"""A stalled Redis (SIGSTOP) never makes a request hang, on either path: every request that
needs it answers 503 JSON with ``Retry-After`` within a second, and all is well within two
seconds of SIGCONT (design.md, "Failure behaviour"; services.REQUEST_ANSWER_SECONDS)."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from delineate.services import build_services
from tests.support.stack import completed_job, start_api, start_redis

STALL_SECONDS = 3.0
ANSWER_WITHIN_SECONDS = 1.0


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast paths", "libraries"])
def test_requests_answer_503_within_a_second_of_a_stall_and_recover(
    make_settings: Any, workdir: Path, fast_paths: bool
) -> None:
    redis_service, port = start_redis(workdir)  # our own Redis: pausing it touches no other test
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0", fast_paths=fast_paths)
    job_id = completed_job(build_services(settings).store)
    name = "api-stall-fast" if fast_paths else "api-stall-libraries"
    api, base = start_api(settings, workdir, name, workers=2)
    calls = {
        "status": lambda http: http.get(f"/v1/download/status/{job_id}"),
        "initiate": lambda http: http.post("/v1/download/initiate", json={"file_ids": [70000]}),
        "history": lambda http: http.get("/v1/downloads?limit=5"),
    }
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            for call in calls.values():
                assert call(http).status_code in (200, 202)
            os.kill(redis_service.pid, signal.SIGSTOP)
            stalled_at = time.monotonic()
            answers: list[tuple[str, float, httpx.Response]] = []

            def timed(name: str) -> tuple[str, float, httpx.Response]:
                with httpx.Client(base_url=base, timeout=10) as own:
                    began = time.monotonic()
                    response = calls[name](own)
                    return name, time.monotonic() - began, response

            with ThreadPoolExecutor(max_workers=12) as pool:  # many callers at once, as pollers are
                while time.monotonic() - stalled_at < STALL_SECONDS:
                    answers += pool.map(timed, [*calls] * 4)
            os.kill(redis_service.pid, signal.SIGCONT)
            resumed_at = time.monotonic()
            for name, seconds, response in answers:
                assert seconds < ANSWER_WITHIN_SECONDS, (name, seconds)
                assert response.status_code == 503, (name, response.status_code, response.text)
                body = response.json()
                assert body["error"] == "service_unavailable" and body["requestId"] == response.headers["X-Request-ID"]
                assert int(response.headers["Retry-After"]) >= 1
            assert len(answers) >= 24
            # Back within two seconds of SIGCONT.
            while True:
                if all(call(http).status_code in (200, 202) for call in calls.values()):
                    break
                assert time.monotonic() - resumed_at < 2.0, "not back within 2 s of SIGCONT"
                time.sleep(0.1)
    finally:
        os.kill(redis_service.pid, signal.SIGCONT)
        api.stop()
        redis_service.stop()
