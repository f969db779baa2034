"""A resumed bundle against a fresh one (design.md, "Large exports": "Resume").

A Redis and a SeaweedFS of its own, ``--mb`` of sources (16 MiB files), then:

1. a fresh job bundles them all, timed from its run's start (``processing`` seen) to
   ``completed``;
2. a second job of the same ids (BUNDLE_REUSE off: it builds its own bundle) has its worker
   SIGKILLed once ``bytesDone`` reaches ``--kill-at`` of ``bytesTotal``; a new worker takes
   the job (lease and visibility timeout expire) and resumes it, timed from the resumed
   run's start (``attempts`` 2 seen) to ``completed``; the wait for the redelivery itself
   (the visibility timeout) is reported beside it, not counted.

The figure: the resumed run's time, % of the fresh run's (target ≤ 40 at 80 %).

    .venv/bin/python bench/resume.py [--mb 1000] [--kill-at 0.8] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import RESULTS, bench_settings, bucket_ready, wait_for
from delineate import create_app
from delineate.config import load_settings
from delineate.dev.seed import seed
from delineate.storage import Storage
from tests.support.stack import start_redis, start_seaweed, start_worker

FILE_BYTES = 16 * 1024 * 1024
FIRST_ID = 920_000
POLL_SECONDS = 0.05


def _until(get: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout: float) -> float:
    """Poll until ``done``; returns when it first held (monotonic seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get()
        if done(status):
            return time.monotonic()
        if status["status"] in {"failed", "cancelled"}:
            raise RuntimeError(f"job ended {status['status']}: {status.get('error')}")
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"job not done in {timeout} s: {get()}")


def measure(mb: int, kill_at: float, workdir: Path) -> dict[str, Any]:
    redis_service, redis_port = start_redis(workdir)
    base = load_settings(environ={}, dotenv_path=None)
    seaweed, s3_port = start_seaweed(base, workdir)
    workers = []
    try:
        settings = bench_settings(
            redis_port,
            s3_port,
            download_delay_enabled=False,
            bundle_reuse=False,
            job_lease_seconds=3,
            visibility_timeout_seconds=4,
            unacked_restore_interval_seconds=1,
        )
        storage = Storage(settings)
        wait_for(lambda: bucket_ready(storage), 30, "bucket")
        ids = list(range(FIRST_ID, FIRST_ID + max(2, mb * 1024 * 1024 // FILE_BYTES)))
        seed(storage, tuple(ids), size=FILE_BYTES)
        client = create_app(settings).test_client()

        def status_of(job_id: str) -> Callable[[], dict[str, Any]]:
            return lambda: client.get(f"/v1/download/status/{job_id}").get_json()

        workers.append(start_worker(settings, workdir, "bench-resume-fresh", concurrency=2))
        fresh = status_of(client.post("/v1/download/initiate", json={"file_ids": ids}).get_json()["jobId"])
        began = _until(fresh, lambda s: s["status"] != "queued", 60)
        fresh_s = _until(fresh, lambda s: s["status"] == "completed", 1800) - began

        job_id = client.post("/v1/download/initiate", json={"file_ids": ids}).get_json()["jobId"]
        killed = status_of(job_id)
        _until(killed, lambda s: s["status"] == "processing" and s["bytesDone"] >= kill_at * s["bytesTotal"] > 0, 1800)
        workers[0].kill()
        at_kill = killed()
        restarted = time.monotonic()
        workers.append(start_worker(settings, workdir, "bench-resume-rescuer", concurrency=2))
        resumed_began = _until(killed, lambda s: s["attempts"] >= 2, 120)
        resumed_s = _until(killed, lambda s: s["status"] == "completed", 1800) - resumed_began
        log = workers[-1].log()
        return {
            "bundle_mb": round(fresh()["size"] / 1e6, 1),
            "files": len(ids),
            "fresh_s": round(fresh_s, 2),
            "killed_at_bytes_done": at_kill["bytesDone"],
            "bytes_total": at_kill["bytesTotal"],
            "redelivery_wait_s": round(resumed_began - restarted, 2),
            "resumed_s": round(resumed_s, 2),
            "resumed_pct_of_fresh": round(100 * resumed_s / fresh_s, 1),
            "resumed_log": [line for line in log.splitlines() if "resuming at byte" in line][-1:],
        }
    finally:
        for worker in workers:
            worker.stop()
        seaweed.stop()
        redis_service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--kill-at", type=float, default=0.8)
    parser.add_argument("--json", type=Path, default=RESULTS / "resume.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        result = measure(args.mb, args.kill_at, Path(tmp))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
