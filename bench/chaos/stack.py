"""The whole stack a chaos run breaks, as production runs it, on free ports.

Redis with an append-only file written before every answer (so a killed Redis restarts
with every accepted job), SeaweedFS (seeded), gunicorn with API_WORKERS workers (its
arbiter replaces a killed worker), JOB_WORKERS Celery job workers and the sweeper (beat
inside), each of those under ``delineate.dev.supervise`` watching its heartbeat as ``make run``
starts them, and a
tenants file of three tenants whose webhooks go to the run's receiver.

Every process started here, and everything they start, inherits RUN_MARKER in its
environment: once the stack is stopped, any process still carrying it was left over by
one that died (:func:`leftovers`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_py

from bench.stack import OUT_OF_REACH, bench_settings, bucket_ready
from delineate.config import Settings, load_settings
from delineate.dev.devstack import sweeper_args
from delineate.dev.seed import SAMPLE_IDS, seed
from delineate.storage import Storage
from tests.support.sentinel_stack import MASTER_NAME, SentinelGroup, start_sentinel_group
from tests.support.stack import (
    BIN,
    Service,
    free_port,
    settings_env,
    start_aof_redis,
    start_api,
    start_seaweed,
    wait_for,
)

RUN_MARKER = "DELINEATE_CHAOS_RUN"
AOF = ("--appendonly", "yes", "--appendfsync", "always")
"""Every acknowledged write is on disk before the answer: a killed Redis restarts with it."""
API_WORKERS = 2
JOB_WORKERS = 2
WORKER_THREADS = 8
LIVENESS_SECONDS = 10
"""A heartbeat older than this is a hung worker (production: 60 s): above the longest Redis
stall of the schedule (8 s), below its hangs (12-16 s)."""


@dataclass(frozen=True)
class TenantKey:
    name: str
    key: str
    secret: str


TENANTS = (
    TenantKey("acme", "acme-chaos-key-00001", "acme-webhook-secret-0000000000001"),
    TenantKey("globex", "globex-chaos-key-0001", "globex-webhook-secret-000000000001"),
    TenantKey("initech", "initech-chaos-key-001", "initech-webhook-secret-00000000001"),
)
WEIGHTS = {"acme": 1, "globex": 1, "initech": 2}


def write_tenants(path: Path, receiver_port: int) -> Path:
    lines: list[str] = []
    for t in TENANTS:
        lines += [
            f"[tenants.{t.name}]",
            f'keys = ["{t.key}"]',
            f"rate_limit = {OUT_OF_REACH}",
            f"max_active_jobs = {OUT_OF_REACH}",
            f"weight = {WEIGHTS[t.name]}",
            f'callback_hosts = ["127.0.0.1:{receiver_port}"]',
            f'webhook_secret = "{t.secret}"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def _role(port: int) -> str:
    client = redis_py.Redis(port=port, socket_timeout=1, decode_responses=True)
    try:
        return str(client.execute_command("ROLE")[0])
    except redis_py.RedisError:
        return ""
    finally:
        client.close()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@dataclass
class ChaosStack:
    workdir: Path
    receiver_port: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    settings: Settings | None = None
    redis: Service | None = None
    redis_port: int = 0
    s3: Service | None = None
    api: Service | None = None
    base: str = ""
    job_workers: list[Service] = field(default_factory=list)
    sweeper: Service | None = None
    ha: bool = False
    """Redis behind Sentinel (a primary, a replica, three sentinels; both nodes with an AOF):
    the Redis faults hit whichever node is the primary then."""
    group: SentinelGroup | None = None

    def start(self) -> ChaosStack:
        os.environ[RUN_MARKER] = self.run_id  # inherited by every process started below
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        redis: dict[str, Any] = {}
        if self.ha:
            self.group = start_sentinel_group(self.workdir, "chaos-ha", AOF)
            # REDIS_URL's host and port point nowhere: only its database number is used.
            redis = {"redis_url": "redis://127.0.0.1:1/0", "redis_sentinels": self.group.sentinels_setting}
        else:
            self.redis_port = free_port()
            self.redis = start_aof_redis(self.workdir, self.redis_port)
        self.s3, s3_port = start_seaweed(load_settings(environ={}, dotenv_path=None), self.workdir)
        self.settings = bench_settings(
            self.redis_port,
            s3_port,
            **redis,
            download_delay_min_ms=300,
            download_delay_max_ms=2500,
            sweep_interval_seconds=2,
            job_lease_seconds=6,
            sse_heartbeat_seconds=2,
            webhook_retry_base_seconds=1.0,
            webhook_retry_max_delay_seconds=5.0,
            worker_concurrency=WORKER_THREADS,
            worker_liveness_seconds=LIVENESS_SECONDS,
            tenants_file=str(write_tenants(self.workdir / "tenants.toml", self.receiver_port)),
        )
        storage = Storage(self.settings)
        wait_for(lambda: bucket_ready(storage), 30, "bucket")
        seed(storage, SAMPLE_IDS)
        for n in range(JOB_WORKERS):
            self.job_workers.append(self._supervised(f"chaos-worker-{n}", self._worker_args(f"chaos-worker-{n}")))
        sweeper = [*self._celery(), *sweeper_args("chaos-sweeper"), "--without-gossip", "--without-mingle"]
        self.sweeper = self._supervised("chaos-sweeper", sweeper)
        self.api, self.base = start_api(self.settings, self.workdir, "chaos-api", workers=API_WORKERS)

    def _celery(self) -> list[str]:
        return [str(BIN / "celery"), "-A", "celery_app.worker", "--quiet", "worker"]

    def _worker_args(self, name: str) -> list[str]:
        return [
            *self._celery(), "--loglevel=INFO", "-c", str(WORKER_THREADS), "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip

    def _supervised(self, name: str, command: list[str]) -> Service:
        """``command`` under the supervisor as ``make run`` starts it: restarted when it dies,
        killed and restarted when its heartbeat is older than WORKER_LIVENESS_SECONDS."""
        assert self.settings is not None
        heartbeat = self.workdir / f"{name}.alive"
        deadline = str(self.settings.worker_liveness_seconds)
        supervise = [sys.executable, "-m", "delineate.dev.supervise", "--heartbeat", str(heartbeat)]
        supervised = [*supervise, "--deadline", deadline, "--", *command]
        env = settings_env(self.settings, WORKER_HEARTBEAT_FILE=str(heartbeat))
        service = Service(name, supervised, self.workdir / f"{name}.log", env).start()
        try:
            wait_for(lambda: "ready." in service.log() or not service.running(), 60, name)
            if not service.running():
                raise RuntimeError(f"{name} exited:\n{service.log()[-3000:]}")
        except BaseException:  # (Ctrl-C while it starts, too): stopped, not left behind
            service.stop()
            raise
        return service

    # -- what the faults hit --------------------------------------------------------------

    def supervised_child(self, service: Service) -> int | None:
        """The process the supervisor runs now (None while it waits to restart one)."""
        children = _children(service.pid)
        return children[0] if children else None

    def api_workers(self) -> list[int]:
        assert self.api is not None
        return _children(self.api.pid)

    def primary(self) -> Service:
        """The Redis the faults hit: the only one, or behind Sentinel the primary now."""
        if self.group is None:
            assert self.redis is not None
            return self.redis
        port = self.group.master_port()
        return self.group.primary if port == self.group.primary_port else self.group.replica

    def restart_redis(self) -> None:
        """Kill Redis (the primary) outright and start it again on its port and files (AOF:
        nothing acknowledged is lost); behind Sentinel, then wait until the group settles."""
        if self.group is None:
            assert self.redis is not None
            self.redis.kill()
            self.redis = start_aof_redis(self.workdir, self.redis_port)
            return
        node = self.primary()
        node.kill()
        node.start()
        self.settle()

    def failover(self) -> None:
        """A Sentinel failover (SENTINEL FAILOVER: the replica is promoted, the old primary
        becomes its replica), then wait until the group settles."""
        assert self.group is not None
        client = redis_py.Redis(port=self.group.sentinel_ports[0], socket_timeout=2)
        try:
            client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        finally:
            client.close()
        time.sleep(1.0)  # the sentinels begin; settle() then waits for the end
        self.settle()

    def settle(self, timeout: float = 30.0) -> None:
        """Behind Sentinel: wait until every sentinel names one primary and it answers as one."""
        if self.group is None:
            return
        group = self.group
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            named = {group.master_port(p) for p in group.sentinel_ports}
            port = named.pop() if len(named) == 1 else None
            if port is not None and _role(port) == "master":
                return  # (the old primary may take ~10 s more to be made its replica)
            time.sleep(0.2)
        raise RuntimeError(f"the Sentinel group did not settle within {timeout:g} s")

    def replacements(self) -> tuple[int, int]:
        """(restarts, of which hung) the supervisors have made so far, from their logs."""
        logs = [service.log() for service in [*self.job_workers, self.sweeper] if service is not None]
        restarts = sum(log.count("; restarting in ") for log in logs)
        return restarts, sum(log.count(" is hung (") for log in logs)

    # -- the end ---------------------------------------------------------------------------

    def stop(self) -> None:
        services = [self.api, self.sweeper, *self.job_workers, self.s3, self.redis]
        for service in services:
            if service is not None:
                service.stop(timeout=30)
        if self.group is not None:
            self.group.stop()
        os.environ.pop(RUN_MARKER, None)

    def leftovers(self) -> list[str]:
        """Processes still alive that carry this run's marker (other than this one)."""
        found = []
        needle = f"{RUN_MARKER}={self.run_id}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{entry.name}: {command[:160]}")
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return found
