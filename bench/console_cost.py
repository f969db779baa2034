"""What the console's two reads cost: ``/v1/stats/timeline`` and ``/v1/errors`` at their largest.

The store holds a full hour of timeline steps (every latency bucket filled in every step:
more than any real traffic writes) and a full error log (100 entries). Then, under wrk
beside the bare hello: ``GET /v1/stats/timeline?minutes=60`` (360 steps merged into 120
buckets; each API process keeps the settled steps, so in steady running a call reads only
the newest from Redis) and ``GET /v1/errors?limit=100`` (one ``LRANGE``). Also timed
in-process, with nothing cached: one pipeline of 360 ``HGETALL``\\s and the merge.

    .venv/bin/python bench/console_cost.py [--runs 3] [--seconds 10] [--json bench/results/console_cost.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import Hello, median, script_main, start_stack, wrk
from delineate.store import errorlog
from delineate.telemetry import timeline
from delineate.telemetry.timeline import LATENCY_BOUNDS


def fill(client: Any) -> None:
    """An hour of steps with every field set, and a full error log."""
    pipe = client.pipeline(transaction=False)
    for step in timeline.window_steps(timeline.MAX_MINUTES):
        fields: dict[str, int] = {"n": 1000, "e4": 10, "e5": 1, "completed": 50, "failed": 2, "cancelled": 1}
        fields.update({f"h{i}": 10 + i for i in range(len(LATENCY_BOUNDS) + 1)})
        fields.update({"queue": 5, "running": 8})
        pipe.hset(timeline.step_key(step), mapping=fields)
        pipe.expire(timeline.step_key(step), timeline.KEEP_SECONDS)
    for i in range(errorlog.ERROR_LOG_LENGTH):
        record = errorlog.entry(
            "api", f"The job store (Redis) is unavailable; try again shortly. ({i})", status=503,
            route="GET /v1/download/status/<job_id>", requestId=f"req-{i:08d}", traceId="ab" * 16,
        )  # fmt: skip
        for command in errorlog.add_commands("", record):
            pipe.execute_command(*command)
    pipe.execute()


def in_process(client: Any, calls: int = 50) -> dict[str, float]:
    """Milliseconds per timeline call when nothing is cached (a process's first call, or a
    window that no process has read for a minute): the Redis pipeline, then parsing and
    merging the steps into the answer."""
    redis_ms, build_ms = [], []
    for _ in range(calls):
        steps = timeline.window_steps(timeline.MAX_MINUTES)
        began = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for step in steps:
            pipe.hgetall(timeline.step_key(step))
        stored = pipe.execute()
        middle = time.perf_counter()
        timeline.build(timeline.MAX_MINUTES, steps, [timeline.parse(values) for values in stored])
        redis_ms.append((middle - began) * 1000)
        build_ms.append((time.perf_counter() - middle) * 1000)
    return {"redis_ms": statistics.median(redis_ms), "build_ms": statistics.median(build_ms)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    stack = start_stack(workdir, workers=0, api_workers=2)
    runs: list[dict[str, Any]] = []
    try:
        client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
        fill(client)
        timeline_url = f"{stack.base}/v1/stats/timeline?minutes={timeline.MAX_MINUTES}"
        errors_url = f"{stack.base}/v1/errors?limit={errorlog.ERROR_LOG_LENGTH}"
        with Hello(stack.settings, workdir) as hello:
            for url in (hello.url, timeline_url, errors_url):
                wrk(url, 2, args.connections)  # warm-up
            for n in range(args.runs):
                fill(client)  # the steps of the first minutes have moved out of the window
                hellos = [wrk(hello.url, args.seconds, args.connections)]
                timeline_run = wrk(timeline_url, args.seconds, args.connections)
                hellos.append(wrk(hello.url, args.seconds, args.connections))
                errors_run = wrk(errors_url, args.seconds, args.connections)
                hellos.append(wrk(hello.url, args.seconds, args.connections))
                timeline_run["ratio"] = timeline_run["rps"] / ((hellos[0]["rps"] + hellos[1]["rps"]) / 2)
                errors_run["ratio"] = errors_run["rps"] / ((hellos[1]["rps"] + hellos[2]["rps"]) / 2)
                run = {"hellos": hellos, "timeline": timeline_run, "errors": errors_run, **in_process(client)}
                runs.append(run)
                print(
                    f"run {n + 1}: hello {median([h['rps'] for h in hellos]):.0f}/s  "
                    f"timeline {timeline_run['rps']:.0f}/s ({timeline_run['ratio']:.3f}x) "
                    f"p50 {timeline_run['p50_ms']:.1f} p99 {timeline_run['p99_ms']:.1f} ms  "
                    f"errors {errors_run['rps']:.0f}/s ({errors_run['ratio']:.2f}x) p99 {errors_run['p99_ms']:.1f} ms  "
                    f"in-process: Redis {run['redis_ms']:.2f} ms + merge {run['build_ms']:.2f} ms",
                    flush=True,
                )
    finally:
        stack.stop()
    return {"connections": args.connections, "seconds": args.seconds, "runs": runs}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--json", type=Path)
    return parser


def main() -> int:
    return script_main(parser, measure)


if __name__ == "__main__":
    raise SystemExit(main())
