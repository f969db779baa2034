"""``make chaos``: random faults under a steady mixed load, then every invariant checked.

    .venv/bin/python -m bench.chaos [--seed N] [--seconds S] [--ha] [--json FILE]
    (or CHAOS_SEED / CHAOS_SECONDS / CHAOS_HA in the environment; defaults: a random seed,
    300 s, one Redis)

1. starts the whole stack (``bench/chaos/stack.py``) and the load (``bench/chaos/load.py``);
2. carries out the seed's fault schedule (``bench/chaos/schedule.py``) while the load runs;
3. stops the load, heals what is still broken, and drains: every job followed to its end;
4. reads every job back, downloads and verifies every result, compares the metrics with
   the store, stops the stack and looks for processes left over;
5. prints the seed, the schedule, the problems found and one summary line, and exits 1 if
   anything broke an invariant. The same seed replays the same schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos.check import (  # noqa: E402
    TERMINAL,
    Answer,
    JobSeen,
    Verdict,
    check_answers,
    check_jobs,
    excused,
    summary_line,
)
from bench.chaos.faults import Injector  # noqa: E402
from bench.chaos.load import Load, WebhookReceiver  # noqa: E402
from bench.chaos.schedule import HANG_JOB_WORKER, KILL_API_WORKER, counts, make_schedule  # noqa: E402
from bench.chaos.stack import LIVENESS_SECONDS, TENANTS, ChaosStack  # noqa: E402
from delineate.client.api import Client, ClientError  # noqa: E402

DEFAULT_SECONDS = 300.0
DRAIN_SECONDS = 240.0
"""After the load: how long every job has to end (a killed worker's job waits out its lease
and a sweep; a stalled one its retry)."""
WEBHOOK_DRAIN_SECONDS = 60.0


def run_chaos(seed: int, seconds: float, workdir: Path, ha: bool = False, log: Any = print) -> tuple[Verdict, str]:
    """One whole run (``ha``: Redis behind Sentinel, failovers in the schedule); returns the
    verdict and its summary line."""
    schedule = make_schedule(seed, seconds, ha)
    log(f"chaos: seed {seed}, {seconds:g} s{', Redis behind Sentinel' if ha else ''}, {len(schedule)} faults:")
    for fault in schedule:
        log(f"  {fault.describe()}")
    receiver = WebhookReceiver()
    stack = ChaosStack(workdir, receiver.port, ha=ha)
    verdict = Verdict()
    extra = ""  # the run's own counts, after the verdict's
    try:
        stack.start()
        assert stack.settings is not None
        began = time.monotonic()
        load = Load(stack.base, receiver, began, stack.settings.sse_heartbeat_seconds, seed)
        injector = Injector(stack, receiver, began, log=log)
        load.start()
        faults = threading.Thread(target=injector.run, args=(schedule,), name="faults", daemon=True)
        faults.start()
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        load.stop()
        injector.end()
        log(f"chaos: load stopped at {time.monotonic() - began:.0f} s; draining")
        if not load.wait_followers(DRAIN_SECONDS):
            log(f"chaos: some jobs did not end within {DRAIN_SECONDS:g} s of the load")
        _read_back(stack.base, load.jobs)
        _wait_webhooks(load.jobs, receiver)
        _verify_results(stack.base, load.jobs, workdir)
        check_answers(load.answers, injector.windows, verdict)
        check_jobs(load.jobs, receiver.deliveries, verdict)
        verdict.problems += _metrics_problems(stack.base)
        verdict.problems += load.refusals[:5]
        verdict.problems += injector.errors
        restarts, hung = stack.replacements()
        extra = f" restarts={restarts} hung_replaced={hung}"
        # every hang that outlasted the deadline (and a poll of the supervisor) was replaced
        hangs = [w for w in injector.windows if w.kind == HANG_JOB_WORKER and w.end - w.start > LIVENESS_SECONDS + 2]
        if hung < len(hangs):
            verdict.problems.append(f"{len(hangs) - hung} of {len(hangs)} hung job workers were not replaced")
        for when, gap in load.stream_gaps:
            probe = Answer(when - gap, gap, "stream", 200)
            if not excused(probe, injector.windows, frozenset({KILL_API_WORKER})):
                verdict.problems.append(f"a stream was silent {gap:.1f} s at {when:.1f} s (heartbeat lost)")
    finally:
        stack.stop()
        receiver.close()
        left = _leftovers(stack)
        verdict.problems += [f"left over: {p}" for p in left]
        extra += f" leftovers={len(left)}"
    line = summary_line(seed, seconds, counts(schedule), verdict, extra + (" ha" if ha else ""))
    return verdict, line


def _read_back(base: str, jobs: list[JobSeen]) -> None:
    """Each job's final status (a few tries: the API may still be settling)."""
    keys = {t.name: t.key for t in TENANTS}

    def one(job: JobSeen) -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": keys[job.tenant]}, timeout=10) as http:
            for _ in range(20):
                try:
                    response = http.get(f"/v1/download/status/{job.job_id}")
                except httpx.HTTPError:
                    time.sleep(0.5)
                    continue
                if response.status_code == 200:
                    job.final = response.json()
                    return
                if response.status_code == 404:
                    return
                time.sleep(0.5)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, jobs))


def _wait_webhooks(jobs: list[JobSeen], receiver: WebhookReceiver) -> None:
    wanted = {job.job_id for job in jobs if job.callback and job.final and job.final.get("status") in TERMINAL}
    deadline = time.monotonic() + WEBHOOK_DRAIN_SECONDS
    while time.monotonic() < deadline and not wanted <= receiver.deliveries.ids.keys():
        time.sleep(0.5)


def _verify_results(base: str, jobs: list[JobSeen], workdir: Path) -> None:
    """Download every completed job's result through its link and check it: each bundle
    against its manifest, which must list exactly the ids asked for (all exist)."""
    keys = {t.name: t.key for t in TENANTS}
    folder = Path(tempfile.mkdtemp(prefix="results-", dir=workdir))

    def one(job: JobSeen) -> None:
        if not job.final or job.final.get("status") != "completed":
            return
        target = folder / f"{job.job_id}.zip"
        try:
            with Client(base, api_key=keys[job.tenant]) as client:
                client.download(job.job_id, target)
            if len(job.file_ids) > 1:
                with zipfile.ZipFile(target) as bundle:
                    manifest = json.loads(bundle.read("manifest.json"))
                listed = sorted(entry["file_id"] for entry in manifest["files"])
                job.verified = listed == sorted(job.file_ids) and not manifest["missing"]
            else:
                job.verified = True
        except (ClientError, OSError, KeyError, ValueError, zipfile.BadZipFile):
            job.verified = False
        finally:
            target.unlink(missing_ok=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, jobs))


def _metrics_problems(base: str) -> list[str]:
    """The jobs counter of /metrics against the store's own counts (every tenant's summary)."""
    metrics: dict[str, float] = {}
    with httpx.Client(base_url=base, timeout=10) as http:
        for family in text_string_to_metric_families(http.get("/metrics").text):
            for sample in family.samples:
                if sample.name == "delineate_jobs_total":
                    metrics[sample.labels["status"]] = sample.value
        store: dict[str, int] = {}
        for tenant in TENANTS:
            counts = http.get("/v1/downloads/summary", headers={"X-API-Key": tenant.key}).json()["counts"]
            for state, n in counts.items():
                store[state] = store.get(state, 0) + n
    problems = []
    for state in sorted(TERMINAL):
        if int(metrics.get(state, 0)) != store.get(state, 0):
            problems.append(f"metrics say {metrics.get(state, 0):g} {state} jobs, the store {store.get(state, 0)}")
    return problems


def _leftovers(stack: ChaosStack) -> list[str]:
    """Processes of this run still alive once the stack stopped; killed after being noted."""
    deadline = time.monotonic() + 5
    left = stack.leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = stack.leftovers()
    for entry in left:
        try:
            os.kill(int(entry.split(":", 1)[0]), signal.SIGKILL)  # ours: it carries the run's marker
        except ProcessLookupError:
            pass
    return left


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED") or random.randrange(1, 1_000_000)))
    p.add_argument("--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS") or DEFAULT_SECONDS))
    p.add_argument(
        "--ha",
        action="store_true",
        default=os.environ.get("CHAOS_HA", "").lower() in ("1", "true", "yes"),
        help="Redis behind Sentinel, with failovers in the schedule (or CHAOS_HA=true)",
    )
    p.add_argument("--json", type=Path, help="write the verdict here")
    return p


def main() -> int:
    args = parser().parse_args()
    with tempfile.TemporaryDirectory(prefix="delineate-chaos-") as tmp:
        verdict, line = run_chaos(args.seed, args.seconds, Path(tmp), ha=args.ha)
    for problem in verdict.problems:
        print(f"  problem: {problem}")
    print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"summary": line, **asdict(verdict)}, indent=2))
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
