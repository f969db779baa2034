"""Worker memory under load: 100 concurrent jobs of 20 x 1 MiB files, delays off.

Starts its own Redis, SeaweedFS and one Celery worker (100 threads) with the memory limit
of the Kubernetes worker pod (deploy/k8s/worker-deployment.yaml, 1 GiB) given as
WORKER_MEMORY_LIMIT_BYTES, which sizes the per-process bundling semaphore
(``delineate.jobs.slots.bundle_slots``). Starts 100 jobs at once over the same 20 objects and
samples the worker's RSS every 50 ms; prints the peak beside the limit. ``--bundle-concurrency``
overrides the semaphore (e.g. 100: no bound, for comparison).

    .venv/bin/python bench/worker_memory.py [--jobs 100] [--files 20] [--bundle-concurrency N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bundle_memory import MIB, PeakSampler, rss_bytes
from bench.stack import start_stack
from delineate import create_app
from delineate.dev.seed import seed
from delineate.jobs.slots import bundle_slots
from delineate.storage import Storage
from tests.support.stack import wait_for

POD_LIMIT_BYTES = 1024 * MIB
"""The worker pod's memory limit in deploy/k8s/worker-deployment.yaml."""

FIRST_ID = 400_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--bundle-concurrency", type=int, default=0, help="0: sized from the 1 GiB limit")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()

    stack = start_stack(
        Path(tempfile.mkdtemp(prefix="delineate-bench-")),
        workers=1,
        api_workers=0,
        concurrency=100,
        download_delay_enabled=False,
        worker_memory_limit_bytes=POD_LIMIT_BYTES,
        bundle_concurrency=args.bundle_concurrency,
    )
    settings, worker = stack.settings, stack.workers[0]
    ids = list(range(FIRST_ID, FIRST_ID + args.files))
    seed(Storage(settings), tuple(ids), size=MIB)
    try:
        client = create_app(settings).test_client()
        idle = rss_bytes(worker.pid)
        sampler = PeakSampler(worker.pid)
        sampler.start()
        began = time.perf_counter()
        jobs = [
            client.post("/v1/download/initiate", json={"file_ids": ids}).get_json()["jobId"] for _ in range(args.jobs)
        ]

        def all_done() -> bool:
            states = [client.get(f"/v1/download/status/{j}").get_json()["status"] for j in jobs]
            return all(s in {"completed", "failed"} for s in states)

        wait_for(all_done, 900, "all jobs", interval=0.5)
        elapsed = time.perf_counter() - began
        sampler.stop.set()
        sampler.join()
        final = [client.get(f"/v1/download/status/{j}").get_json() for j in jobs]
        assert all(s["status"] == "completed" for s in final), {s["error"] for s in final}
    finally:
        stack.stop()
    row = {
        "jobs": args.jobs,
        "files_per_job": args.files,
        "bundle_mib": round(final[0]["size"] / MIB, 1),
        "bundle_concurrency": bundle_slots(settings),
        "seconds": round(elapsed, 1),
        "worker_idle_rss_mb": round(idle / MIB, 1),
        "worker_peak_rss_mb": round(sampler.peak / MIB, 1),
        "limit_mb": POD_LIMIT_BYTES // MIB,
        "peak_share_of_limit": round(sampler.peak / POD_LIMIT_BYTES, 2),
    }
    print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps(row, indent=2))
    fits = sampler.peak < POD_LIMIT_BYTES
    print(
        f"worker peak RSS {row['worker_peak_rss_mb']} MB of a {row['limit_mb']} MB limit -> {'fits' if fits else 'OVER'}"
    )
    return 0 if fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
