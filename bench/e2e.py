"""End to end with the origin delay off: jobs per second through the whole stack.

A stack of its own (Redis, SeaweedFS, gunicorn with 2 gevent workers, ``--workers``
Celery workers), then, per run:

- ``singles``: N single-file jobs (the original service's workload: no bundle, the link
  points at the source) submitted over HTTP by 16 client threads; jobs/s is N over the
  time from the first submit to the last completion. Every job is then read back: any
  that is not ``completed`` counts as lost.
- ``bundles``: N jobs of 3 files each (a zip streamed into S3). Throughput is the source
  bytes bundled per second, beside two raw copies of the same bytes (GET the three
  sources, PUT them as one object) by 2 processes of 16 threads, measured in the same run:
  one through boto3's client (``get_object``/``put_object``: the issue's baseline), one
  through the project's ``Storage`` (the direct requests of ``delineate/storage/direct.py`` the
  worker uses), which shows what the job itself adds to moving the bytes.
- ``latency``: one job at a time, initiate -> ``completed`` as a client polling the status
  every 2 ms sees it; the median of 20.
- ``reuse``: the same 100-file export asked again and again, one at a time, on a stack of
  its own with BUNDLE_REUSE on: initiate -> ``completed`` (``"reused": true``, no byte read)
  as ``latency`` measures it, the median of 20 repeats, beside the first (built) export.
  The other scenarios' stack has reuse off, so every bundle job there still builds its zip.

Completion is watched through the worker's own counter of finished jobs (Redis), so the
watching costs the stack nothing.

    .venv/bin/python bench/e2e.py [--runs 3] [--jobs 2000] [--bundle-jobs 1500] [--workers 2]
        [--concurrency 100] [--only singles,bundles,latency,reuse] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import script_main, start_stack
from delineate.dev.seed import SAMPLE_IDS
from delineate.models import TERMINAL_STATES
from delineate.store.keys import job_key
from delineate.telemetry.metrics import JOBS_KEY

CLIENTS = 16
"""Client threads submitting jobs."""

COPY_PROCESSES, COPY_THREADS = 2, 16
"""The raw copy's concurrency."""


def _bundle_ids(n: int) -> list[int]:
    return [SAMPLE_IDS[(3 * n + k) % len(SAMPLE_IDS)] for k in range(3)]


def _finished(redis_client: Any) -> int:
    """Jobs the workers finished in any terminal state (a failed one is then counted lost,
    rather than the run waiting out its timeout for it)."""
    counts = redis_client.hmget(JOBS_KEY, *(state.value for state in TERMINAL_STATES))
    return sum(int(n or 0) for n in counts)


def _submit_all(base: str, bodies: list[list[int]]) -> list[str]:
    def submit(chunk: list[list[int]]) -> list[str]:
        with httpx.Client(base_url=base, timeout=30) as http:
            return [http.post("/v1/download/initiate", json={"file_ids": ids}).json()["jobId"] for ids in chunk]

    chunks = [bodies[i::CLIENTS] for i in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        return [job for jobs in pool.map(submit, chunks) for job in jobs]


def run_jobs(stack: Any, redis_client: Any, bodies: list[list[int]], timeout: float = 600) -> dict[str, Any]:
    before = _finished(redis_client)
    began = time.perf_counter()
    job_ids = _submit_all(stack.base, bodies)
    deadline = time.monotonic() + timeout
    while _finished(redis_client) - before < len(bodies) and time.monotonic() < deadline:
        time.sleep(0.02)
    elapsed = time.perf_counter() - began
    pipe = redis_client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(job_key(job_id), "status", "size")
    rows = pipe.execute()
    completed = [row for row in rows if row[0] == "completed"]
    return {
        "jobs": len(bodies),
        "seconds": elapsed,
        "jobs_per_s": len(completed) / elapsed,
        "lost": len(bodies) - len(completed),
        "result_bytes": sum(int(row[1] or 0) for row in completed),
    }


COPY_CLIENTS = ("boto3", "direct")
"""The raw copy's S3 clients: boto3's own, or the project's Storage (direct requests)."""


def _copy_worker(args: tuple[Any, list[list[int]], Any, str]) -> None:
    settings, sets, queue, client = args
    from delineate.storage import READ_CHUNK_BYTES, Storage, source_key

    storage = Storage(settings)
    s3, bucket = storage._client, settings.s3_bucket_name  # the boto3 baseline, as before the direct requests

    def get(key: str) -> bytes:
        return b"".join(s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(READ_CHUNK_BYTES))

    def copy(item: tuple[int, list[int]]) -> int:
        n, ids = item
        if client == "boto3":
            data = b"".join(get(source_key(i)) for i in ids)
            s3.put_object(Bucket=bucket, Key=f"bench/raw-copy-{n}.bin", Body=data)
        else:
            data = b"".join(b"".join(storage.iter_object(source_key(i))) for i in ids)
            storage.put(f"bench/raw-copy-{n}.bin", data)
        return len(data)

    with ThreadPoolExecutor(COPY_THREADS) as pool:
        queue.put(sum(pool.map(copy, list(enumerate(sets)))))


def raw_copy(settings: Any, sets: list[list[int]], client: str = "boto3") -> dict[str, float]:
    """Bytes per second of a plain GET+PUT copy of ``sets`` (each set one object),
    through ``client`` (one of COPY_CLIENTS)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    shares = [sets[i::COPY_PROCESSES] for i in range(COPY_PROCESSES)]
    began = time.perf_counter()
    workers = [ctx.Process(target=_copy_worker, args=((settings, share, queue, client),)) for share in shares]
    for worker in workers:
        worker.start()
    copied = sum(queue.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join(60)
    elapsed = time.perf_counter() - began
    return {"bytes": copied, "seconds": elapsed, "bytes_per_s": copied / elapsed}


def source_bytes(storage: Any, sets: list[list[int]]) -> int:
    from delineate.storage import source_key

    sizes: dict[int, int] = {}
    for ids in sets:
        for i in ids:
            if i not in sizes:
                info = storage.head(source_key(i))
                sizes[i] = info.size if info else 0
    return sum(sizes[i] for ids in sets for i in ids)


REUSE_FILES = 100
"""Files of the repeated export (``reuse``)."""


def _until_completed(http: httpx.Client, ids: list[int]) -> tuple[float, dict[str, Any]]:
    """Milliseconds from initiate to ``completed`` (status polled every 2 ms), and that status."""
    began = time.perf_counter()
    job_id = http.post("/v1/download/initiate", json={"file_ids": ids}).json()["jobId"]
    while (status := http.get(f"/v1/download/status/{job_id}").json())["status"] not in {"completed", "failed"}:
        time.sleep(0.002)
    return (time.perf_counter() - began) * 1000, status


def reuse(workdir: Path, concurrency: int, samples: int = 20) -> dict[str, Any]:
    """The repeated export on a stack with reuse on: the first (built) and the median repeat."""
    stack = start_stack(workdir / "reuse", workers=1, concurrency=concurrency, download_delay_enabled=False)
    try:
        ids = list(SAMPLE_IDS[:REUSE_FILES])
        with httpx.Client(base_url=stack.base, timeout=30) as http:
            latency(stack.base, 3)  # warm-up
            built_ms, built = _until_completed(http, ids)
            repeats = [_until_completed(http, ids) for _ in range(samples)]
    finally:
        stack.stop()
    return {
        "files": len(ids),
        "built_ms": built_ms,
        "built_reused": bool(built.get("reused")),
        "reused_ms": statistics.median(ms for ms, _ in repeats),
        "reused_all": all(status.get("reused") is True for _, status in repeats),
    }


def latency(base: str, samples: int = 20) -> float:
    times = []
    with httpx.Client(base_url=base, timeout=10) as http:
        for n in range(samples):
            began = time.perf_counter()
            job_id = http.post("/v1/download/initiate", json={"file_ids": [SAMPLE_IDS[n % len(SAMPLE_IDS)]]}).json()[
                "jobId"
            ]
            while http.get(f"/v1/download/status/{job_id}").json()["status"] != "completed":
                time.sleep(0.002)
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every run of the scenarios in ``args.only`` on one stack."""
    only = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-e2e-"))
    stack = start_stack(
        workdir, workers=args.workers, concurrency=args.concurrency, download_delay_enabled=False, bundle_reuse=False
    )
    runs: list[dict[str, Any]] = []
    try:
        import redis

        from delineate.storage import Storage

        client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
        storage = Storage(stack.settings)
        latency(stack.base, 5)  # warm-up: imports, pools, the workers' first tasks
        for n in range(args.runs):
            run: dict[str, Any] = {}
            if "singles" in only:
                run["singles"] = run_jobs(stack, client, [[SAMPLE_IDS[i % len(SAMPLE_IDS)]] for i in range(args.jobs)])
            if "bundles" in only:
                sets = [_bundle_ids(i) for i in range(args.bundle_jobs)]
                bundles = run_jobs(stack, client, sets)
                bundles["source_bytes"] = source_bytes(storage, sets)
                bundles["bytes_per_s"] = bundles["source_bytes"] / bundles["seconds"]
                copy = raw_copy(stack.settings, sets, "boto3")
                bundles["raw_copy_bytes_per_s"] = copy["bytes_per_s"]
                bundles["ratio_to_raw_copy"] = bundles["bytes_per_s"] / copy["bytes_per_s"]
                direct = raw_copy(stack.settings, sets, "direct")
                bundles["direct_copy_bytes_per_s"] = direct["bytes_per_s"]
                bundles["ratio_to_direct_copy"] = bundles["bytes_per_s"] / direct["bytes_per_s"]
                run["bundles"] = bundles
            if "latency" in only:
                run["latency_ms"] = latency(stack.base)
            if "reuse" in only:
                run["reuse"] = reuse(workdir, args.concurrency)
            runs.append(run)
            print(f"run {n + 1}: {json.dumps(run, default=lambda v: round(v, 3))}", flush=True)
    finally:
        stack.stop()
    return {"workers": args.workers, "concurrency": args.concurrency, "runs": runs}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--bundle-jobs", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100, help="threads per Celery worker")
    parser.add_argument("--only", default="singles,bundles,latency,reuse")
    parser.add_argument("--json", type=Path)
    return parser


def main() -> int:
    return script_main(parser, measure)


if __name__ == "__main__":
    raise SystemExit(main())
