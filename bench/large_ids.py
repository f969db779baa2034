"""What 10,000 ids cost, piece by piece (design.md, "Large exports"): not a throughput figure,
the price of one request or one write of a job at MAX_FILE_IDS.

A Redis and a SeaweedFS of its own (seeded), then, in this process, the median of ``--runs``
timings of each step with a 10,000-id job (3 files present, 9,997 missing, as the tests'):

- ``validate``: the initiate body parsed and checked (orjson + the pydantic model), duplicates dropped;
- ``create``: the job's record written by the create script (no task message);
- ``progress write``: a worker's write during the check (counts, ``missingFileIds`` half full),
  and one while bundling (bytes only); both return the whole record, which is decoded;
- ``lease renew``: the lease taken and the record read (what a runner does between files while
  it waits out the simulated delay);
- ``status read``: the record read, made the status JSON and encoded;
- ``history page``: a page of 20 and of 100 such jobs, read and encoded;
- ``manifest``: ``manifest.json`` of 10,000 files and the zip's central directory of 10,000 entries;
- ``estimate``: the estimate's check of 10,000 ids (LIST pages where they are dense, then HEADs),
  and 10,000 HEADs ESTIMATE_CONCURRENCY (16) at a time (the fan-out alone, in threads);
- ``check loop``: the worker's checks one after another (HEAD, or GET with prefetch), 10,000 of them;
- and the record's size in Redis (``MEMORY USAGE``) when queued and when finished.

    .venv/bin/python bench/large_ids.py [--runs 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.stack import RESULTS
from delineate.api.blueprints.downloads import ESTIMATE_CONCURRENCY
from delineate.api.fanout import map_within
from delineate.api.sources import check_sources
from delineate.api.validation import file_ids_body, parse_json
from delineate.config import load_settings
from delineate.dev.seed import SAMPLE_IDS, seed
from delineate.ids import new_uuid
from delineate.jobs.bundle import BundleManifest, Source, stream_bundle
from delineate.models import Job, JobState, Phase
from delineate.services import build_services
from delineate.storage import Storage, source_key
from delineate.store.keys import job_key
from tests.support.stack import start_redis, start_seaweed

IDS = 10_000
AVAILABLE = list(SAMPLE_IDS[:3])
ABSENT = [200_000 + n for n in range(IDS - len(AVAILABLE))]
ALL = [*AVAILABLE, *ABSENT]


def timed(fn: Callable[[], Any], runs: int) -> float:
    """The median of ``runs`` calls, in milliseconds (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def measure(runs: int, workdir: Path) -> dict[str, float]:
    redis_service, redis_port = start_redis(workdir)
    base = load_settings(environ={}, dotenv_path=None)
    seaweed, s3_port = start_seaweed(base, workdir)
    try:
        settings = load_settings(
            environ={},
            dotenv_path=None,
            overrides={"redis_url": f"redis://127.0.0.1:{redis_port}/0", "s3_endpoint": f"http://127.0.0.1:{s3_port}"},
        )
        storage = Storage(settings)
        deadline = time.monotonic() + 30
        while True:
            try:
                storage.ensure_bucket()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        seed(storage, tuple(AVAILABLE))
        return _steps(settings, storage, runs)
    finally:
        seaweed.stop()
        redis_service.stop()


def _steps(settings: Any, storage: Storage, runs: int) -> dict[str, float]:
    svc = build_services(settings)
    store = svc.store
    out: dict[str, float] = {}
    raw = orjson.dumps({"file_ids": ALL})
    model = file_ids_body(settings.max_file_ids)
    out["body bytes"] = len(raw)
    out["validate ms"] = timed(lambda: parse_json(raw, model).unique_ids(), runs)

    def create() -> str:
        job = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=list(ALL), owner="bench")
        store.create(job)
        return job.job_id

    out["create ms"] = timed(create, runs)
    job_id = create()
    out["record bytes queued"] = float(store.redis.memory_usage(job_key(job_id), samples=0) or 0)
    store.write(job_id, status=JobState.PROCESSING, phase=Phase.CHECKING, attempts=1)
    half = ABSENT[: len(ABSENT) // 2]
    out["progress write (check) ms"] = timed(
        lambda: store.write(job_id, completedFiles=5000, availableFiles=3, missingFileIds=half, progress=45), runs
    )
    out["progress write (bundle) ms"] = timed(lambda: store.write(job_id, bytesDone=1000, progress=91), runs)
    out["lease renew ms"] = timed(lambda: store.lease_and_get(job_id, "bench", 30), runs)
    finished = {"completedFiles": IDS, "availableFiles": 3, "missingFileIds": ABSENT}
    jobs = []
    for _ in range(100):
        jid = create()
        store.write(jid, status=JobState.PROCESSING, phase=Phase.CHECKING, attempts=1)
        store.write(jid, status=JobState.COMPLETED, phase=Phase.DONE, progress=100, resultKey="bundles/x.zip",
                    size=1, **finished)  # fmt: skip
        jobs.append(jid)
    out["record bytes finished"] = float(store.redis.memory_usage(job_key(jobs[0]), samples=0) or 0)

    def status() -> bytes:
        job = store.get(jobs[0])
        assert job is not None
        return orjson.dumps(store.status(job))

    out["status read ms"] = timed(status, runs)
    out["status body bytes"] = len(status())
    for limit in (20, 100):

        def page(limit: int = limit) -> bytes:
            found, _ = store.history("bench", list(JobState), limit)
            return orjson.dumps({"jobs": [store.status(job) for job in found]})

        out[f"history page {limit} ms"] = timed(page, max(1, runs // 2))
        out[f"history page {limit} bytes"] = len(page())

    files = [{"file_id": i, "size": 1024, "sha256": "0" * 64} for i in ALL]
    out["manifest json ms"] = timed(lambda: BundleManifest(job_id, [], files).to_json(), runs)
    sources = [Source(i, 1, lambda: [b"x"]) for i in ALL]
    out["zip of 10,000 entries ms"] = timed(lambda: sum(len(c) for c in stream_bundle(job_id, sources, [])), 1)
    out["estimate (LIST pages, then HEADs) ms"] = timed(
        lambda: check_sources(storage, ALL, ESTIMATE_CONCURRENCY, 60), runs
    )
    out["estimate HEADs only ms"] = timed(
        lambda: map_within(lambda i: storage.head(source_key(i)), ALL, ESTIMATE_CONCURRENCY, 60), 1
    )

    def check_loop() -> None:
        for i in ALL:
            storage.head(source_key(i))

    out["check loop (HEADs) ms"] = timed(check_loop, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS / "large-ids.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-large-ids-") as tmp:
        figures = measure(args.runs, Path(tmp))
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:>12,.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
