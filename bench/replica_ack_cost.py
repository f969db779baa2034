"""What the 202 rule (WAIT for a replica) costs POST /v1/download/initiate.

Starts a primary, a replica and three sentinels (``tests/support/sentinel_stack.py``) and two
gunicorn APIs on that same primary: one through Sentinel (its initiate runs the create
script and ``WAIT 1 <REDIS_REPLICA_ACK_TIMEOUT_MS>`` on its own lane), one straight to the
primary's address without Sentinel (no WAIT: the create on the shared lane, as before).
No Celery worker: the jobs only queue. Per run and API: sequential initiates on one
keep-alive connection (server time from ``Server-Timing``, client time), then wrk with 50
connections. The APIs take turns, ``--runs`` times; medians are printed and written to
``bench/results/replica_ack_cost.json``.

    .venv/bin/python bench/replica_ack_cost.py [--requests 1000] [--seconds 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.initiate_latency import one_run
from bench.stack import OUT_OF_REACH, RESULTS, WRK_POST, wrk
from delineate.config import load_settings
from tests.support.sentinel_stack import start_sentinel_group
from tests.support.stack import start_api


def measure(base: str, requests: int, seconds: int) -> dict[str, float]:
    figures = one_run(base, requests)
    load = wrk(f"{base}/v1/download/initiate", seconds, 50, WRK_POST)
    figures.update({"wrk_rps": load["rps"], "wrk_p50_ms": load["p50_ms"], "wrk_p99_ms": load["p99_ms"]})
    figures["wrk_errors"] = load["errors"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-ack-"))
    group = start_sentinel_group(workdir)
    common = {"rate_limit_max_requests": OUT_OF_REACH, "s3_endpoint": "http://127.0.0.1:9"}
    plain = load_settings(
        environ={}, overrides={**common, "redis_url": f"redis://127.0.0.1:{group.primary_port}/0"}, dotenv_path=None
    )
    ha = plain.replace(redis_url="redis://127.0.0.1:1/0", redis_sentinels=tuple(
        ("127.0.0.1", port) for port in group.sentinel_ports
    ))  # fmt: skip
    apis = {}
    try:
        for name, settings in (("wait", ha), ("no_wait", plain)):
            service, base = start_api(settings, workdir, f"bench-api-{name}", workers=2)
            apis[name] = (service, base)
            one_run(base, 200)  # warm-up
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in apis}
        for n in range(args.runs):
            for name, (_, base) in apis.items():
                runs[name].append(measure(base, args.requests, args.seconds))
                print(f"run {n + 1} {name}: " + "  ".join(f"{k}={v:.2f}" for k, v in runs[name][-1].items()))
    finally:
        for service, _ in apis.values():
            service.stop()
        group.stop()
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    for name, figures in medians.items():
        print(f"median {name}: " + "  ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    out = RESULTS / "replica_ack_cost.json"
    out.write_text(json.dumps({"runs": runs, "median": medians, "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
