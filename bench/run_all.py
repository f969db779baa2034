"""``make bench``: every benchmark scenario against its own production-like stack.

Each scenario starts its own redis-server, SeaweedFS, gunicorn (deploy/gunicorn.conf.py:
gevent) and Celery workers (threads pool) on free ports (``bench/stack.py``), runs
``--runs`` times, and writes ``bench/results/latest.md`` (figure, median, min-max,
target met or missed, note) and ``bench/results/latest.json``. Ceilings are measured in
the same run: a bare Flask hello on the same gunicorn settings for HTTP (every HTTP
figure is also a ratio to it), a raw boto3 GET+PUT copy for S3 (and beside it the same
copy through the worker's own direct S3 requests, without a target). Load comes from wrk
(Debian package ``wrk``).

    .venv/bin/python bench/run_all.py [--runs 3] [--only hot,telemetry,capacity,e2e,...] [--keep]
        [--volume-jobs 1000000]

``--keep`` with ``--only``: the figures of the other scenarios stay, carried from the report
being replaced and marked with its date.

Targets are the issues'; a missed one is reported as missed, never loosened.
"""

from __future__ import annotations

import argparse
import json
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import console_cost, e2e, fair_share, hot_path, volume  # noqa: E402
from bench.stack import RESULTS, start_stack, wait_for  # noqa: E402
from delineate import create_app  # noqa: E402
from delineate.models import TERMINAL_STATES  # noqa: E402


@dataclass
class Figure:
    name: str
    unit: str
    target: str
    values: list[float] = field(default_factory=list)
    met: Callable[[float], bool] | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def row(self) -> str:
        if not self.values:
            return f"| {self.name} | not run | | {self.target} | {self.note} |"
        spread = f"{min(self.values):.2f}-{max(self.values):.2f}"
        verdict = "" if self.met is None else (" met" if self.met(self.median) else " **missed**")
        return f"| {self.name} | {self.median:.2f} {self.unit} | {spread} | {self.target}{verdict} | {self.note} |"


def _spread(values: list[float], unit: str = "") -> str:
    return f"{statistics.median(values):.0f}{unit} ({min(values):.0f}-{max(values):.0f})"


# -- scenarios --------------------------------------------------------------------------------


def _hot_args(args: argparse.Namespace, *extra: str) -> argparse.Namespace:
    return hot_path.parser().parse_args(["--runs", str(args.runs), "--seconds", str(args.seconds), *extra])


def scenario_hot(
    args: argparse.Namespace,
    figures: dict[str, Figure],
    telemetry: bool = False,
    libraries: bool = False,
    tenants: bool = False,
) -> None:
    """Status and initiate beside the hello, production defaults (``telemetry``: traced;
    ``libraries``: FAST_PATHS=false, the price of the reference path; ``tenants``: a
    tenants file in use, every request with its key)."""
    extra = [
        *(["--telemetry"] if telemetry else []),
        *(["--no-fast-paths"] if libraries else []),
        *(["--tenants"] if tenants else []),
    ]
    result = hot_path.measure(_hot_args(args, *extra))
    prefix = "telemetry_" if telemetry else "libraries_" if libraries else "tenants_" if tenants else ""
    (RESULTS / f"hot_path{'_' + prefix.rstrip('_') if prefix else ''}.json").write_text(json.dumps(result, indent=2))
    runs = result["runs"]
    hello = [h["rps"] for run in runs for h in run["hellos"]]
    for route in ("status", "initiate"):
        rps = [run[route]["rps"] for run in runs]
        figures[f"{prefix}{route}_ratio"].values += [run[route]["ratio"] for run in runs]
        figures[f"{prefix}{route}_ratio"].note = f"{_spread(rps, ' req/s')} beside hello {_spread(hello, ' req/s')}"
        if not telemetry:
            figures[f"{prefix}{route}_p99"].values += [run[route]["p99_ms"] for run in runs]
            figures[f"{prefix}{route}_errors"].values += [run[route]["errors"] for run in runs]


def scenario_capacity(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    """How status and initiate move with 1, 2 and 4 gunicorn workers on this machine."""
    for workers in (1, 2, 4):
        result = hot_path.measure(_hot_args(args, "--runs", "1", "--api-workers", str(workers)))
        run = result["runs"][0]
        for route in ("status", "initiate"):
            figure = figures[f"capacity_{route}_{workers}"]
            figure.values.append(run[route]["rps"])
            figure.note = f"{run[route]['ratio']:.2f} x hello ({run['hello']['rps']:.0f} req/s), p99 {run[route]['p99_ms']:.0f} ms"


def scenario_e2e(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    """Jobs per second, bundle throughput and single-job latency, delays off."""
    result = e2e.measure(e2e.parser().parse_args(["--runs", str(args.runs)]))
    (RESULTS / "e2e.json").write_text(json.dumps(result, indent=2))
    for run in result["runs"]:
        figures["singles_jobs_per_s"].values.append(run["singles"]["jobs_per_s"])
        figures["singles_lost"].values.append(run["singles"]["lost"] + run["bundles"]["lost"])
        figures["bundle_copy_ratio"].values.append(run["bundles"]["ratio_to_raw_copy"])
        figures["bundle_direct_copy_ratio"].values.append(run["bundles"]["ratio_to_direct_copy"])
        figures["single_job_ms"].values.append(run["latency_ms"])
        figures["reused_export_ms"].values.append(run["reuse"]["reused_ms"])
    reused = [run["reuse"] for run in result["runs"]]
    figures["reused_export_ms"].note = (
        f"the first export of the {reused[0]['files']} files (built): {_spread([r['built_ms'] for r in reused], ' ms')}; "
        f"every repeat reused: {all(r['reused_all'] for r in reused)}"
    )
    bundles = [run["bundles"] for run in result["runs"]]
    figures["bundle_copy_ratio"].note = (
        f"bundled {_spread([b['bytes_per_s'] / 1e6 for b in bundles], ' MB/s')} vs raw copy "
        f"{_spread([b['raw_copy_bytes_per_s'] / 1e6 for b in bundles], ' MB/s')} (boto3)"
    )
    figures["bundle_direct_copy_ratio"].note = (
        f"the same copy through Storage's direct requests: "
        f"{_spread([b['direct_copy_bytes_per_s'] / 1e6 for b in bundles], ' MB/s')}"
    )


def scenario_console(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    """The console's reads at their largest (a full hour of steps, a full error log)."""
    result = console_cost.measure(
        console_cost.parser().parse_args(["--runs", str(args.runs), "--seconds", str(args.seconds)])
    )
    (RESULTS / "console_cost.json").write_text(json.dumps(result, indent=2))
    runs = result["runs"]
    for name, key in (("timeline", "console_timeline"), ("errors", "console_errors")):
        figures[f"{key}_p50"].values += [run[name]["p50_ms"] for run in runs]
        figures[f"{key}_p50"].note = (
            f"{_spread([run[name]['rps'] for run in runs], ' req/s')} at 10 conn, "
            f"p99 {_spread([run[name]['p99_ms'] for run in runs], ' ms')}, "
            f"{sum(run[name]['errors'] for run in runs):.0f} errors"
        )
    figures["console_timeline_p50"].note += (
        f"; in-process: Redis {statistics.median(run['redis_ms'] for run in runs):.2f} ms "
        f"+ merge {statistics.median(run['build_ms'] for run in runs):.2f} ms per call"
    )


def scenario_volume(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    """A million jobs in one Redis (bench/volume.py): memory, reads, a sweep, cost per job."""
    result = volume.measure(volume.parser().parse_args(["--jobs", str(args.volume_jobs)]))
    (RESULTS / "volume.json").write_text(json.dumps(result, indent=2))
    job, fill, status, history = result["per_job"], result["fill"], result["status"], result["history"]
    sweep = max(result["sweeps"], key=lambda row: row["seconds"])
    jobs = f"{result['jobs']:,} jobs"
    figures["volume_memory"].values.append(fill["memory_bytes_per_completed_job"])
    figures["volume_memory"].note = (
        f"{jobs}, each export distinct (BUNDLE_REUSE on): the hash {fill['job_hash_bytes']} B, the rest its "
        f"indexes and its bundle's reuse: record; a live job "
        f"{fill['memory_bytes_per_live_job']:.0f} B (its waiting message); used_memory {fill['used_memory'] / 2**20:.0f} MiB"
    )
    figures["volume_status_ratio"].values.append(status["p99_ratio"])
    figures["volume_status_ratio"].note = (
        f"p50/p99 {status['p50_ms']['full']:.2f}/{status['p99_ms']['full']:.2f} ms at {jobs}, "
        f"{status['p50_ms']['small']:.2f}/{status['p99_ms']['small']:.2f} ms with {status['small_store_jobs']:,}; "
        f"Redis {status['redis_cpu_us_per_read']:.0f} µs per read"
    )
    figures["volume_history_p99"].values.append(history["limit_20"]["p99_ms"])
    figures["volume_history_p99"].note = (
        f"{history['tenant_jobs']:,} jobs, pages from random positions; limit=100 p99 "
        f"{history['limit_100']['p99_ms']:.1f} ms"
    )
    figures["volume_sweep_s"].values.append(sweep["seconds"])
    figures["volume_sweep_s"].note = (
        f"slowest of {len(result['sweeps'])}: Redis CPU {sweep['redis_cpu_s'] * 1000:.0f} ms, "
        f"{sweep['live']:,} live of which {sweep['stale_live']:,} unwritten for two intervals"
    )
    figures["volume_round_trips"].values.append(job["round_trips"])
    figures["volume_round_trips"].note = (
        f"{job['commands_sent']:.1f} commands sent, {job['commands_run']:.1f} run with those in scripts "
        f"({job['jobs']} real two-file jobs)"
    )
    figures["volume_redis_us"].values.append(job["redis_cpu_us"])
    figures["volume_redis_us"].note = (
        f"one primary at 75 % of a core: {result['capacity']['jobs_per_s_at_75pct']:,.0f} jobs/s, "
        f"{result['capacity']['jobs_per_s_with_10_status_reads']:,.0f} with 10 status reads each"
    )


def _finish_all(client: Any, job_ids: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    counts: dict[str, int] = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            state = client.get(f"/v1/download/status/{job_id}").get_json()["status"]
            if state in TERMINAL_STATES:
                counts[state] = counts.get(state, 0) + 1
                pending.discard(job_id)
        time.sleep(0.1)
    counts["stuck"] = len(pending)
    return counts


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


def scenario_fair_share(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    """Two tenants, one with a 1,000-job backlog: how long the other's jobs wait to start."""
    result = fair_share.measure(fair_share.parser().parse_args(["--runs", str(args.runs)]))
    (RESULTS / "fair_share.json").write_text(json.dumps(result, indent=2))
    runs = result["runs"]
    figures["fair_share_p95"].values += [run["bob_wait_p95_s"] for run in runs]
    figures["fair_share_p95"].note = (
        f"{result['backlog']} jobs of alice queued, {result['probes']} of bob's one after another, "
        f"{result['concurrency']} worker threads, jobs {result['delay_ms'] // 2}-{result['delay_ms']} ms; "
        f"bob's p50 {_spread([run['bob_wait_p50_s'] * 1000 for run in runs], ' ms')}, "
        f"max {_spread([run['bob_wait_max_s'] * 1000 for run in runs], ' ms')}; alice meanwhile "
        f"{_spread([run['alice_jobs_per_s_meanwhile'] for run in runs], ' jobs/s')}; in arrival order bob would "
        f"wait about {runs[0]['fifo_wait_estimate_s']:.0f} s"
    )
    figures["fair_share_lost"].values += [run["lost"] for run in runs]


def scenario_idle(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    stack = start_stack(workdir, workers=1, api_workers=1)
    try:
        time.sleep(3)
        figures["idle_api_rss_mb"].values.append(max(_rss_mb(pid) for pid in stack.api_worker_pids()))
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


def scenario_resume(args: argparse.Namespace, figures: dict[str, Figure]) -> None:
    """A 1 GB bundle killed at 80 % and resumed, against a fresh build (``bench/resume.py``)."""
    out = subprocess.run([sys.executable, "bench/resume.py"], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if out.returncode != 0:
        print(f"bench: resume.py failed:\n{out.stdout[-800:]}{out.stderr[-800:]}", flush=True)
        return
    run = json.loads((RESULTS / "resume.json").read_text())
    figures["resume_pct"].values.append(run["resumed_pct_of_fresh"])
    figures["resume_pct"].note = (
        f"{run['bundle_mb']} MB: fresh {run['fresh_s']} s, resumed {run['resumed_s']} s after a kill at "
        f"{100 * run['killed_at_bytes_done'] / run['bytes_total']:.0f} % (redelivery wait {run['redelivery_wait_s']} s, not counted)"
    )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def figures_of_record() -> dict[str, Figure]:
    """Every figure of the report, with its issue's target."""
    figures = {
        # issue 27: the original's quiet-machine ratio (0.94 x) and half its p99 at 50 connections
        "status_ratio": Figure("status, 50 conn, x hello", "x", "≥ 0.95", met=lambda v: v >= 0.95),
        "status_p99": Figure("status p99", "ms", "≤ 30", met=lambda v: v <= 30),
        "status_errors": Figure("status errors", "", "0", met=lambda v: v == 0),
        "initiate_ratio": Figure("initiate, 50 conn, x hello", "x", "≥ 0.61", met=lambda v: v >= 0.61),
        "initiate_p99": Figure("initiate p99", "ms", "≤ 150", met=lambda v: v <= 150),
        "initiate_errors": Figure("initiate errors", "", "0", met=lambda v: v == 0),
        "telemetry_status_ratio": Figure(
            "status, tracing + Sentry, 10 % sampled, x hello", "x", "≥ 0.5", met=lambda v: v >= 0.5
        ),
        "telemetry_initiate_ratio": Figure(
            "initiate, tracing + Sentry, 10 % sampled, x hello", "x", "≥ 0.35", met=lambda v: v >= 0.35
        ),
        "libraries_status_ratio": Figure("status, FAST_PATHS=false, x hello", "x", ""),
        "libraries_status_p99": Figure("status p99, FAST_PATHS=false", "ms", ""),
        "libraries_status_errors": Figure("status errors, FAST_PATHS=false", "", "0", met=lambda v: v == 0),
        "libraries_initiate_ratio": Figure("initiate, FAST_PATHS=false, x hello", "x", ""),
        "libraries_initiate_p99": Figure("initiate p99, FAST_PATHS=false", "ms", ""),
        "libraries_initiate_errors": Figure("initiate errors, FAST_PATHS=false", "", "0", met=lambda v: v == 0),
        "tenants_status_ratio": Figure("status, tenants file, keyed, x hello", "x", "≥ 0.84", met=lambda v: v >= 0.84),
        "tenants_status_p99": Figure("status p99, tenants file", "ms", ""),
        "tenants_status_errors": Figure("status errors, tenants file", "", "0", met=lambda v: v == 0),
        "tenants_initiate_ratio": Figure(
            "initiate, tenants file, keyed, x hello", "x", "≥ 0.61", met=lambda v: v >= 0.61
        ),
        "tenants_initiate_p99": Figure("initiate p99, tenants file", "ms", ""),
        "tenants_initiate_errors": Figure("initiate errors, tenants file", "", "0", met=lambda v: v == 0),
        "singles_jobs_per_s": Figure("single-file jobs, delays off", "jobs/s", "≥ 185", met=lambda v: v >= 185),
        "singles_lost": Figure("end-to-end jobs lost", "jobs", "0", met=lambda v: v == 0),
        "bundle_copy_ratio": Figure("3-file bundles, x raw S3 GET+PUT copy", "x", "≥ 0.9", met=lambda v: v >= 0.9),
        "bundle_direct_copy_ratio": Figure("3-file bundles, x the same copy with the worker's S3 requests", "x", ""),
        "single_job_ms": Figure("one job initiate→completed, delays off", "ms", "≤ 20", met=lambda v: v <= 20),
        "reused_export_ms": Figure(
            "a repeated 100-file export initiate→completed (reused), delays off", "ms", "≤ 50", met=lambda v: v <= 50
        ),
    }
    for workers in (1, 2, 4):
        for route in ("status", "initiate"):
            figures[f"capacity_{route}_{workers}"] = Figure(f"{route}, {workers} gunicorn worker(s)", "req/s", "")
    figures.update(
        {
            "waiting_seconds": Figure("waiting capacity: all jobs done", "s", "≤ 50", met=lambda v: v <= 50),
            "fairness_seconds": Figure("1-file job after ten 1000-file jobs", "s", "≤ 5", met=lambda v: v <= 5),
            "fair_share_p95": Figure(
                "fair share: the other tenant's p95 wait to start, behind a 1,000-job backlog",
                "s",
                "≤ 0.6 (one job's time)",
                met=lambda v: v <= 0.6,
            ),
            "fair_share_lost": Figure("fair share: jobs lost", "jobs", "0", met=lambda v: v == 0),
            "idle_api_rss_mb": Figure("idle API worker RSS", "MB", ""),
            "idle_worker_rss_mb": Figure("idle Celery worker RSS", "MB", ""),
            "sse_terminal": Figure(
                "SSE: streams that got their terminal event once", "%", "100", met=lambda v: v == 100
            ),
            "sse_kb": Figure("SSE: RSS per stream", "KB", "< 50", met=lambda v: v < 50),
            "sse_p99": Figure("SSE: publish→client p99", "ms", "< 200", met=lambda v: v < 200),
            "bundle_ratio": Figure("bundling 1 GB, % of raw S3 copy throughput", "%", "≥ 70", met=lambda v: v >= 70),
            "bundle_rss": Figure("bundling: worker peak RSS (every size)", "MB", "≤ 150", met=lambda v: v <= 150),
            "console_timeline_p50": Figure("console: GET /v1/stats/timeline?minutes=60, full hour, p50", "ms", ""),
            "console_errors_p50": Figure("console: GET /v1/errors?limit=100, full log, p50", "ms", ""),
            "volume_memory": Figure(
                "volume: Redis memory per completed job, every index", "B", "≤ 1536 (1.5 KB)", met=lambda v: v <= 1536
            ),
            "volume_status_ratio": Figure(
                "volume: status p99 at a million jobs, x a small store's", "x", "≤ 1.2", met=lambda v: v <= 1.2
            ),
            "volume_history_p99": Figure(
                "volume: history page p99, tenant of 100,000 jobs", "ms", "≤ 20", met=lambda v: v <= 20
            ),
            "volume_sweep_s": Figure("volume: one sweep, 100,000 live jobs", "s", "≤ 1", met=lambda v: v <= 1),
            "volume_round_trips": Figure("volume: Redis round trips per job, initiate → completed", "", ""),
            "volume_redis_us": Figure("volume: Redis CPU per job, initiate → completed", "µs", ""),
            "resume_pct": Figure("resumed 1 GB bundle, % of a fresh build's time", "%", "≤ 40", met=lambda v: v <= 40),
        }
    )
    return figures


def _load() -> str:
    one, five, _ = Path("/proc/loadavg").read_text().split()[:3]
    return f"load average {one} / {five}"


def _carry_over(figures: dict[str, Figure]) -> str:
    """``--keep``: the figures this run did not measure, from the report it replaces, each
    note marked with that report's date. Returns the sentence that says so ('' if none)."""
    previous = RESULTS / "latest.json"
    if not previous.exists():
        return ""
    old = json.loads(previous.read_text())
    when = old.get("_measured", "an earlier run")
    carried = 0
    for key, figure in figures.items():
        entry = old.get(key)
        if figure.values or not isinstance(entry, dict) or not entry.get("values"):
            continue
        figure.values = entry["values"]
        note = entry.get("note", "")
        # A figure carried before keeps the date it was measured on, not the last report's.
        figure.note = note if note.startswith("(from ") else f"(from {when}) {note}".strip()
        carried += 1
    return f"{carried} figures not measured by this run are carried from {when}, marked so." if carried else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--waiting-jobs", type=int, default=1000)
    parser.add_argument(
        "--only",
        default="hot,telemetry,libraries,tenants,capacity,e2e,waiting,fairness,fair_share,idle,sse,bundles,console,volume,resume",
    )
    parser.add_argument("--volume-jobs", type=int, default=1_000_000, help="the volume scenario's jobs")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="carry the figures of the scenarios not run from the current latest.json, each marked with its date",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is missing (apt-get install wrk)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = figures_of_record()
    only = set(args.only.split(","))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("hot", lambda: scenario_hot(args, figures)),
        ("telemetry", lambda: scenario_hot(args, figures, telemetry=True)),
        ("libraries", lambda: scenario_hot(args, figures, libraries=True)),
        ("tenants", lambda: scenario_hot(args, figures, tenants=True)),
        ("capacity", lambda: scenario_capacity(args, figures)),
        ("e2e", lambda: scenario_e2e(args, figures)),
        ("waiting", lambda: scenario_waiting(args, figures)),
        ("fairness", lambda: scenario_fairness(args, figures)),
        ("fair_share", lambda: scenario_fair_share(args, figures)),
        ("idle", lambda: scenario_idle(args, figures)),
        ("sse", lambda: scenario_script(args, figures, "sse_streams.py")),
        ("bundles", lambda: scenario_script(args, figures, "bundle_memory.py")),
        ("console", lambda: scenario_console(args, figures)),
        ("volume", lambda: scenario_volume(args, figures)),
        ("resume", lambda: scenario_resume(args, figures)),
    ]
    loads = []
    for name, step in steps:
        if name in only:
            print(f"bench: {name} ... ({_load()})", flush=True)
            loads.append(f"{name}: {_load()}")
            try:
                step()
            except Exception as exc:  # a failed scenario is reported, the rest still run
                print(f"bench: {name} failed: {exc}", flush=True)
    carried = _carry_over(figures) if args.keep else ""
    lines = [
        f"# Benchmark results ({time.strftime('%Y-%m-%d %H:%M')}, {args.runs} runs, medians)",
        "",
        "Made by `make bench` (`bench/run_all.py`). Ratios are to the bare hello measured beside each",
        "route in the same run (`bench/hot_path.py`). The machine (2 cores) is shared: the load average",
        "when each scenario began: " + "; ".join(loads) + ".",
        *([carried] if carried else []),
        "",
        "| figure | median | min-max | target | note |",
        "| --- | --- | --- | --- | --- |",
        *[f.row() for f in figures.values()],
    ]
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    record: dict[str, Any] = {k: {"values": f.values, "note": f.note} for k, f in figures.items()}
    record["_measured"] = f"the run of {time.strftime('%Y-%m-%d %H:%M')}"
    (RESULTS / "latest.json").write_text(json.dumps(record, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
