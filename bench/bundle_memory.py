"""Worker memory while bundling: 100 MB and 1 GB of 1 MiB files, delays off.

Starts its own Redis, SeaweedFS and one Celery worker, seeds N objects of 1 MiB (ids from
200000), runs one job over them, and samples the worker process's RSS every 50 ms.
Also times a raw boto3 streaming copy (GET + multipart PUT) of the same bytes as the
ceiling the bundler is compared with.

    .venv/bin/python bench/bundle_memory.py [--sizes-mb 100 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import bucket_ready
from delineate import create_app
from delineate.config import load_settings
from delineate.dev.seed import seed
from delineate.storage import Storage, source_key
from tests.support.stack import start_redis, start_seaweed, start_worker, wait_for

MIB = 1024 * 1024
FIRST_ID = 200_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.05)


def raw_copy_seconds(storage: Storage, ids: list[int]) -> float:
    began = time.perf_counter()
    storage.upload_stream("bench/raw-copy.bin", (c for i in ids for c in storage.iter_object(source_key(i))))
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    redis, redis_port = start_redis(workdir)
    seaweed, s3_port = start_seaweed(load_settings(environ={}, dotenv_path=None), workdir)
    settings = load_settings(
        environ={},
        dotenv_path=None,
        overrides={
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "s3_endpoint": f"http://127.0.0.1:{s3_port}",
            "download_delay_enabled": False,
            "rate_limit_max_requests": 1_000_000_000,  # this script polls the status often
        },
    )
    storage = Storage(settings)
    wait_for(lambda: bucket_ready(storage), 30, "bucket")
    results = []
    worker = start_worker(settings, workdir, "worker-bench")
    try:
        client = create_app(settings).test_client()
        for size_mb in args.sizes_mb:
            ids = list(range(FIRST_ID, FIRST_ID + size_mb))
            seed(storage, tuple(ids), size=MIB)
            copy_s = raw_copy_seconds(storage, ids)
            idle = rss_bytes(worker.pid)
            sampler = PeakSampler(worker.pid)
            sampler.start()
            began = time.perf_counter()
            job_id = client.post("/v1/download/initiate", json={"file_ids": ids}).get_json()["jobId"]
            wait_for(lambda job_id=job_id: _finished(client, job_id), 900, "bundle", interval=0.2)
            elapsed = time.perf_counter() - began
            sampler.stop.set()
            sampler.join()
            status = client.get(f"/v1/download/status/{job_id}").get_json()
            assert status["status"] == "completed", status
            row = {
                "bundle_mb": size_mb,
                "bundle_bytes": status["size"],
                "seconds": round(elapsed, 2),
                "mb_per_s": round(status["size"] / MIB / elapsed, 1),
                "raw_copy_mb_per_s": round(size_mb / copy_s, 1),
                "ratio_to_raw_copy": round((status["size"] / MIB / elapsed) / (size_mb / copy_s), 2),
                "worker_idle_rss_mb": round(idle / MIB, 1),
                "worker_peak_rss_mb": round(sampler.peak / MIB, 1),
            }
            results.append(row)
            print(json.dumps(row))
    finally:
        worker.stop()
        seaweed.stop()
        redis.stop()
    Path("bench/results/bundle_memory.json").write_text(json.dumps(results, indent=2))
    peak = max(r["worker_peak_rss_mb"] for r in results)
    print(f"target: worker peak RSS < 150 MB -> {'met' if peak < 150 else 'MISSED'} ({peak} MB)")
    return 0


def _finished(client: object, job_id: str) -> bool:
    status = client.get(f"/v1/download/status/{job_id}").get_json()["status"]  # type: ignore[attr-defined]
    return status in {"completed", "failed"}


if __name__ == "__main__":
    raise SystemExit(main())
