"""What every benchmark shares: a production-like stack on free ports, wrk, the ceilings.

A stack is redis-server, SeaweedFS, gunicorn (``deploy/gunicorn.conf.py``: gevent) and
Celery workers (threads pool), each its own process started by ``tests/support/stack.py`` and
stopped by its PID. Ceilings are measured against the same machine in the same run: a
bare Flask hello on the same gunicorn settings for HTTP, a raw boto3 GET+PUT for S3.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from delineate.config import Settings, load_settings  # noqa: E402
from delineate.dev.seed import SAMPLE_IDS  # noqa: E402
from tests.support.stack import (  # noqa: E402
    BIN,
    Service,
    free_port,
    settings_env,
    start_api,
    start_redis,
    start_seaweed,
    start_worker,
    wait_for,
)

RESULTS = ROOT / "bench" / "results"
WRK_POST = ROOT / "bench" / "wrk_initiate.lua"

OUT_OF_REACH = 1_000_000_000
"""The rate limit the benchmarks set: the limiter still counts (and costs) every request,
but the load from one address never reaches it."""

BENCH_KEY = "bench-key-0000000001"
"""The API key of the tenant the benchmarks' requests come from when a tenants file is in use."""


def write_tenants_file(workdir: Path, **bench: Any) -> Path:
    """A tenants file of two tenants: ``bench`` (key :data:`BENCH_KEY`, limits out of reach
    unless given) and ``other``, so every request goes through the keyed path."""
    fields = {"rate_limit": OUT_OF_REACH, "max_active_jobs": OUT_OF_REACH, **bench}
    lines = ["[tenants.bench]", f'keys = ["{BENCH_KEY}"]', *(f"{k} = {v}" for k, v in fields.items())]
    lines += ["", "[tenants.other]", 'keys = ["other-key-0000000001"]', ""]
    path = workdir / "tenants.toml"
    path.write_text("\n".join(lines))
    return path


@dataclass
class Stack:
    settings: Settings
    workdir: Path
    base: str
    services: list[Service]
    api: Service | None
    workers: list[Service]

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        # A bundle run leaves gigabytes in the store; left behind, a few runs fill /tmp
        # and the next run's writes time out.
        for data in self.workdir.glob("seaweedfs-*"):
            shutil.rmtree(data, ignore_errors=True)

    def api_worker_pids(self) -> list[int]:
        """The gunicorn worker processes (children of the arbiter)."""
        assert self.api is not None
        out = subprocess.run(["pgrep", "-P", str(self.api.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]


def bench_settings(redis_port: int, s3_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "s3_endpoint": f"http://127.0.0.1:{s3_port}",
        "rate_limit_max_requests": OUT_OF_REACH,
    }
    values.update(overrides)
    return load_settings(environ={}, overrides=values, dotenv_path=None)


def bucket_ready(storage: Any) -> bool:
    """True once the bucket exists (created if missing)."""
    try:
        storage.ensure_bucket()
        return True
    except Exception:
        return False


def start_stack(
    workdir: Path,
    workers: int = 2,
    api_workers: int = 2,
    concurrency: int = 100,
    api_env: dict[str, str] | None = None,
    worker_env: dict[str, str] | None = None,
    **overrides: Any,
) -> Stack:
    """Redis, SeaweedFS (seeded), ``workers`` Celery workers and, unless ``api_workers`` is 0, gunicorn."""
    from delineate.dev.seed import seed
    from delineate.storage import Storage

    started: list[Service] = []  # stopped again if any later step fails, so nothing leaks
    try:
        redis, redis_port = start_redis(workdir)
        started.append(redis)
        seaweed, s3_port = start_seaweed(load_settings(environ={}, dotenv_path=None), workdir)
        started.append(seaweed)
        settings = bench_settings(redis_port, s3_port, **overrides)
        storage = Storage(settings)
        wait_for(lambda: bucket_ready(storage), 30, "bucket")
        seed(storage, SAMPLE_IDS)
        worker_services: list[Service] = []
        for n in range(workers):
            worker_services.append(
                start_worker(settings, workdir, f"bench-worker-{n}", concurrency=concurrency, **(worker_env or {}))
            )
            started.append(worker_services[-1])
        api: Service | None = None
        base = ""
        if api_workers:
            api, base = start_api(settings, workdir, "bench-api", workers=api_workers, **(api_env or {}))
            started.append(api)
    except BaseException:
        Stack(load_settings(environ={}, dotenv_path=None), workdir, "", started, None, []).stop()
        raise
    return Stack(settings, workdir, base, started, api, worker_services)


# -- wrk ------------------------------------------------------------------------------------


def wrk(
    url: str,
    seconds: int,
    connections: int,
    script: Path | None = None,
    threads: int = 2,
    headers: dict[str, str] | None = None,
    script_args: list[str] | None = None,
) -> dict[str, float]:
    """One wrk run: requests/s, p50 and p99 in ms, and failures (non-2xx/3xx and socket errors).
    ``script_args`` go to the script's ``init``."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script_args:
        command += ["--", *script_args]
    if script:
        command[1:1] = ["-s", str(script)]
    for name, value in (headers or {}).items():
        command[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = (int(errors.group(1)) if errors else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": failures}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Hello:
    """The HTTP ceiling: ``bench/hello.py`` under the same gunicorn settings as the API."""

    def __init__(self, settings: Settings, workdir: Path, workers: int = 2) -> None:
        self.port = free_port()
        command = [
            str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(workers), "bench.hello:app",
        ]  # fmt: skip
        self.service = Service("bench-hello", command, workdir / "hello.log", settings_env(settings))
        self.url = f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> Hello:
        self.service.start()
        wait_for(lambda: answers(self.url), 30, "hello")
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.stop()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def script_main(parser: Any, measure: Any) -> int:
    """A benchmark script's ``main``: parse its arguments, measure, write ``--json`` if given."""
    args = parser().parse_args()
    result = measure(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
