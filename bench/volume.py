"""The cost of volume: one Redis holding a million jobs, as 24 h of traffic leaves it.

1. **Real jobs.** The stack (SeaweedFS, a Celery worker, gunicorn) talks to Redis through a
   relay that records every command and round trip (``bench/redis_tap.py``). ``--real``
   two-file jobs go from initiate to completed through the API and the worker, after the
   idle stack was watched for a few seconds: commands (sent, and run inside scripts), round
   trips and Redis CPU per job, net of what the idle stack costs in the same time.
2. **The fill.** Each real job's writes (the create script, the lease, every progress
   write, the terminal write) are sent again in pipelines under new ids and owners
   (``bench/volume_replay.py``): the same scripts with the same arguments, so records and
   indexes are what the real code writes, and a new job is checked to leave exactly the
   footprint a real one left. 90 % end completed; 10 % stay live: created through the real
   ``accept()`` against a fleet of 2,000 worker slots (the fair share keeps the rest waiting,
   their messages beside them), the granted ones taken and made ``processing`` with the real
   job's lease and write. 100 tenants; one (``tenant-000``) holds a tenth of the jobs.
3. **Reads.** Status (``/v1/download/status/{id}`` on random completed jobs, each read once,
   so no answer comes from the API's cache of presigned links) under wrk against the full
   store and against a small one (``--small-jobs`` in another database of the same Redis,
   filled the same way), in alternating rounds; the history (``/v1/downloads`` of the
   tenant of a tenth of the jobs, pages from random positions).
4. **Sweeps.** The real sweeper (built as the sweeper process builds it) runs three sweeps
   with the live jobs queued for more than two intervals: duration and Redis CPU each.

Memory is INFO's ``used_memory`` growth over the completed fill, per job. Redis time is the
server process's CPU (INFO ``used_cpu_user`` + ``used_cpu_sys``), which counts the network
and parsing work that ``commandstats`` leaves out.

    .venv/bin/python bench/volume.py [--jobs 1000000] [--real 1000] [--small-jobs 50000]
        [--rounds 3] [--seconds 5] [--connections 4] [--json bench/results/volume.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.redis_tap import Tap
from bench.stack import OUT_OF_REACH, bench_settings, bucket_ready, wrk
from bench.volume_replay import Replayer, Template, jobs_per_second, net_per_job, pack, swap, writes_by_job
from delineate.config import Settings, load_settings
from delineate.dev.seed import SAMPLE_IDS, seed
from delineate.ids import new_uuid
from delineate.storage import Storage
from delineate.store.keys import PREFIX, history_key, job_key
from tests.support.stack import Service, start_api, start_redis, start_seaweed, start_worker, wait_for

REUSE_KEY = re.compile(r"reuse:[0-9a-f]{32}")
WRK_PATHS = Path(__file__).resolve().parent / "wrk_paths.lua"
TENANTS = 100
BIG = 0
"""The tenant of a tenth of the jobs (the history figure's)."""
TEMPLATE_TENANT = 1
"""The tenant of the real jobs; its name is swapped for the new owner's in the replay."""
LIVE_SHARE = 0.1
FLEET_SLOTS = 2_000
"""Worker slots registered for the fill (20 workers of 100 threads): the live jobs past
them wait in the fair share, as a backlog does."""
JOBS_PER_BATCH = 250
IDLE_SECONDS = 10.0
"""How long the idle stack is watched: one worker heartbeat (10 s) falls in it."""
SWEEPS = 3


def tenant(n: int) -> str:
    return f"tenant-{n:03d}"


def api_key(n: int) -> str:
    return f"volume-key-{n:03d}-0000000000"


def owner_of(i: int) -> int:
    """The tenant of the ``i``-th job: every tenth is the big tenant's, the rest go round."""
    return BIG if i % 10 == 0 else 1 + i % (TENANTS - 1)


def write_tenants(workdir: Path) -> Path:
    lines: list[str] = []
    for n in range(TENANTS):
        lines += [f"[tenants.{tenant(n)}]", f'keys = ["{api_key(n)}"]', f"rate_limit = {OUT_OF_REACH}",
                  f"max_active_jobs = {OUT_OF_REACH}", ""]  # fmt: skip
    path = workdir / "tenants.toml"
    path.write_text("\n".join(lines))
    return path


@dataclass
class Reading:
    """The Redis server's counters at one moment (INFO)."""

    at: float
    cpu: float  # s, used_cpu_user + used_cpu_sys
    calls: int  # every command run, those inside scripts too; INFO itself left out
    memory: int  # used_memory, bytes
    by_command: dict[str, int]

    @classmethod
    def of(cls, client: redis.Redis) -> Reading:
        info: dict[str, Any] = client.info("all")
        calls = {k[8:]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_") and k != "cmdstat_info"}
        cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return cls(time.monotonic(), cpu, sum(calls.values()), int(info["used_memory"]), calls)


def completed_count(client: redis.Redis) -> int:
    return int(client.hget(f"{PREFIX}metrics:jobs", "completed") or 0)


# -- 1. real jobs ----------------------------------------------------------------------------


def real_jobs(
    count: int, first: int, settings: Settings, probe: redis.Redis, workdir: Path, tap: Tap | None
) -> dict[str, Any]:
    """``count`` two-file jobs through the API and a worker (the id sets of
    :func:`two_files` from ``first``, none asked before: each job builds its bundle). With
    ``tap`` (the stack talks to Redis through it): the commands sent, the round trips, and
    each job's writes as a :class:`Template`; without: Redis's CPU and commands per job, the
    relay out of the way."""
    name = "tapped" if tap else "direct"
    worker = start_worker(settings, workdir, f"volume-worker-{name}", concurrency=100)
    api: Service | None = None
    try:
        api, base = start_api(settings, workdir, f"volume-api-{name}", workers=1)
        time.sleep(2)  # start-up writes done
        idle_from, idle_mark = Reading.of(probe), tap.mark() if tap else None
        time.sleep(IDLE_SECONDS)
        idle_to, idle_end = Reading.of(probe), tap.mark() if tap else None
        done_before = completed_count(probe)
        begin, mark = Reading.of(probe), tap.mark() if tap else None
        ids = _initiate(base, count, first)
        polls = 1  # HGETs of ours, left out of the commands run (the last one saw them all)
        deadline = time.monotonic() + 120 + count * 0.2
        while completed_count(probe) - done_before < count:
            polls += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"real jobs: {completed_count(probe) - done_before} of {count} completed")
            time.sleep(0.2)
        end, end_mark = Reading.of(probe), tap.mark() if tap else None
    finally:
        if api is not None:
            api.stop()
        worker.stop()
    idle = idle_to.at - idle_from.at
    seconds = end.at - begin.at

    def per_job(delta: float, idle_delta: float) -> float:
        return net_per_job(delta, idle_delta / idle, seconds, count)

    figures: dict[str, Any] = {
        "jobs": count,
        "seconds": round(seconds, 2),
        "commands_run": per_job(end.calls - begin.calls - polls, idle_to.calls - idle_from.calls),
        "redis_cpu_us": 1e6 * per_job(end.cpu - begin.cpu, idle_to.cpu - idle_from.cpu),
        "scripts_run": {
            name: round((end.by_command.get(name, 0) - begin.by_command.get(name, 0)) / count, 2)
            for name in ("evalsha", "eval")
        },
    }
    if tap is None or mark is None or end_mark is None or idle_mark is None or idle_end is None:
        return {"figures": figures}
    sent = tap.commands_since(mark)[: end_mark.commands - mark.commands]
    names = Counter(command[0].upper().decode() for command in sent)
    figures.update(
        round_trips=per_job(end_mark.trips - mark.trips, idle_end.trips - idle_mark.trips),
        commands_sent=per_job(end_mark.commands - mark.commands, idle_end.commands - idle_mark.commands),
        sent_by_command={name: round(n / count, 2) for name, n in names.most_common()},
    )
    writes = writes_by_job(sent, [i.encode() for i in ids], PREFIX.encode())
    templates = []
    for job_id, commands in writes.items():
        try:
            templates.append(Template.of(commands, job_id, tenant(TEMPLATE_TENANT).encode()))
        except ValueError:
            continue  # (none expected: the footprint check below would fail without any)
    if not templates:
        raise RuntimeError("real jobs: no job's writes could be replayed")
    figures["templates"] = len(templates)
    return {"figures": figures, "templates": templates}


def two_files(n: int) -> list[int]:
    """The ``n``-th job's two distinct sample files: a set no other ``n`` below
    ``len(SAMPLE_IDS) * 71`` (10,153) asks for."""
    size = len(SAMPLE_IDS)
    return [SAMPLE_IDS[n % size], SAMPLE_IDS[(n + 1 + (n // size) % (size - 1)) % size]]


def _initiate(base: str, count: int, first: int) -> list[str]:
    with httpx.Client(base_url=base, headers={"X-API-Key": api_key(TEMPLATE_TENANT)}, timeout=30) as client:

        def one(n: int) -> str:
            answer = client.post("/v1/download/initiate", json={"file_ids": two_files(first + n)})
            answer.raise_for_status()
            return str(answer.json()["jobId"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, range(count)))


# -- 2. the fill -----------------------------------------------------------------------------


def footprint(client: redis.Redis, job_id: str, owner: str) -> dict[str, str]:
    """Every key of ours that names the job or holds it, with the id, owner and id-set
    digest as placeholders, and what it is (a hash: its fields)."""
    found: dict[str, str] = {}
    for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
        kind = client.type(key)
        name = REUSE_KEY.sub("reuse:{digest}", key.replace(job_id, "{id}").replace(owner, "{owner}"))
        if job_id in key:
            found[name] = kind + (" " + ",".join(sorted(client.hkeys(key))) if kind == "hash" else "")
        elif kind == "zset" and any(client.zscore(key, m) is not None for m in (job_id, f"{owner}|{job_id}")):
            found[name] = "member"
        elif (kind == "set" and client.sismember(key, job_id)) or (
            kind == "list" and client.lpos(key, job_id) is not None
        ):
            found[name] = "member"
        elif kind == "hash" and client.hexists(key, job_id):
            found[name] = "field"
        elif kind == "string" and job_id in (client.get(key) or ""):
            found[name] = "names it"  # the `reuse:` record of the bundle it built
    return found


def check_replay(port: int, real: redis.Redis, template: Template) -> None:
    """A replayed job leaves what the real one left (in a scratch database).

    :raise RuntimeError: it does not: the real code writes something the replay misses.
    """
    scratch = redis.Redis(port=port, db=2, decode_responses=True)
    scratch.flushdb()
    job_id = new_uuid()
    owner = template.owner.decode()
    Replayer(port, 2, connections=1).run(iter([(template.job(job_id, owner), len(template.commands))]))
    want = footprint(real, template.job_id.decode(), owner)
    got = footprint(scratch, job_id, owner)
    sizes = (real.memory_usage(job_key(template.job_id.decode())), scratch.memory_usage(job_key(job_id)))
    scratch.flushdb()
    if want != got or abs(sizes[0] - sizes[1]) > 16:
        raise RuntimeError(
            f"the replay differs from the real job: real {want} ({sizes[0]} B), replayed {got} ({sizes[1]} B)"
        )


def fill(
    port: int, db: int, templates: list[Template], count: int, first: int = 0, keep: int = 0
) -> list[tuple[str, int]]:
    """``count`` completed jobs (owners by :func:`owner_of` from index ``first``); returns
    about ``keep`` of them (id, tenant), spread over the fill."""
    kept: list[tuple[str, int]] = []
    every = max(1, count // keep) if keep else 0

    def batches() -> Iterator[tuple[bytes, int]]:
        for start in range(0, count, JOBS_PER_BATCH):
            parts: list[bytes] = []
            replies = 0
            for i in range(start, min(count, start + JOBS_PER_BATCH)):
                template = templates[i % len(templates)]
                job_id, owner = new_uuid(), owner_of(first + i)
                parts.append(template.job(job_id, tenant(owner)))
                replies += len(template.commands)
                if every and i % every == 0:
                    kept.append((job_id, owner))
            yield b"".join(parts), replies

    Replayer(port, db).run(batches())
    return kept


def fill_live(settings: Settings, count: int, first: int) -> float:
    """``count`` queued jobs through the real ``accept()``; returns when it ended (epoch s)."""
    from delineate.api.accept import accept
    from delineate.broker.app import make_celery
    from delineate.broker.queue import TaskQueue
    from delineate.services import build_services

    svc = build_services(settings)
    queue = TaskQueue(settings, make_celery(settings, svc))
    for i in range(first, first + count):
        accept(svc, queue, two_files(i), tenant(owner_of(i)), None)
    return time.time()


def granted_jobs(client: redis.Redis) -> list[tuple[str, str]]:
    """(tenant, job id) of every job holding a worker slot."""
    members = client.zrange(f"{PREFIX}dispatch:running", 0, -1)
    return [tuple(str(m).rsplit("|", 1)) for m in members]  # type: ignore[misc]


def run_granted(port: int, templates: list[Template], granted: list[tuple[str, str]], take: bool) -> None:
    """What the workers do with granted jobs: take the message (``take``) and start them
    (the real job's lease and processing write); without ``take``, write progress again
    (as a running job does, renewing its lease)."""

    def batches() -> Iterator[tuple[bytes, int]]:
        for n in range(0, len(granted), JOBS_PER_BATCH):
            parts: list[bytes] = []
            replies = 0
            for k, (owner, job_id) in enumerate(granted[n : n + JOBS_PER_BATCH]):
                template = templates[(n + k) % len(templates)]
                commands = [[b"RPOP", template.queue], *template.start] if take else template.start[-1:]
                parts.append(
                    swap(pack(commands), ((template.job_id, job_id.encode()), (template.owner, owner.encode())))
                )
                replies += len(commands)
            yield b"".join(parts), replies

    Replayer(port, 0).run(batches())


# -- 3. reads --------------------------------------------------------------------------------


def paths_file(workdir: Path, name: str, lines: list[str]) -> Path:
    path = workdir / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def walk(base: str, path: Path, args: argparse.Namespace, warm_up: bool = False) -> dict[str, float]:
    """wrk over the paths of ``path`` (each thread its own slice, in order). A warm-up runs
    3 s on twice the connections, so every API worker has served before a measured round."""
    seconds, connections = (3, 2 * args.connections) if warm_up else (args.seconds, args.connections)
    figures = wrk(f"{base}/", seconds, connections, WRK_PATHS, threads=2, script_args=[str(path), "2"])
    figures["requests"] = figures["rps"] * seconds
    return figures


def status_reads(args: argparse.Namespace, workdir: Path, bases: dict[str, str],
                 probes: dict[str, list[tuple[str, int]]], probe: redis.Redis) -> dict[str, Any]:  # fmt: skip
    """Alternating rounds of status reads against the small and the full store."""
    runs: dict[str, list[dict[str, float]]] = {"small": [], "full": []}
    for side in ("small", "full"):
        random.shuffle(probes[side])
    slices = args.rounds + 1  # the warm-up's own slice, so no round meets a job read before
    for n in range(slices):
        for side in ("small", "full"):
            jobs = probes[side]
            part = jobs[n * len(jobs) // slices : (n + 1) * len(jobs) // slices]
            lines = [f"/v1/download/status/{job_id}\t{api_key(owner)}" for job_id, owner in part]
            before = Reading.of(probe)
            result = walk(bases[side], paths_file(workdir, f"status-{side}-{n}", lines), args, warm_up=not n)
            result["redis_cpu_us_per_read"] = 1e6 * (Reading.of(probe).cpu - before.cpu) / max(result["requests"], 1)
            result["distinct_jobs"] = len(part)
            if n:
                runs[side].append(result)
    p99 = {side: statistics.median(r["p99_ms"] for r in rows) for side, rows in runs.items()}
    return {
        "runs": runs,
        "p50_ms": {side: statistics.median(r["p50_ms"] for r in rows) for side, rows in runs.items()},
        "p99_ms": p99,
        "p99_ratio": p99["full"] / p99["small"],
        "redis_cpu_us_per_read": statistics.median(r["redis_cpu_us_per_read"] for r in runs["full"]),
        "reads_repeated": any(r["requests"] > r["distinct_jobs"] for rows in runs.values() for r in rows),
    }


def history_reads(args: argparse.Namespace, workdir: Path, base: str, probe: redis.Redis) -> dict[str, Any]:
    """Pages of the big tenant's history from random positions (the default page, and 100)."""
    from delineate.api.blueprints.history import encode_cursor

    rows = probe.zrange(history_key(tenant(BIG), "completed"), 0, -1, withscores=True)
    positions = random.sample(rows, min(len(rows), 40_000))
    figures: dict[str, Any] = {"tenant_jobs": sum(int(probe.zcard(history_key(tenant(BIG), s))) for s in
                                                  ("queued", "processing", "completed", "failed", "cancelled"))}  # fmt: skip
    for limit in (20, 100):
        runs = []
        for n in range(args.rounds + 1):
            part = positions[n :: args.rounds + 1]
            lines = [f"/v1/downloads?limit={limit}&cursor={encode_cursor(int(score), job_id)}\t{api_key(BIG)}"
                     for job_id, score in part]  # fmt: skip
            before = Reading.of(probe)
            result = walk(base, paths_file(workdir, f"history-{limit}-{n}", lines), args, warm_up=not n)
            result["redis_cpu_us_per_page"] = 1e6 * (Reading.of(probe).cpu - before.cpu) / max(result["requests"], 1)
            if n:
                runs.append(result)
        figures[f"limit_{limit}"] = {
            "runs": runs,
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "redis_cpu_us_per_page": statistics.median(r["redis_cpu_us_per_page"] for r in runs),
        }
    return figures


# -- 4. sweeps -------------------------------------------------------------------------------


def sweeps(settings: Settings, probe: redis.Redis, interval: float) -> list[dict[str, Any]]:
    """Three sweeps of the real sweeper, built as the sweeper process builds it."""
    from delineate.broker.app import make_celery
    from delineate.jobs.sweeper import STALE_INTERVALS, sweeper_for
    from delineate.services import build_services, connect_store
    from delineate.store.keys import LIVE_KEY

    svc = build_services(settings)
    celery = make_celery(settings, svc)
    connect_store(svc, celery)
    sweeper = sweeper_for(celery)
    rows = []
    for _ in range(SWEEPS):
        stale = int(probe.zcount(LIVE_KEY, "-inf", time.time() - STALE_INTERVALS * interval))
        before = Reading.of(probe)
        began = time.perf_counter()
        report = sweeper.sweep()
        took = time.perf_counter() - began
        after = Reading.of(probe)
        rows.append({
            "seconds": took, "redis_cpu_s": after.cpu - before.cpu, "commands_run": after.calls - before.calls,
            "live": int(probe.zcard(LIVE_KEY)), "stale_live": stale, "skipped": report.skipped,
            "republished": len(report.republished), "granted": report.granted,
        })  # fmt: skip
    return rows


# -- the run ---------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="delineate-volume-"))
    services: list[Service] = []
    tap: Tap | None = None
    result: dict[str, Any] = {"jobs": args.jobs}
    try:
        redis_service, port = start_redis(workdir)
        services.append(redis_service)
        seaweed, s3_port = start_seaweed(load_settings(environ={}, dotenv_path=None), workdir)
        services.append(seaweed)
        # Reuse on (the default), every export distinct: each completed job leaves its
        # bundle's `reuse:` record too, the most a job can cost (Template.job).
        common = {"tenants_file": str(write_tenants(workdir)), "download_delay_enabled": False, "bundle_reuse": True}
        direct = bench_settings(port, s3_port, **common)
        small = bench_settings(port, s3_port, **common, redis_url=f"redis://127.0.0.1:{port}/1")
        storage = Storage(direct)
        wait_for(lambda: bucket_ready(storage), 30, "bucket")
        seed(storage, SAMPLE_IDS)
        probe = redis.Redis(port=port, decode_responses=True)
        tap = Tap(port).start()
        real_count = min(args.real, max(20, args.jobs // 20))
        print(f"volume: {real_count} real jobs through the API and a worker ...", flush=True)
        real = real_jobs(real_count, 0, bench_settings(tap.port, s3_port, **common), probe, workdir, tap)
        tap.stop()
        templates: list[Template] = real["templates"]
        unrelayed = real_jobs(real_count, real_count, direct, probe, workdir, None)["figures"]
        result["per_job"] = {
            **real["figures"],
            "redis_cpu_us": unrelayed["redis_cpu_us"],
            "commands_run": unrelayed["commands_run"],
            "relayed": {k: real["figures"][k] for k in ("redis_cpu_us", "commands_run", "seconds")},
        }
        check_replay(port, probe, templates[0])

        live = int(args.jobs * LIVE_SHARE)
        completed = args.jobs - real_count - live
        from delineate.services import build_services

        for settings in (direct, small):
            build_services(settings).store.dispatch(worker=("volume-fleet", FLEET_SLOTS, 86_400))
        print(f"volume: filling {completed} completed jobs ...", flush=True)
        before = Reading.of(probe)
        kept = fill(port, 0, templates, completed, first=real_count, keep=100_000)
        after = Reading.of(probe)
        result["fill"] = {
            "completed": completed,
            "seconds": round(after.at - before.at, 1),
            "jobs_per_s": completed / (after.at - before.at),
            "redis_cpu_us_per_job": 1e6 * (after.cpu - before.cpu) / completed,
            "memory_bytes_per_completed_job": (after.memory - before.memory) / completed,
            "job_hash_bytes": probe.memory_usage(job_key(kept[0][0])),
        }
        print(f"volume: {live} live jobs through accept() ...", flush=True)
        before = Reading.of(probe)
        live_at = fill_live(direct, live, real_count + completed)
        granted = granted_jobs(probe)
        run_granted(port, templates, granted, take=True)
        after = Reading.of(probe)
        result["fill"].update(
            live=live, processing=len(granted), used_memory=after.memory,
            memory_bytes_per_live_job=(after.memory - before.memory) / max(live, 1),
            live_seconds=round(after.at - before.at, 1),
        )  # fmt: skip
        small_count = min(args.small_jobs, max(1, args.jobs // 20))
        small_jobs = fill(port, 1, templates, small_count, keep=small_count)
        print(f"volume: reads (a store of {small_count} jobs beside the full one) ...", flush=True)
        full_api, full_base = start_api(direct, workdir, "volume-api-full", workers=2)
        services.append(full_api)
        small_api, small_base = start_api(small, workdir, "volume-api-small", workers=2)
        services.append(small_api)
        bases = {"full": full_base, "small": small_base}
        result["status"] = status_reads(args, workdir, bases, {"small": small_jobs, "full": kept}, probe)
        result["status"]["small_store_jobs"] = small_count
        result["history"] = history_reads(args, workdir, full_base, probe)
        for service in (full_api, small_api):
            service.stop()
        wait = live_at + 2 * direct.sweep_interval_seconds + 1 - time.time()
        if wait > 0:
            time.sleep(wait)  # the waiting jobs are past two intervals: every sweep meets them
        run_granted(port, templates, granted, take=False)
        result["sweeps"] = sweeps(direct, probe, direct.sweep_interval_seconds)
        cpu_s = result["per_job"]["redis_cpu_us"] / 1e6
        result["capacity"] = {
            "jobs_per_s_at_75pct": jobs_per_second(cpu_s),
            "jobs_per_s_with_10_status_reads": jobs_per_second(
                cpu_s + 10 * result["status"]["redis_cpu_us_per_read"] / 1e6
            ),
        }
    finally:
        if tap is not None:
            tap.stop()
        for service in reversed(services):
            service.stop()
    return result


def summary(result: dict[str, Any]) -> str:
    job, fill_, status, history = result["per_job"], result["fill"], result["status"], result["history"]
    sweep = max(result["sweeps"], key=lambda row: row["seconds"])
    return "\n".join([
        f"per job (initiate → completed, {job['jobs']} real two-file jobs): {job['round_trips']:.1f} round trips, "
        f"{job['commands_sent']:.1f} commands sent, {job['commands_run']:.1f} run (with those in scripts), "
        f"Redis CPU {job['redis_cpu_us']:.0f} µs",
        f"fill: {fill_['completed']} completed in {fill_['seconds']} s ({fill_['jobs_per_s']:.0f}/s, Redis "
        f"{fill_['redis_cpu_us_per_job']:.0f} µs/job); {fill_['live']} live ({fill_['processing']} processing)",
        f"memory: {fill_['memory_bytes_per_completed_job']:.0f} B per completed job (hash {fill_['job_hash_bytes']} B), "
        f"{fill_['memory_bytes_per_live_job']:.0f} B per live job; used_memory {fill_['used_memory'] / 2**20:.0f} MiB",
        f"status p50/p99: small store {status['p50_ms']['small']:.2f}/{status['p99_ms']['small']:.2f} ms, full "
        f"{status['p50_ms']['full']:.2f}/{status['p99_ms']['full']:.2f} ms, ratio {status['p99_ratio']:.2f}",
        f"history ({history['tenant_jobs']} jobs): limit 20 p99 {history['limit_20']['p99_ms']:.2f} ms, "
        f"limit 100 p99 {history['limit_100']['p99_ms']:.2f} ms",
        f"sweep (slowest of {len(result['sweeps'])}): {sweep['seconds']:.3f} s, Redis CPU {sweep['redis_cpu_s']:.3f} s, "
        f"{sweep['live']} live, {sweep['stale_live']} stale",
        f"one Redis primary at 75 % of a core: {result['capacity']['jobs_per_s_at_75pct']:.0f} jobs/s "
        f"({result['capacity']['jobs_per_s_with_10_status_reads']:.0f} with 10 status reads each)",
    ])  # fmt: skip


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--real", type=int, default=1000, help="real jobs through the stack (at most jobs/20)")
    parser.add_argument("--small-jobs", type=int, default=50_000, help="the small store's jobs (at most jobs/20)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
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
