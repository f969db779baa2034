"""Faults under load: an API restart under 100 live streams, and a burst against a small rate limit."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from delineate import create_app
from delineate.client.api import Client
from tests.faults.test_resilience import _all_terminal
from tests.support.stack import free_port, start_api, start_worker, wait_for


def test_api_restart_under_100_streams_every_client_gets_its_end(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(download_delay_min_ms=5000, download_delay_max_ms=6000)
    worker = start_worker(settings, workdir, "worker-sse-restart", concurrency=40)
    port = free_port()
    api, base = start_api(settings, workdir, "api-sse-restart", port=port)
    services = [worker, api]
    try:
        with Client(base) as client:
            jobs = [client.initiate([70000 + 7 * n, 70001])["jobId"] for n in range(20)]
        finals: dict[int, dict[str, Any]] = {}
        connected = threading.Semaphore(0)

        def follow(n: int) -> None:
            with Client(base, timeout=30) as client:
                for i, status in enumerate(client.watch(jobs[n % len(jobs)], poll_interval=0.5)):
                    if i == 0:
                        connected.release()
                    finals[n] = status

        threads = [threading.Thread(target=follow, args=(n,), daemon=True) for n in range(100)]
        for thread in threads:
            thread.start()
        for _ in threads:
            assert connected.acquire(timeout=60), "a client never connected"
        api.kill()  # every stream is cut mid-job
        replacement, _ = start_api(settings, workdir, "api-sse-restart-2", port=port)
        services.append(replacement)
        for thread in threads:
            thread.join(90)
        assert len(finals) == 100
        assert {s["status"] for s in finals.values()} == {"completed"}
    finally:
        for service in services:
            service.stop()


def _counter(text: str, family: str, **labels: str) -> float:
    total = 0.0
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name == family and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_burst_of_5000_initiates_is_202_or_429_and_metrics_agree(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(download_delay_enabled=False, rate_limit_max_requests=400, rate_limit_window_ms=120_000)
    worker = start_worker(settings, workdir, "worker-burst", concurrency=50)
    api, base = start_api(settings, workdir, "api-burst", workers=2)
    try:
        codes: list[int] = []
        accepted: list[str] = []
        lock = threading.Lock()

        def post(http: httpx.Client) -> httpx.Response:
            try:
                return http.post("/v1/download/initiate", json={"file_ids": [70000, 70007]})
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A keep-alive connection the server closed while this starved client thread
                # waited over 5 s for the CPU: the request never arrived; send it again.
                return http.post("/v1/download/initiate", json={"file_ids": [70000, 70007]})

        def burst(_: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                for _ in range(50):
                    response = post(http)
                    with lock:
                        codes.append(response.status_code)
                        if response.status_code == 202:
                            accepted.append(response.json()["jobId"])
                    if response.status_code == 429:
                        assert response.json()["error"] == "rate_limited" and "retry-after" in response.headers

        with ThreadPoolExecutor(max_workers=100) as pool:
            list(pool.map(burst, range(100)))
        assert len(codes) == 5000
        assert set(codes) <= {202, 429}, {c for c in codes if c not in (202, 429)}
        assert codes.count(202) == 400
        # Read the jobs from the store: the API would rightly keep answering 429 for this window.
        store = create_app(settings).extensions["delineate"].store
        with httpx.Client(base_url=base, timeout=30) as http:
            final = _all_terminal(lambda j: store.status(store.get(j)), accepted, timeout=180)
            assert {s["status"] for s in final} == {"completed"}
            wait_for(
                lambda: _counter(http.get("/metrics").text, "delineate_jobs_total", status="completed") >= 400,
                30,
                "job metrics",
            )
            text = http.get("/metrics").text
        route = "/v1/download/initiate"
        assert _counter(text, "delineate_http_requests_total", route=route, status="202") == 400
        assert _counter(text, "delineate_http_requests_total", route=route, status="429") == 4600
        assert _counter(text, "delineate_jobs_total", status="completed") == 400
    finally:
        api.stop()
        worker.stop()
