"""The hot path: status and initiate under wrk, beside a bare hello measured in the same run.

Production defaults: delays on (10-120 s), the rate limiter on with its limit out of reach,
the fast paths on (``--no-fast-paths``: FAST_PATHS=false, the libraries alone), open mode
(``--tenants``: a TENANTS_FILE of two tenants, every request with its tenant's key),
request ids, security headers, CORS, Prometheus metrics and the JSON access log on, a
Celery worker running (asleep in the simulated origin, as in production). With
``--telemetry`` the API and the worker also export traces to a local OTLP sink and errors
to a local Sentry ingest, sampling 10 % through the SDK's own variables.

Each run measures GET status of a completed job, then POST initiate (3 ids), each in
``--rounds`` rounds interleaved with the bare hello (hello then route, route then hello,
...: :func:`interleaved`). A route's ratio is its requests over the hello's in the same
rounds, so a machine that speeds up or slows down during a run (this one is shared) moves
both sides of the ratio alike; its p99 is its worst round's. Figures are per run;
``--json`` writes them for ``run_all.py``.

    .venv/bin/python bench/hot_path.py [--runs 5] [--seconds 10] [--rounds 3] [--connections 50]
        [--api-workers 2] [--telemetry] [--no-worker] [--no-fast-paths] [--tenants]
        [--json bench/results/hot_path.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import BENCH_KEY, WRK_POST, Hello, median, start_stack, write_tenants_file, wrk
from tests.support.stack import completed_job as stack_completed_job

SAMPLER_ENV = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}


def completed_job(settings: Any, owner: str = "") -> str:
    """A completed single-file job of ``owner`` in the stack's store (its status read presigns)."""
    from delineate.services import build_services

    return stack_completed_job(build_services(settings).store, owner)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-"))
    env: dict[str, str] = {}
    receivers: list[Any] = []
    overrides: dict[str, Any] = {"fast_paths": not args.no_fast_paths}
    headers: dict[str, str] = {}
    if args.tenants:
        overrides["tenants_file"] = str(write_tenants_file(workdir))
        headers = {"X-API-Key": BENCH_KEY}
    if args.telemetry:
        from tests.support.receivers import OtlpReceiver, SentryReceiver

        otlp, sentry = OtlpReceiver().start(), SentryReceiver().start()
        receivers = [otlp, sentry]
        overrides.update(otel_exporter_otlp_endpoint=otlp.endpoint, sentry_dsn=sentry.dsn)
        # The SDK's own variables; at 1 they are left unset: the SDK then keeps every trace.
        env = {**SAMPLER_ENV, "OTEL_TRACES_SAMPLER_ARG": str(args.sampling)} if args.sampling < 1 else {}
    stack = start_stack(
        workdir,
        workers=0 if args.no_worker else 1,
        api_workers=args.api_workers,
        api_env=env,
        worker_env=env,
        **overrides,
    )
    runs: list[dict[str, Any]] = []
    try:
        job_id = completed_job(stack.settings, "bench" if args.tenants else "")
        status_url = f"{stack.base}/v1/download/status/{job_id}"
        initiate_url = f"{stack.base}/v1/download/initiate"
        with Hello(stack.settings, workdir, workers=args.api_workers) as hello:
            # Warm-up: imports, pools and caches exist before the first measured second.
            wrk(hello.url, 2, args.connections)
            wrk(status_url, 2, args.connections, headers=headers)
            wrk(initiate_url, 2, args.connections, WRK_POST, headers=headers)
            for n in range(args.runs):
                status = interleaved(hello.url, status_url, args, headers)
                initiate = interleaved(hello.url, initiate_url, args, headers, WRK_POST)
                hellos = status.pop("hellos") + initiate.pop("hellos")
                run = {
                    "hello": {key: median([h[key] for h in hellos]) for key in hellos[0]},
                    "status": status,
                    "initiate": initiate,
                    "hellos": hellos,
                }
                runs.append(run)
                print(
                    f"run {n + 1}: " + "  ".join(_line(k, run[k]) for k in ("hello", "status", "initiate")), flush=True
                )
                time.sleep(1)
    finally:
        stack.stop()
        for receiver in receivers:
            receiver.stop()
    return {
        "telemetry": args.telemetry,
        "api_workers": args.api_workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "worker": not args.no_worker,
        "fast_paths": not args.no_fast_paths,
        "tenants": args.tenants,
        "runs": runs,
    }


def interleaved(
    hello_url: str, url: str, args: argparse.Namespace, headers: dict[str, str], script: Path | None = None
) -> dict[str, Any]:
    """``url`` and the hello in alternating rounds (hello first, then the route first, and so
    on), ``args.seconds`` of each in ``args.rounds`` rounds. This machine's capacity moves by
    10-25 % from one 10 s stretch to the next; rounds a few seconds apart see about the same
    machine, so the ratio (the route's requests over the hello's, in the same rounds) moves
    far less than the rates. The route's p99 is its worst round's."""
    seconds = max(2, math.ceil(args.seconds / args.rounds))
    hellos: list[dict[str, float]] = []
    rounds: list[dict[str, float]] = []
    for n in range(args.rounds):
        pair = [lambda: hellos.append(wrk(hello_url, seconds, args.connections)),
                lambda: rounds.append(wrk(url, seconds, args.connections, script, headers=headers))]  # fmt: skip
        for step in pair if n % 2 == 0 else reversed(pair):
            step()
    rps = statistics.fmean(r["rps"] for r in rounds)
    return {
        "rps": rps,
        "ratio": rps / statistics.fmean(h["rps"] for h in hellos),
        "p50_ms": median([r["p50_ms"] for r in rounds]),
        "p99_ms": max(r["p99_ms"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "rounds": rounds,
        "hellos": hellos,
    }


def _line(name: str, figures: dict[str, float]) -> str:
    ratio = f" ({figures['ratio']:.2f}x)" if "ratio" in figures else ""
    return f"{name} {figures['rps']:.0f}/s{ratio} p99 {figures['p99_ms']:.1f} ms err {figures['errors']:.0f}"


def summary(result: dict[str, Any]) -> str:
    lines = []
    for route in ("hello", "status", "initiate"):
        rps = [r[route]["rps"] for r in result["runs"]]
        p99 = [r[route]["p99_ms"] for r in result["runs"]]
        text = f"{route:9s} {median(rps):7.0f} req/s ({min(rps):.0f}-{max(rps):.0f})  p99 {median(p99):6.1f} ms"
        if route != "hello":
            ratios = [r[route]["ratio"] for r in result["runs"]]
            text += f"  ratio {median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            text += f"  errors {sum(r[route]['errors'] for r in result['runs']):.0f}"
        lines.append(text)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10, help="of each route (and of the hello beside it) per run")
    parser.add_argument("--rounds", type=int, default=3, help="the rounds those seconds are split into")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--telemetry", action="store_true", help="OTLP + Sentry to local sinks, 10 %% sampling")
    parser.add_argument("--sampling", type=float, default=0.1, help="with --telemetry: the trace ratio (1: all)")
    parser.add_argument("--no-worker", action="store_true", help="no Celery worker (jobs only queue)")
    parser.add_argument("--no-fast-paths", action="store_true", help="FAST_PATHS=false: the libraries alone")
    parser.add_argument("--tenants", action="store_true", help="a TENANTS_FILE in use, every request keyed")
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser


def main() -> int:
    args = parser().parse_args()
    result = measure(args)
    print(summary(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
