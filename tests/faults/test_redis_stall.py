"""A stalled Redis (SIGSTOP for 3 s) never makes a request hang, on either path (design.md,
"Failure behaviour"; services.REQUEST_ANSWER_SECONDS).

Under load (several callers per route), status, initiate, history, ``/health`` and a new
SSE stream answer 503 JSON with ``Retry-After`` during the stall, with a p99 under a second
measured here; a stream opened before the stall keeps its heartbeats through it and, once
Redis is back, delivers what happened meanwhile, ending with its terminal event; every route
answers 2xx again within two seconds of SIGCONT.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from delineate.models import TERMINAL_STATES
from delineate.services import build_services
from tests.support.stack import completed_job, finish_job, queued_job, start_api, start_redis, wait_for
from tests.support.stall_load import RECOVER_WITHIN_SECONDS, Answer, RouteLoad, assert_stall_answers, stall

STALL_SECONDS = 3.0
HEARTBEAT_SECONDS = 1
"""SSE_HEARTBEAT_SECONDS of this test's API."""
TERMINAL = {state.value for state in TERMINAL_STATES}


def open_stream(http: httpx.Client, job_id: str) -> httpx.Response:
    """Open a stream and read up to its first event's data (its ``connected`` snapshot);
    an error answer is read whole."""
    with http.stream("GET", f"/v1/download/stream/{job_id}") as response:
        if response.status_code != 200:
            response.read()
            return response
        for line in response.iter_lines():
            if line.startswith("data:"):
                break
    return response


class Follower(threading.Thread):
    """A stream read to its end: every non-blank line with the time it arrived."""

    def __init__(self, base: str, job_id: str) -> None:
        super().__init__(name=f"follow-{job_id}", daemon=True)
        self.url = f"{base}/v1/download/stream/{job_id}"
        self.lines: list[tuple[float, str]] = []
        self.ended_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(5, read=10)) as response:
                assert response.status_code == 200, response.status_code
                for line in response.iter_lines():
                    if line:
                        self.lines.append((time.monotonic(), line))
            self.ended_at = time.monotonic()
        except BaseException as exc:  # reported by the test
            self.error = exc

    @property
    def events(self) -> list[str]:
        return [line.removeprefix("event: ") for _, line in self.lines if line.startswith("event: ")]

    def heartbeats_between(self, start: float, end: float) -> int:
        return sum(1 for at, line in self.lines if start <= at < end and line.startswith(":"))

    def longest_gap_over(self, start: float, end: float) -> float:
        """The longest wait between two lines around [start, end] (from the last line before
        it to the first after it)."""
        times = [at for at, _ in self.lines]
        gaps = [b - a for a, b in itertools.pairwise(times) if b > start and a < end]
        return max(gaps, default=float("inf"))


def assert_stall_answer(answer: Answer) -> None:
    """503 JSON with Retry-After: the error body, or /health's own (status + checks)."""
    where = (answer.route, answer.status, answer.text[:200])
    assert answer.status == 503, where
    assert int(answer.headers["retry-after"]) >= 1, where
    body = answer.json()
    if answer.route == "health":
        assert body["status"] == "unhealthy" and body["checks"]["redis"] == "error", where
        assert "redis" in body["error"], where
    else:
        assert body["error"] == "service_unavailable", where
        assert body["requestId"] == answer.headers["x-request-id"], where


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast paths", "libraries"])
def test_every_route_answers_within_a_second_of_a_stall_and_recovers(
    make_settings: Any, workdir: Path, fast_paths: bool
) -> None:
    redis_service, port = start_redis(workdir)  # our own Redis: pausing it touches no other test
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{port}/0", fast_paths=fast_paths, sse_heartbeat_seconds=HEARTBEAT_SECONDS
    )
    store = build_services(settings).store  # (a worker's deadline: its writes wait out the stall)
    done_job, followed_job, streamed_job = completed_job(store), queued_job(store), queued_job(store)
    name = "api-stall-fast" if fast_paths else "api-stall-libraries"
    api, base = start_api(settings, workdir, name, workers=2)
    load = RouteLoad(
        base,
        {
            "status": lambda http: http.get(f"/v1/download/status/{done_job}"),
            "initiate": lambda http: http.post("/v1/download/initiate", json={"file_ids": [70000]}),
            "history": lambda http: http.get("/v1/downloads?limit=5"),
            "health": lambda http: http.get("/health"),
            "stream": lambda http: open_stream(http, streamed_job),  # a new stream each time
        },
    )
    follower = Follower(base, followed_job)
    try:
        follower.start()
        wait_for(lambda: follower.events[:1] == ["connected"] or follower.error, 10, "the stream's first event")
        load.start().warm()
        # The job ends during the stall, as a worker would end it: its writes wait for Redis.
        finisher = threading.Thread(target=finish_job, args=(store, followed_job), daemon=True)
        stalled_at, resumed_at = stall(redis_service.pid, STALL_SECONDS, midway=finisher.start)
        time.sleep(RECOVER_WITHIN_SECONDS + 1.0)
        load.stop()
        finisher.join(10)
        follower.join(10)
    finally:
        os.kill(redis_service.pid, signal.SIGCONT)
        load.stop()
        api.stop()
        redis_service.stop()

    title = f"Redis stall of {STALL_SECONDS:.0f} s, FAST_PATHS={fast_paths}:"
    assert_stall_answers(load, title, stalled_at, resumed_at, assert_stall_answer, least=6)

    # The stream opened before the stall: heartbeats all through it, then what it missed.
    assert follower.error is None, repr(follower.error)
    gap = follower.longest_gap_over(stalled_at, resumed_at)
    print(f"  stream opened before the stall: longest gap between lines {gap:.2f} s; events {follower.events}")
    assert gap < HEARTBEAT_SECONDS + 1.0, gap
    assert follower.heartbeats_between(stalled_at, resumed_at) >= STALL_SECONDS // HEARTBEAT_SECONDS - 1
    assert follower.events[0] == "connected" and follower.events[-1] == "completed", follower.events
    assert sum(event in TERMINAL for event in follower.events) == 1, follower.events
    assert follower.ended_at is not None and follower.ended_at - resumed_at < RECOVER_WITHIN_SECONDS
