"""``make bench``: every benchmark scenario against its own production-like stack.

Starts redis-server, SeaweedFS, gunicorn (deploy/gunicorn.conf.py: gevent, 2 workers) and
Celery workers (threads pool) on free ports, runs each scenario ``--runs`` times, and writes
``bench/results/latest.md`` (figure, median, min-max, target, ratio to its ceiling) and
``bench/results/latest.json``. Ceilings are measured in the same run: a bare gunicorn
hello-world on the same settings for HTTP, ``redis-benchmark`` for Redis, a raw boto3
GET+PUT copy for S3. Load comes from wrk (Debian package ``wrk``).

    .venv/bin/python bench/run_all.py [--runs 3] [--only initiate,status,...] [--quick]

Targets are the issue's; a missed one is reported as missed, never loosened.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from delineate import create_app  # noqa: E402
from delineate.config import Settings, load_settings  # noqa: E402
from delineate.seed import SAMPLE_IDS  # noqa: E402
from tests.stack import (  # noqa: E402
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


@dataclass
class Figure:
    name: str
    unit: str
    target: str
    values: list[float] = field(default_factory=list)
    ceiling: list[float] = field(default_factory=list)
    met: Callable[[float], bool] | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def row(self) -> str:
        if not self.values:
            return f"| {self.name} | not run | | {self.target} | | {self.note} |"
        spread = f"{min(self.values):.1f}-{max(self.values):.1f}"
        ratio = ""
        if self.ceiling:
            ratio = f"{self.median / statistics.median(self.ceiling):.2f} of {statistics.median(self.ceiling):.1f}"
        verdict = "" if self.met is None else ("met" if self.met(self.median) else "**missed**")
        return f"| {self.name} | {self.median:.1f} {self.unit} | {spread} | {self.target} {verdict} | {ratio} | {self.note} |"


@dataclass
class Stack:
    settings: Settings
    workdir: Path
    base: str
    services: list[Service]
    api: Service
    workers: list[Service]

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def _settings(redis_port: int, s3_port: int, **overrides: Any) -> Settings:
    values = {
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "s3_endpoint": f"http://127.0.0.1:{s3_port}",
        # The load comes from one address: a real limit would answer 429 to most of it.
        # The limiter still counts every request, so its cost is in the figures.
        "rate_limit_max_requests": 1_000_000_000,
    }
    values.update(overrides)
    return load_settings(environ={}, overrides=values, dotenv_path=None)


def start_stack(workdir: Path, workers: int = 2, api_workers: int = 2, **overrides: Any) -> Stack:
    redis, redis_port = start_redis(workdir)
    seaweed, s3_port = start_seaweed(load_settings(environ={}, dotenv_path=None), workdir)
    settings = _settings(redis_port, s3_port, **overrides)
    from delineate.seed import seed
    from delineate.storage import Storage

    storage = Storage(settings)
    wait_for(lambda: bucket_ready(storage), 30, "bucket")
    seed(storage, SAMPLE_IDS)
    worker_services = [start_worker(settings, workdir, f"bench-worker-{n}", concurrency=100) for n in range(workers)]
    api, base = start_api(settings, workdir, "bench-api", workers=api_workers)
    return Stack(settings, workdir, base, [redis, seaweed, *worker_services, api], api, worker_services)


def bucket_ready(storage: Any) -> bool:
    """True once the bucket exists (created if missing)."""
    try:
        storage.ensure_bucket()
        return True
    except Exception:
        return False


# -- wrk ------------------------------------------------------------------------------------


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", str(script)]
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


def hello_ceiling(settings: Settings, workdir: Path, seconds: int) -> dict[str, float]:
    port = free_port()
    command = [
        str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
        "--access-logfile", "/dev/null", "bench.hello:app",
    ]  # fmt: skip
    service = Service("bench-hello", command, workdir / "hello.log", settings_env(settings)).start()
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), 30, "hello")
        return wrk(f"http://127.0.0.1:{port}/", seconds, 50)
    finally:
        service.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- scenarios --------------------------------------------------------------------------------


def scenario_http(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    # Delays on (production), no Celery worker needed for the API's own speed: jobs queue.
    stack = start_stack(workdir, workers=0)
    try:
        with httpx.Client(base_url=stack.base) as http:
            job_id = http.post("/v1/download/initiate", json={"file_ids": [70000]}).json()["jobId"]
        for _ in range(args.runs):
            hello = hello_ceiling(stack.settings, workdir, args.seconds)
            init = wrk(f"{stack.base}/v1/download/initiate", args.seconds, 50, WRK_POST)
            status = wrk(f"{stack.base}/v1/download/status/{job_id}", args.seconds, 50)
            figures["initiate_rps"].values.append(init["rps"])
            figures["initiate_rps"].ceiling.append(hello["rps"])
            figures["initiate_p99"].values.append(init["p99_ms"])
            figures["initiate_errors"].values.append(init["errors"])
            figures["status_rps"].values.append(status["rps"])
            figures["status_rps"].ceiling.append(hello["rps"])
            figures["status_p99"].values.append(status["p99_ms"])
            figures["hello_rps"].values.append(hello["rps"])
        out = subprocess.run(
            ["redis-benchmark", "-p", stack.settings.redis_url.split(":")[2].split("/")[0], "-q", "-t", "set,lpush", "-n", "50000"],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        figures["redis_ceiling"].note = " ".join(out.replace("\r", "\n").split("\n")[-3:]).strip()
    finally:
        stack.stop()


def _finish_all(client: Any, job_ids: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    counts: dict[str, int] = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            state = client.get(f"/v1/download/status/{job_id}").get_json()["status"]
            if state in {"completed", "failed", "cancelled"}:
                counts[state] = counts.get(state, 0) + 1
                pending.discard(job_id)
        time.sleep(0.1)
    counts["stuck"] = len(pending)
    return counts


def scenario_e2e(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    stack = start_stack(workdir, workers=2, download_delay_enabled=False)
    try:
        client = create_app(stack.settings).test_client()
        for _ in range(args.runs):
            singles = []
            for n in range(20):
                began = time.perf_counter()
                job_id = client.post("/v1/download/initiate", json={"file_ids": [70000 + 7 * n]}).get_json()["jobId"]
                wait_for(
                    lambda j=job_id: client.get(f"/v1/download/status/{j}").get_json()["status"] == "completed",
                    30,
                    "single",
                    interval=0.002,
                )
                singles.append((time.perf_counter() - began) * 1000)
            figures["single_job_ms"].values.append(statistics.median(singles))
            jobs = args.e2e_jobs
            began = time.perf_counter()
            ids = [
                client.post(
                    "/v1/download/initiate", json={"file_ids": [70000 + 7 * (n % 140), 70007, 70014]}
                ).get_json()["jobId"]
                for n in range(jobs)
            ]
            counts = _finish_all(client, ids, timeout=600)
            elapsed = time.perf_counter() - began
            figures["e2e_jobs_per_s"].values.append(counts.get("completed", 0) / elapsed)
            figures["e2e_lost_or_stuck"].values.append(jobs - counts.get("completed", 0))
    finally:
        stack.stop()


def scenario_waiting(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    stack = start_stack(workdir, workers=2, download_delay_min_ms=5000, download_delay_max_ms=10000)
    try:
        client = create_app(stack.settings).test_client()
        began = time.perf_counter()
        ids = [
            client.post("/v1/download/initiate", json={"file_ids": [70000 + 7 * (n % 140)]}).get_json()["jobId"]
            for n in range(args.waiting_jobs)
        ]
        counts = _finish_all(client, ids, timeout=900)
        figures["waiting_seconds"].values.append(time.perf_counter() - began)
        figures["waiting_seconds"].note = f"{args.waiting_jobs} jobs, {counts}; target = 2 x 10 s + 30 s"
    finally:
        stack.stop()


def scenario_fairness(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    stack = start_stack(workdir, workers=2, download_delay_enabled=False)
    try:
        client = create_app(stack.settings).test_client()
        big = [list(range(20000 + k * 1000, 21000 + k * 1000)) for k in range(10)]
        for ids in big:
            client.post("/v1/download/initiate", json={"file_ids": ids})
        began = time.perf_counter()
        small = client.post("/v1/download/initiate", json={"file_ids": [70000]}).get_json()["jobId"]
        wait_for(
            lambda: client.get(f"/v1/download/status/{small}").get_json()["status"] == "completed",
            300,
            "small job",
            interval=0.01,
        )
        figures["fairness_seconds"].values.append(time.perf_counter() - began)
    finally:
        stack.stop()


def scenario_idle(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    stack = start_stack(workdir, workers=1, api_workers=1)
    try:
        time.sleep(3)
        api_children = subprocess.run(
            ["pgrep", "-P", str(stack.api.pid)], capture_output=True, text=True
        ).stdout.split()
        figures["idle_api_rss_mb"].values.append(max(_rss_mb(int(p)) for p in api_children))
        figures["idle_worker_rss_mb"].values.append(_rss_mb(stack.workers[0].pid))
    finally:
        stack.stop()


def scenario_script(args: argparse.Namespace, figures: dict[str, Figure], script: str) -> None:
    """Run one of the standalone scripts; it writes bench/results/<name>.json, read here."""
    out = subprocess.run([sys.executable, f"bench/{script}"], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if out.returncode != 0:
        print(f"bench: {script} failed:\n{out.stdout[-800:]}{out.stderr[-800:]}", flush=True)
        return
    if script == "sse_streams.py":
        sse = json.loads((RESULTS / "sse_streams.json").read_text())
        figures["sse_terminal"].values.append(100 * sse["terminal_exactly_once"] / sse["streams"])
        figures["sse_kb"].values.append(sse["kb_per_stream"])
        figures["sse_p99"].values.append(sse["delay_p99_ms"])
        figures["sse_p99"].note = f"p50 {sse['delay_p50_ms']} ms, {sse['streams']} streams on one gevent worker"
        return
    rows = {r["bundle_mb"]: r for r in json.loads((RESULTS / "bundle_memory.json").read_text())}
    big = rows[max(rows)]
    figures["bundle_ratio"].values.append(100 * big["ratio_to_raw_copy"])
    figures["bundle_ratio"].note = f"{big['mb_per_s']} MB/s vs raw copy {big['raw_copy_mb_per_s']} MB/s, {max(rows)} MB"
    figures["bundle_rss"].values.append(max(row["worker_peak_rss_mb"] for row in rows.values()))
    figures["bundle_rss"].note = "peak RSS by bundle size: " + ", ".join(
        f"{size} MB → {row['worker_peak_rss_mb']} MB" for size, row in sorted(rows.items())
    )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--e2e-jobs", type=int, default=2000)
    parser.add_argument("--waiting-jobs", type=int, default=1000)
    parser.add_argument("--only", default="http,e2e,waiting,fairness,idle,sse,bundles")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is missing (apt-get install wrk)", file=sys.stderr)
        return 2

    figures = {
        "hello_rps": Figure("bare gunicorn hello (ceiling)", "req/s", ""),
        "initiate_rps": Figure("initiate, 50 conn, delays on", "req/s", "≥ 2500", met=lambda v: v >= 2500),
        "initiate_p99": Figure("initiate p99", "ms", "≤ 50", met=lambda v: v <= 50),
        "initiate_errors": Figure("initiate errors", "", "0", met=lambda v: v == 0),
        "status_rps": Figure("status, 50 conn", "req/s", "≥ 4000", met=lambda v: v >= 4000),
        "status_p99": Figure("status p99", "ms", "≤ 25", met=lambda v: v <= 25),
        "redis_ceiling": Figure("redis-benchmark (ceiling)", "", ""),
        "single_job_ms": Figure("single job initiate→completed, delays off", "ms", "≤ 25", met=lambda v: v <= 25),
        "e2e_jobs_per_s": Figure("end-to-end, 3-id bundles, delays off", "jobs/s", "≥ 150", met=lambda v: v >= 150),
        "e2e_lost_or_stuck": Figure("end-to-end lost or stuck", "jobs", "0", met=lambda v: v == 0),
        "waiting_seconds": Figure("waiting capacity: all jobs done", "s", "≤ 50", met=lambda v: v <= 50),
        "fairness_seconds": Figure("1-file job after ten 1000-file jobs", "s", "≤ 5", met=lambda v: v <= 5),
        "idle_api_rss_mb": Figure("idle API worker RSS", "MB", ""),
        "idle_worker_rss_mb": Figure("idle Celery worker RSS", "MB", ""),
        "sse_terminal": Figure("SSE: streams that got their terminal event once", "%", "100", met=lambda v: v == 100),
        "sse_kb": Figure("SSE: RSS per stream", "KB", "< 50", met=lambda v: v < 50),
        "sse_p99": Figure("SSE: publish→client p99", "ms", "< 200", met=lambda v: v < 200),
        "bundle_ratio": Figure("bundling 1 GB, % of raw S3 copy throughput", "%", "≥ 70", met=lambda v: v >= 70),
        "bundle_rss": Figure("bundling: worker peak RSS (every size)", "MB", "≤ 150", met=lambda v: v <= 150),
    }
    only = set(args.only.split(","))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("http", lambda: scenario_http(args, figures)),
        ("e2e", lambda: scenario_e2e(args, figures)),
        ("waiting", lambda: scenario_waiting(args, figures)),
        ("fairness", lambda: scenario_fairness(args, figures)),
        ("idle", lambda: scenario_idle(args, figures)),
        ("sse", lambda: scenario_script(args, figures, "sse_streams.py")),
        ("bundles", lambda: scenario_script(args, figures, "bundle_memory.py")),
    ]
    for name, step in steps:
        if name in only:
            print(f"bench: {name} ...", flush=True)
            try:
                step()
            except Exception as exc:  # a failed scenario is reported, the rest still run
                print(f"bench: {name} failed: {exc}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Benchmark results ({time.strftime('%Y-%m-%d %H:%M')}, {args.runs} runs, medians)",
        "",
        "| figure | median | min-max | target | ratio to ceiling | note |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f.row() for f in figures.values()],
    ]
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {k: {"values": f.values, "ceiling": f.ceiling, "note": f.note} for k, f in figures.items()}, indent=2
        )
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
