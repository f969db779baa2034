"""Tenants at the API, against the real Redis: keys rotated without a restart, each tenant's
own rate limit and cap on active jobs, a bad tenants file that stops start-up in one line,
and SIGHUP, which reloads the file (a bad one refused, the processes kept)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from delineate import create_app
from delineate.config import Settings
from delineate.config import tenants as tenants_module
from tests.support.stack import start_api, start_worker, wait_for

FILE = """
[tenants.alice]
keys = [{keys}]
rate_limit = {rate_limit}
max_active_jobs = {max_active_jobs}

[tenants.bob]
keys = ["bob-key-0002"]
"""


def write(
    path: Path, keys: str = '"alice-old-0001", "alice-new-0001"', rate_limit: int = 1000, max_active_jobs: int = 50
) -> None:
    path.write_text(FILE.format(keys=keys, rate_limit=rate_limit, max_active_jobs=max_active_jobs))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new stamp, whatever the clock


def test_a_key_rotates_without_a_restart(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tenants_module, "RELOAD_CHECK_SECONDS", 0.0)
    path = tmp_path / "tenants.toml"
    write(path)
    client = create_app(make_settings(tenants_file=str(path))).test_client()
    old, new = {"X-API-Key": "alice-old-0001"}, {"X-API-Key": "alice-new-0001"}
    job_id = client.post("/v1/download/initiate", json={"file_ids": [70000]}, headers=old).get_json()["jobId"]
    assert client.get(f"/v1/download/status/{job_id}", headers=new).status_code == 200  # one tenant, two keys
    write(path, keys='"alice-new-0001"')  # the old key retired
    assert client.get(f"/v1/download/status/{job_id}", headers=old).status_code == 401
    assert client.get(f"/v1/download/status/{job_id}", headers=new).status_code == 200
    assert client.get(f"/v1/download/status/{job_id}", headers={"X-API-Key": "bob-key-0002"}).status_code == 404


def test_each_tenant_has_its_own_rate_limit_and_cap(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    write(path, rate_limit=4, max_active_jobs=2)
    client = create_app(make_settings(tenants_file=str(path), rate_limit_max_requests=1000)).test_client()
    alice, bob = {"X-API-Key": "alice-new-0001"}, {"X-API-Key": "bob-key-0002"}
    answers = [client.post("/v1/download/initiate", json={"file_ids": [70000]}, headers=alice) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]  # her third active job: past max_active_jobs
    assert answers[0].headers["RateLimit-Limit"] == "4"
    assert client.get("/v1/downloads", headers=alice).status_code == 200
    refused = client.get("/v1/downloads", headers=alice)  # her fifth request in the window
    assert refused.status_code == 429 and refused.get_json()["error"] == "rate_limited"
    mine = client.get("/v1/downloads", headers=bob)  # bob is not held back by her
    assert mine.status_code == 200 and mine.headers["RateLimit-Limit"] == "1000"


def test_a_bad_tenants_file_stops_start_up_in_one_line(
    make_settings: Callable[..., Settings], tmp_path: Path, workdir: Path
) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text('[tenants.alice]\nkeys = ["alice-key-0001"]\nweight = -1\n')
    settings = make_settings(tenants_file=str(path))
    with pytest.raises(RuntimeError) as failed:
        start_api(settings, workdir, "api-bad-tenants")
    log = str(failed.value)
    assert f"delineate: configuration error: TENANTS_FILE {path}: tenant 'alice': field 'weight' must be" in log
    assert "Traceback" not in log


def test_sighup_reloads_the_api_and_a_bad_file_keeps_the_workers(
    make_settings: Callable[..., Settings], tmp_path: Path, workdir: Path
) -> None:
    path = tmp_path / "tenants.toml"
    write(path, keys='"alice-old-0001"')
    settings = make_settings(tenants_file=str(path), rate_limit_max_requests=1_000_000)
    service, base = start_api(settings, workdir, "api-sighup")
    try:
        old, new = {"X-API-Key": "alice-old-0001"}, {"X-API-Key": "alice-new-0001"}
        assert httpx.get(f"{base}/v1/downloads", headers=old).status_code == 200
        path.write_text('[tenants.alice]\nkeys = ["alice-new-0001"]\nmax_running = 0\n')
        service.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in service.log(), 10, "the refused reload")
        assert "tenant 'alice': field 'max_running' must be" in service.log()
        assert service.running() and httpx.get(f"{base}/v1/downloads", headers=old).status_code == 200
        booted = service.log().count("Booting worker")
        answers: list[int | str] = []  # bob's requests, all through the reload
        stop = threading.Event()

        def bob_polls() -> None:
            with httpx.Client(base_url=base, headers={"X-API-Key": "bob-key-0002"}, timeout=10) as client:
                while not stop.is_set():
                    try:
                        answers.append(client.get("/v1/downloads").status_code)
                    except httpx.HTTPError as exc:
                        answers.append(type(exc).__name__)

        poller = threading.Thread(target=bob_polls)
        poller.start()
        try:
            write(path, keys='"alice-new-0001"')
            service.process.send_signal(signal.SIGHUP)
            wait_for(lambda: service.log().count("Booting worker") > booted, 10, "the workers restarted")
            wait_for(lambda: httpx.get(f"{base}/v1/downloads", headers=new).status_code == 200, 10, "the new key")
            time.sleep(1)  # past the old workers' graceful exit
        finally:
            stop.set()
            poller.join()
        assert httpx.get(f"{base}/v1/downloads", headers=old).status_code == 401
        assert len(answers) > 20 and set(answers) == {200}, set(answers)  # not one request dropped
    finally:
        service.stop()


def test_sighup_rereads_the_file_in_the_worker_without_a_restart(
    make_settings: Callable[..., Settings], tmp_path: Path, workdir: Path
) -> None:
    path = tmp_path / "tenants.toml"
    write(path, keys='"alice-old-0001"')
    worker = start_worker(make_settings(tenants_file=str(path)), workdir, "worker-sighup")
    try:
        write(path, keys='"alice-new-0001"')
        worker.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "tenants: loaded 2 tenants" in worker.log(), 30, "the worker's reload")
        assert worker.running() and "Restarting celery worker" not in worker.log()
    finally:
        worker.stop()
