"""Where status and initiate spend their time: py-spy samples one gunicorn worker under wrk.

Starts its own stack (production delays, a Celery worker asleep in them, one gunicorn
gevent worker), drives one route with wrk at 50 connections and has py-spy sample the
gunicorn worker meanwhile. For each route, writes the collapsed stacks to
``bench/results/profile-<route>.txt`` and, to ``bench/results/hot-path-profile.md``, the
share of samples per layer (inclusive: a frame's callees count towards it) and the
functions that hold the most samples themselves.

    .venv/bin/python bench/profile_hot_path.py [--seconds 15] [--routes status,initiate,hello] [--telemetry]

``hello`` profiles the bare hello the ratios are taken to (``bench/hello.py``, same gunicorn
settings and worker class), so the two can be read side by side.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hot_path import SAMPLER_ENV, completed_job
from bench.stack import RESULTS, WRK_POST, Hello, start_stack
from tests.support.stack import BIN

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("gunicorn + gevent (outside the app)", ("__OUTSIDE__",)),
    ("the app (the fast lane and Flask behind it)", ("FastLane.__call__",)),
    ("Flask request handling (what the lane hands over)", ("Flask.wsgi_app",)),
    ("request id, key (the lane's _begin, Flask's before_request)", ("FastLane._begin", "Flask.preprocess_request")),
    ("rate limit (Redis script; status's job read rides along)", ("RateLimiter.hit",)),
    ("status: job decode", ("JobStore.job_from_reply",)),
    ("status JSON (to_status, presign)", ("Job.to_status", "JobStore.status")),
    ("body parsing and validation", ("parse_json", "parse_body")),
    ("accept: job create + message (Redis script)", ("accept",)),
    ("the create script's round trip", ("JobStore.create",)),
    ("Celery message (built for the script)", ("TaskQueue._message", "task_message")),
    ("response: headers and metrics/access log", ("FastLane._answer",)),
    ("edge headers", ("Edge.headers",)),
    ("metrics and access log", ("RequestObserver.record",)),
    ("access log", ("AccessLog.write",)),
    ("tracing (OpenTelemetry)", ("RequestTracer.open", "RequestTracer.close", "start_span")),
    ("every Redis round trip (pipelined lane)", ("PipelinedRedis.execute",)),
]
"""Rows of the summary: a label and the frame names (function or Class.method) that make it up."""


def _frames(stack_text: str) -> list[str]:
    return [frame.split(" (")[0] for frame in stack_text.split(";")]


def summarise(raw: Path) -> tuple[int, list[str], list[str]]:
    total = 0
    layers: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = _frames(stack_text)
        names = set(frames)
        inside = "FastLane.__call__" in names or "Flask.wsgi_app" in names or "Flask.__call__" in names
        for label, members in LAYERS:
            if members == ("__OUTSIDE__",):
                if not inside:
                    layers[label] += samples
            elif names & set(members):
                layers[label] += samples
        if frames:
            own[frames[-1]] += samples
    layer_rows = [f"| {label} | {100 * layers[label] / max(total, 1):.1f} % |" for label, _ in LAYERS if layers[label]]
    own_rows = [f"| `{name}` | {100 * n / max(total, 1):.1f} % |" for name, n in own.most_common(15)]
    return total, layer_rows, own_rows


def profile(route: str, seconds: int, telemetry: bool) -> tuple[str, Path]:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-profile-"))
    env: dict[str, str] = {}
    overrides: dict[str, str] = {}
    receivers = []
    if telemetry:
        from tests.support.receivers import OtlpReceiver, SentryReceiver

        otlp, sentry = OtlpReceiver().start(), SentryReceiver().start()
        receivers = [otlp, sentry]
        overrides = {"otel_exporter_otlp_endpoint": otlp.endpoint, "sentry_dsn": sentry.dsn}
        env = dict(SAMPLER_ENV)
    stack = start_stack(workdir, workers=1, api_workers=1, api_env=env, worker_env=env, **overrides)
    suffix = "-telemetry" if telemetry else ""
    raw = RESULTS / f"profile-{route}{suffix}.txt"
    hello: Hello | None = None
    try:
        pid = stack.api_worker_pids()[0]
        if route == "status":
            url, script = f"{stack.base}/v1/download/status/{completed_job(stack.settings)}", None
        elif route == "hello":  # the ceiling the ratios are taken to, on the same worker class
            hello = Hello(stack.settings, workdir, workers=1).__enter__()
            url, script = hello.url, None
            pid = int(subprocess.run(["pgrep", "-P", str(hello.service.pid)], capture_output=True, text=True).stdout)
        else:
            url, script = f"{stack.base}/v1/download/initiate", WRK_POST
        command = ["wrk", "-t2", "-c50", f"-d{seconds}s", url]
        if script:
            command[1:1] = ["-s", str(script)]
        load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        time.sleep(2)  # let the load settle
        subprocess.run(
            [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration",
             str(seconds - 4), "--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking"],
            check=True, capture_output=True,
        )  # fmt: skip
        out = load.communicate(timeout=seconds + 30)[0]
    finally:
        if hello is not None:
            hello.__exit__()
        stack.stop()
        for receiver in receivers:
            receiver.stop()
    rps = next((line.split()[-1] for line in out.splitlines() if "Requests/sec" in line), "?")
    return rps, raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--routes", default="status,initiate,hello")
    parser.add_argument("--telemetry", action="store_true")
    args = parser.parse_args()
    sections = [
        "# Where the hot path spends its time",
        "",
        "py-spy (250 Hz) samples ONE gunicorn gevent worker while wrk drives one route with 50",
        "connections (production delays, a Celery worker asleep in them, no OTLP endpoint or Sentry DSN"
        + (", here WITH both configured and 10 % sampling" if args.telemetry else "")
        + "). One worker serves all the load, so its req/s is about half the two-worker figure.",
        "Shares are of all samples of the worker, inclusive (a layer counts its callees).",
        f"Made by `.venv/bin/python bench/profile_hot_path.py{' --telemetry' if args.telemetry else ''}`"
        f" on {time.strftime('%Y-%m-%d %H:%M')}.",
    ]
    for route in args.routes.split(","):
        rps, raw = profile(route, args.seconds, args.telemetry)
        total, layer_rows, own_rows = summarise(raw)
        sections += [
            "",
            f"## {route} ({rps} req/s on one worker, {total} samples; raw stacks: `bench/results/{raw.name}`)",
            "",
            "| layer | share of samples |",
            "| --- | --- |",
            *layer_rows,
            "",
            "Functions holding the most samples themselves (leaf frames):",
            "",
            "| function | share |",
            "| --- | --- |",
            *own_rows,
        ]
    name = "hot-path-profile-telemetry.md" if args.telemetry else "hot-path-profile.md"
    text = "\n".join(sections) + "\n"
    (RESULTS / name).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
