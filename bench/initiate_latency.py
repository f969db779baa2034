"""Server time of POST /v1/download/initiate with production delays on.

Starts its own Redis, SeaweedFS and one gunicorn gevent worker (no Celery worker: the
jobs only queue), sends sequential initiates over one keep-alive connection and reads
the app's own time from the ``Server-Timing`` header. Prints p50/p90/p99 per run and
the median of the runs.

    .venv/bin/python bench/initiate_latency.py [--requests 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import start_stack


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_run(base: str, requests: int) -> dict[str, float]:
    server: list[float] = []
    client: list[float] = []
    with httpx.Client(base_url=base, timeout=10) as http:
        for i in range(requests):
            began = time.perf_counter()
            response = http.post("/v1/download/initiate", json={"file_ids": [70000 + 7 * (i % 50), 70001]})
            client.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 202, response.text
            server.append(float(response.headers["server-timing"].split("dur=")[1]))
    return {
        "server_p50_ms": percentile(server, 0.50),
        "server_p90_ms": percentile(server, 0.90),
        "server_p99_ms": percentile(server, 0.99),
        "client_p50_ms": percentile(client, 0.50),
        "client_p99_ms": percentile(client, 0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    # Production delays on; no Celery worker (the jobs only queue); the rate limit lifted.
    stack = start_stack(workdir, workers=0, api_workers=1)
    try:
        one_run(stack.base, 200)  # warm-up
        runs = [one_run(stack.base, args.requests) for _ in range(args.runs)]
    finally:
        stack.stop()
    for n, run in enumerate(runs, 1):
        print(f"run {n}: " + "  ".join(f"{k}={v:.2f}" for k, v in run.items()))
    summary = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print("median: " + "  ".join(f"{k}={v:.2f}" for k, v in summary.items()))
    out = Path("bench/results/initiate_latency.json")
    out.write_text(json.dumps({"runs": runs, "median": summary, "requests": args.requests}, indent=2))
    print(f"target: server p50 < 10 ms -> {'met' if summary['server_p50_ms'] < 10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
