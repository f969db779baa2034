"""Where an initiate's time goes: py-spy samples one gunicorn worker under wrk load.

Starts its own Redis, SeaweedFS and one gunicorn gevent worker (production delays, no
Celery worker: jobs only queue), runs wrk against POST /v1/download/initiate with 50
connections, and has py-spy sample the worker meanwhile. Writes the collapsed stacks to
``bench/results/initiate-profile.txt`` and a table of the functions that hold the most
samples (inclusive) to ``bench/results/initiate-profile.md``.

    .venv/bin/python bench/profile_initiate.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run_all import RESULTS, WRK_POST, start_stack  # noqa: E402
from tests.stack import BIN  # noqa: E402

WATCH = (
    "initiate", "parse_body", "create", "send_task", "_create_or_replay", "current_owner", "hit",
    "_add_headers", "full_dispatch_request", "publish", "execute_command", "model_validate",
    "record_request", "wsgi_app", "handle_request", "_assign_request_id", "check_request_limit",
    "_ratelimit", "before_request", "after_request", "_instrumented", "start_span",
)  # fmt: skip
"""Function names worth a row of their own in the summary."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="delineate-profile-"))
    stack = start_stack(workdir, workers=0, api_workers=1)
    raw = RESULTS / "initiate-profile.txt"
    try:
        worker_pid = int(
            subprocess.run(["pgrep", "-P", str(stack.api.pid)], capture_output=True, text=True).stdout.split()[0]
        )
        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c50", f"-d{args.seconds}s", "-s", str(WRK_POST), f"{stack.base}/v1/download/initiate"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(2)  # let the load settle
        subprocess.run(
            [str(BIN / "py-spy"), "record", "--pid", str(worker_pid), "--duration", str(args.seconds - 4),
             "--format", "raw", "--output", str(raw), "--nonblocking"],
            check=True, capture_output=True,
        )  # fmt: skip
        wrk_out = wrk.communicate(timeout=args.seconds + 30)[0]
    finally:
        stack.stop()
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        seen = set()
        for frame in stack_text.split(";"):
            name = frame.split(" (")[0]
            if name in WATCH and name not in seen:
                inclusive[name] += samples
                seen.add(name)
    rows = [f"| `{name}` | {100 * n / total:.1f} % |" for name, n in inclusive.most_common()]
    rps = next((line for line in wrk_out.splitlines() if "Requests/sec" in line), "").strip()
    text = "\n".join(
        [
            "# Where an initiate's time goes",
            "",
            f"py-spy, {total} samples of one gunicorn gevent worker under wrk (50 connections); {rps}.",
            "Inclusive share of samples per function (a function's callees count towards it).",
            "",
            "| function | share of samples |",
            "| --- | --- |",
            *rows,
            "",
        ]
    )
    (RESULTS / "initiate-profile.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
