"""Benchmark: 2,000 concurrent SSE streams on ONE API process (one gunicorn gevent worker).

Starts its own redis-server and gunicorn (tests/support/stack.py helpers; no S3 is needed: the
jobs are written to the store directly and driven by this script through JobStore, the
same writes and publishes a Celery worker makes). Clients are raw asyncio sockets in a
few processes. Reports:

- RSS of the API worker process before the streams, with all streams open, and the
  growth per stream;
- publish-to-client delay (the event's ``updatedAt``, stamped just before the write and
  publish, to the moment the client read it): p50, p99, max;
- that every stream got ``connected`` and exactly one terminal event, then was closed.

    python bench/sse_streams.py [--streams 2000] [--jobs 200] [--rounds 5] [--clients 2]
                                 [--terminal-spread 1.0]

Aims (issue 3): < 50 KB per stream, p99 < 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from delineate.config import load_settings  # noqa: E402
from delineate.models import TERMINAL_STATES, Job, JobState, Phase  # noqa: E402
from delineate.services import build_services  # noqa: E402
from tests.support.stack import start_api, start_redis, wait_for  # noqa: E402

TERMINAL = {state.value for state in TERMINAL_STATES}


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker, found {children}")
    return int(children[0])


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- client processes -----------------------------------------------------------------------


async def follow(host: str, port: int, job_id: str, stats: dict[str, Any], ready: Any) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write(f"GET /v1/download/stream/{job_id} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        stats["errors"].append(head.split(b"\r\n", 1)[0].decode())
        writer.close()
        return
    buffer = ""
    terminals = 0
    while True:
        size_line = await reader.readline()
        size = int(size_line.strip().split(b";")[0] or b"0", 16)
        if size == 0:
            break
        chunk = await reader.readexactly(size + 2)
        now = time.time()
        buffer += chunk[:-2].decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
            event = fields.get("event")
            if event == "connected":
                with ready.get_lock():
                    ready.value += 1
            elif event:
                delay = now - epoch(json.loads(fields["data"])["updatedAt"])
                stats["delays"].append(delay)
                stats["by_kind"].setdefault(event, []).append(delay)
                terminals += event in TERMINAL
    stats["terminals"].append(terminals)
    writer.close()


async def client_main(host: str, port: int, job_ids: list[str], ready: Any, results: Any) -> None:
    stats: dict[str, Any] = {"delays": [], "terminals": [], "errors": [], "by_kind": {}}
    gate = asyncio.Semaphore(100)  # connect in waves, not all at once

    async def one(job_id: str) -> None:
        async with gate:
            task = asyncio.ensure_future(follow(host, port, job_id, stats, ready))
            await asyncio.sleep(0.002)
        try:
            await task
        except Exception as exc:  # reported, counted as a failed stream
            stats["errors"].append(repr(exc))

    await asyncio.gather(*(one(j) for j in job_ids))
    results.put(stats)


def client_process(host: str, port: int, job_ids: list[str], ready: Any, results: Any) -> None:
    raise_fd_limit(len(job_ids) + 1024)
    asyncio.run(client_main(host, port, job_ids, ready, results))


# -- the run ----------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="progress events per job")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument(
        "--terminal-spread",
        type=float,
        default=1.0,
        help="seconds over which all jobs end (each ends 10 streams)",
    )
    args = parser.parse_args()
    raise_fd_limit(args.streams + 4096)

    workdir = Path(tempfile.mkdtemp(prefix="sse-bench-"))
    redis_service, redis_port = start_redis(workdir)
    settings = load_settings(
        environ={},
        # One client address opens every stream: lift the rate limit (it still counts each request).
        overrides={
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "sse_heartbeat_seconds": 15,
            "rate_limit_max_requests": 1_000_000_000,
        },
        dotenv_path=None,
    )
    api, base = start_api(settings, workdir, "api-bench", workers=1, SSE_MAX_STREAMS=str(args.streams + 100))
    host, port = base.removeprefix("http://").split(":")
    store = build_services(settings).store
    processes: list[mp.Process] = []
    try:
        pid = worker_pid(api.pid)

        def park() -> str:
            job = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, file_ids=list(range(70000, 70070, 7)))
            store.create(job)
            return job.job_id

        # Warm up: the hub, imports and greenlet pools exist before the baseline.
        warm = [park() for _ in range(5)]
        ready = mp.Value("i", 0)
        results: Any = mp.Queue()
        warmup = mp.Process(target=client_process, args=(host, int(port), warm * 10, ready, results))
        warmup.start()
        wait_for(lambda: ready.value == 50, 30, "warm-up streams")
        for job_id in warm:
            store.update(job_id, status=JobState.CANCELLED, phase=Phase.DONE)
        results.get(timeout=30)
        warmup.join(30)
        time.sleep(1.0)
        rss_before = rss_kb(pid)

        jobs = [park() for _ in range(args.jobs)]
        per_job = args.streams // args.jobs
        assignments = [jobs[i % args.jobs] for i in range(per_job * args.jobs)]
        ready = mp.Value("i", 0)
        results = mp.Queue()
        shares = [assignments[i :: args.clients] for i in range(args.clients)]
        began = time.monotonic()
        for share in shares:
            process = mp.Process(target=client_process, args=(host, int(port), share, ready, results))
            process.start()
            processes.append(process)
        wait_for(lambda: ready.value == len(assignments), 120, f"{len(assignments)} streams connected", 0.2)
        connect_seconds = time.monotonic() - began
        cpu_start = cpu_seconds(pid)
        time.sleep(5.0)
        idle_cpu = (cpu_seconds(pid) - cpu_start) / 5.0
        rss_open = rss_kb(pid)

        # Progress events: every job publishes once per second, spread over the second.
        for round_number in range(args.rounds):
            for job_id in jobs:
                store.update(job_id, status=JobState.PROCESSING, phase=Phase.CHECKING, progress=round_number + 1)
                time.sleep(1.0 / len(jobs))
        for job_id in jobs:
            store.update(job_id, status=JobState.FAILED, phase=Phase.DONE, error="bench done")
            time.sleep(args.terminal_spread / len(jobs))

        stats = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(30)
        delays_ms = [d * 1000 for s in stats for d in s["delays"]]
        terminals = [t for s in stats for t in s["terminals"]]
        errors = [e for s in stats for e in s["errors"]]
        time.sleep(1.0)
        rss_after = rss_kb(pid)

        streams = len(assignments)
        print(f"streams: {streams} on one gunicorn gevent worker (pid {pid}), {args.jobs} jobs")
        print(f"connect: all {streams} connected in {connect_seconds:.1f} s")
        print(f"API CPU while holding {streams} quiet streams: {idle_cpu * 100:.0f}% of a core")
        print(
            f"RSS: {rss_before / 1024:.1f} MB before, {rss_open / 1024:.1f} MB with {streams} streams open "
            f"→ {(rss_open - rss_before) / streams:.1f} KB per stream; {rss_after / 1024:.1f} MB after close"
        )
        print(
            f"publish→client delay over {len(delays_ms)} events: p50 {statistics.median(delays_ms):.1f} ms, "
            f"p99 {percentile(delays_ms, 99):.1f} ms, max {max(delays_ms):.1f} ms"
        )
        for kind in sorted({k for s in stats for k in s["by_kind"]}):
            values = [d * 1000 for s in stats for d in s["by_kind"].get(kind, [])]
            print(
                f"  {kind}: {len(values)} events, p50 {statistics.median(values):.1f} ms, "
                f"p99 {percentile(values, 99):.1f} ms"
            )
        exact = sum(1 for t in terminals if t == 1)
        print(f"terminal event exactly once: {exact}/{streams} streams; errors: {len(errors)} {errors[:3]}")
        summary = {
            "streams": streams,
            "terminal_exactly_once": exact,
            "kb_per_stream": round((rss_open - rss_before) / streams, 1),
            "delay_p50_ms": round(statistics.median(delays_ms), 1),
            "delay_p99_ms": round(percentile(delays_ms, 99), 1),
            "errors": len(errors),
        }
        (ROOT / "bench" / "results" / "sse_streams.json").write_text(json.dumps(summary, indent=2))
        ok = exact == streams and not errors
        return 0 if ok else 1
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        api.stop()
        redis_service.stop()


if __name__ == "__main__":
    raise SystemExit(main())
