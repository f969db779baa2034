"""The fair share under a backlog: how long one tenant's job waits to start while another
tenant has a thousand jobs queued.

A stack of its own (Redis, SeaweedFS, gunicorn, one Celery worker of ``--concurrency``
threads) with a tenants file of two tenants, ``alice`` and ``bob``, the origin delay on at
``--delay-ms`` (each job takes between half of it and all of it). Per run:

1. alice queues ``--backlog`` single-file jobs over HTTP (her cap on active jobs above it);
2. while her backlog drains, bob starts ``--probes`` jobs one after another, each once his
   previous one started; a probe's wait is the time from his initiate's answer until its
   status leaves ``queued`` (polled every 10 ms);
3. alice's backlog is then waited out and every job read back: any not ``completed`` is lost.

Without the fair share, bob's first job would wait behind all of alice's (about
``backlog x mean job time / concurrency``); with it, a probe waits for the next slot that
frees, at most one job's time. Reported: bob's p50/p95/max wait, alice's jobs/s while bob
was served, and the jobs lost.

    .venv/bin/python bench/fair_share.py [--runs 3] [--backlog 1000] [--probes 40]
        [--concurrency 8] [--delay-ms 600] [--json bench/results/fair_share.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import OUT_OF_REACH, script_main, start_stack
from delineate.dev.seed import SAMPLE_IDS
from delineate.models import TERMINAL_STATES

ALICE, BOB = {"X-API-Key": "alice-bench-key-0001"}, {"X-API-Key": "bob-bench-key-00001"}
TERMINAL = {state.value for state in TERMINAL_STATES}


def _tenants_file(workdir: Path) -> Path:
    path = workdir / "tenants.toml"
    path.write_text(
        f'[tenants.alice]\nkeys = ["{ALICE["X-API-Key"]}"]\nrate_limit = {OUT_OF_REACH}\n'
        f"max_active_jobs = {OUT_OF_REACH}\n\n"
        f'[tenants.bob]\nkeys = ["{BOB["X-API-Key"]}"]\nrate_limit = {OUT_OF_REACH}\n'
    )
    return path


def _initiate(client: httpx.Client, headers: dict[str, str], n: int) -> str:
    response = client.post(
        "/v1/download/initiate", json={"file_ids": [SAMPLE_IDS[n % len(SAMPLE_IDS)]]}, headers=headers
    )
    response.raise_for_status()
    return str(response.json()["jobId"])


def _status(client: httpx.Client, headers: dict[str, str], job_id: str) -> str:
    return str(client.get(f"/v1/download/status/{job_id}", headers=headers).json()["status"])


def one_run(base: str, args: argparse.Namespace) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=30) as client, ThreadPoolExecutor(16) as pool:
        began = time.perf_counter()
        backlog = list(pool.map(lambda n: _initiate(client, ALICE, n), range(args.backlog)))
        queued_in = time.perf_counter() - began
        waits: list[float] = []
        probes: list[str] = []
        done_before = len(_terminal(client, ALICE, backlog))
        served_from = time.perf_counter()
        for n in range(args.probes):
            job_id = _initiate(client, BOB, n)
            asked = time.perf_counter()
            probes.append(job_id)
            while _status(client, BOB, job_id) == "queued":
                time.sleep(0.01)
            waits.append(time.perf_counter() - asked)
        served_for = time.perf_counter() - served_from
        alice_done_meanwhile = len(_terminal(client, ALICE, backlog)) - done_before
        deadline = time.monotonic() + args.backlog * args.delay_ms / 1000 / args.concurrency * 3 + 120
        pending = set(backlog)
        while pending and time.monotonic() < deadline:
            pending -= set(_terminal(client, ALICE, list(pending)))
            time.sleep(0.5)
        states = [_status(client, ALICE, job_id) for job_id in backlog] + [
            _status(client, BOB, job_id) for job_id in probes
        ]
    ordered = sorted(waits)
    return {
        "backlog_queued_s": round(queued_in, 2),
        "bob_wait_p50_s": round(statistics.median(waits), 3),
        "bob_wait_p95_s": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 3),
        "bob_wait_max_s": round(ordered[-1], 3),
        "alice_jobs_per_s_meanwhile": round(alice_done_meanwhile / served_for, 2),
        "fifo_wait_estimate_s": round(args.backlog * 0.75 * args.delay_ms / 1000 / args.concurrency, 1),
        "lost": sum(1 for state in states if state != "completed"),
    }


def _terminal(client: httpx.Client, headers: dict[str, str], job_ids: list[str]) -> list[str]:
    return [job_id for job_id in job_ids if _status(client, headers, job_id) in TERMINAL]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    stack = start_stack(
        workdir,
        workers=1,
        concurrency=args.concurrency,
        tenants_file=str(_tenants_file(workdir)),
        download_delay_min_ms=args.delay_ms // 2,
        download_delay_max_ms=args.delay_ms,
    )
    runs = []
    try:
        for n in range(args.runs):
            run = one_run(stack.base, args)
            runs.append(run)
            print(f"run {n + 1}: {json.dumps(run)}", flush=True)
    finally:
        stack.stop()
    return {
        "backlog": args.backlog,
        "probes": args.probes,
        "concurrency": args.concurrency,
        "delay_ms": args.delay_ms,
        "runs": runs,
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--delay-ms", type=int, default=600, help="the longest job's origin delay")
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser


def main() -> int:
    return script_main(parser, measure)


if __name__ == "__main__":
    raise SystemExit(main())
