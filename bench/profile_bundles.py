"""Where a 3-file bundle job's CPU goes, beside the raw copy of the same bytes.

Starts the end-to-end stack of ``bench/e2e.py`` (delays off, 2 Celery workers of 100
threads), runs its ``bundles`` scenario once while py-spy samples both workers (``--gil``:
only the thread holding the GIL, so samples follow CPU, not waiting), then the raw boto3
GET+PUT copy of the same sets. Writes ``bench/results/bundle-profile.md``: CPU seconds per
process for each (from /proc, exact), per job, and the workers' samples in exclusive
buckets (first match wins); the raw stacks go to ``bench/results/profile-bundle-worker.txt``.

    .venv/bin/python bench/profile_bundles.py [--jobs 1500] [--seconds 15]
"""

from __future__ import annotations

import argparse
import collections
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import e2e
from bench.stack import RESULTS, start_stack
from tests.support.stack import BIN

BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("Celery outside the task: consumer loop, events, acks", ("__OUTSIDE__",)),
    ("file checks: HEAD (direct, urllib3)", ("Storage.head",)),
    ("file checks that keep the bytes: GET (no delay; direct, urllib3)", ("Storage.read_small",)),
    ("reading the sources: GET (direct, urllib3)", ("Storage.iter_object",)),
    ("zip framing and sha256", ("_hashed", "ZipStream.all_files", "ZipStream.finalize")),
    ("the bundle's PUT (direct) and its buffer", ("Storage.upload_stream",)),
    ("job store: progress writes, lease (Redis)", ("JobStore.write", "JobStore.lease_and_get",
                                                   "DownloadRun._renew_lease", "JobStore.release_lease",
                                                   "JobStore.publish")),
    ("rest of the task: logging, models, metrics", ("prepare_download",)),
]  # fmt: skip
"""Exclusive buckets for a worker's samples, in order: the first whose frame a sample holds."""


def _tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for child in children for p in _tree(int(child))]


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def buckets(raw_files: list[Path]) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    total = 0
    counts: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for raw in raw_files:
        for line in raw.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = [frame.split(" (")[0] for frame in stack_text.split(";")]
            names = set(frames)
            inside = "prepare_download" in names
            label = next(
                name
                for name, members in BUCKETS
                if (members == ("__OUTSIDE__",) and not inside) or (inside and names & set(members))
            )
            counts[label] += int(count)
            leaves[frames[-1]] += int(count)
            total += int(count)
    return total, counts, leaves


def spy(pid: int, raw: Path, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` for ``seconds``, sampling only the thread that holds the GIL."""
    command = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200"]
    command += ["--format", "raw", "--output", str(raw), "--nonblocking", "--gil"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--seconds", type=int, default=15, help="py-spy's sampling time")
    args = parser.parse_args()
    import redis

    from delineate.storage import Storage

    workdir = Path(tempfile.mkdtemp(prefix="delineate-bench-bundles-"))
    # Reuse off: its 3-file sets repeat, and this profiles building them (as bench/e2e.py's "bundles").
    stack = start_stack(workdir, workers=2, concurrency=100, download_delay_enabled=False, bundle_reuse=False)
    raws = [workdir / f"worker-{n}.txt" for n in range(len(stack.workers))]
    try:
        client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
        e2e.latency(stack.base, 5)  # warm-up
        trees = {service.name: _tree(service.pid) for service in stack.services}
        sets = [e2e._bundle_ids(i) for i in range(args.jobs)]
        before = {name: _cpu_seconds(pids) for name, pids in trees.items()}
        spies = [spy(worker.pid, raw, args.seconds) for worker, raw in zip(stack.workers, raws, strict=True)]
        bundles = e2e.run_jobs(stack, client, sets)
        spent = {name: _cpu_seconds(pids) - before[name] for name, pids in trees.items()}
        for sampler in spies:
            sampler.wait(timeout=args.seconds + 60)
        source = e2e.source_bytes(Storage(stack.settings), sets)
        copies: dict[str, dict[str, float]] = {}
        copy_spent: dict[str, dict[str, float]] = {}
        for kind in e2e.COPY_CLIENTS:
            copy_before = {name: _cpu_seconds(pids) for name, pids in trees.items()}
            children_before = _children_cpu()
            copies[kind] = e2e.raw_copy(stack.settings, sets, kind)
            copy_spent[kind] = {name: _cpu_seconds(pids) - copy_before[name] for name, pids in trees.items()}
            copy_spent[kind]["the copy's own processes"] = _children_cpu() - children_before
    finally:
        stack.stop()
    bundle_rate = source / bundles["seconds"]
    lines = [
        "# Where a 3-file bundle job's CPU goes",
        "",
        f"Made by `.venv/bin/python bench/profile_bundles.py` on {time.strftime('%Y-%m-%d %H:%M')}: "
        f"{args.jobs} jobs of 3 files ({source / 1e6:.0f} MB of sources), delays off, 2 Celery workers of "
        "100 threads, then the raw GET+PUT copies of the same sets (2 processes of 16 threads), through "
        "boto3's client and through the project's `Storage` (the direct requests the worker makes).",
        "",
        f"Bundles: {bundles['seconds']:.1f} s, {bundle_rate / 1e6:.1f} MB/s, {bundles['lost']} lost. "
        + " ".join(
            f"{kind} copy: {copy['seconds']:.1f} s, {copy['bytes_per_s'] / 1e6:.1f} MB/s, "
            f"ratio {bundle_rate / copy['bytes_per_s']:.2f}."
            for kind, copy in copies.items()
        ),
        "",
        "## CPU seconds per process (from /proc), and per job",
        "",
        "| process | bundles | ms per job | " + " | ".join(f"{k} copy | ms per set" for k in copies) + " |",
        "| --- | --- | --- |" + " --- | --- |" * len(copies),
    ]

    def row(name: str, b: float, c: list[float]) -> str:
        cells = " | ".join(f"{v:.1f} | {1000 * v / args.jobs:.1f}" for v in c)
        return f"| {name} | {b:.1f} | {1000 * b / args.jobs:.1f} | {cells} |"

    for name in [*trees, "the copy's own processes"]:
        lines.append(row(name, spent.get(name, 0.0), [copy_spent[k].get(name, 0.0) for k in copies]))
    lines.append(row("all", sum(spent.values()), [sum(copy_spent[k].values()) for k in copies]))
    total, counts, leaves = buckets(raws)
    merged = RESULTS / "profile-bundle-worker.txt"
    merged.write_text("".join(raw.read_text() for raw in raws if raw.exists()))
    lines += [
        "",
        f"## The workers' samples ({total}, py-spy --gil at 200 Hz for {args.seconds} s; raw stacks: "
        "`bench/results/profile-bundle-worker.txt`)",
        "",
        "| bucket (exclusive, first match) | share |",
        "| --- | --- |",
        *[f"| {name} | {100 * counts[name] / max(total, 1):.1f} % |" for name, _ in BUCKETS],
        "",
        "Functions holding the most samples themselves:",
        "",
        "| function | share |",
        "| --- | --- |",
        *[f"| `{name}` | {100 * n / max(total, 1):.1f} % |" for name, n in leaves.most_common(12)],
    ]
    (RESULTS / "bundle-profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
