"""Real services for the tests: processes started on free ports, stopped by their PID."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from delineate.config import ENVIRONMENT, Settings
from delineate.dev.devstack import sweeper_args
from delineate.dev.localstack import SEAWEED_PORT_SPAN, answers, redis_command, seaweed_command, wait_until

if TYPE_CHECKING:
    from delineate.store.jobstore import JobStore

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BLOCK_PORTS = range(20_000, 32_000)
"""Where port blocks are taken from: below Linux's ephemeral range (32768-60999), so the
outgoing connections of a busy machine (a benchmark, another test run) cannot be sitting
on a port of the block when the server binds it."""


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_block(span: int, attempts: int = 200) -> int:
    """A base port whose next ``span`` ports can all be bound right now."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(BLOCK_PORTS.start, BLOCK_PORTS.stop - span)
        if all(_bindable(base + i) for i in range(span)):
            return base
    raise RuntimeError(f"no block of {span} free ports")


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child process load ``settings``."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    for name, (attr, _) in ENVIRONMENT.items():
        value = getattr(settings, attr)
        if isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, tuple):  # a list of names, or of (host, port) pairs
            env[name] = ",".join(v if isinstance(v, str) else f"{v[0]}:{v[1]}" for v in value)
        elif isinstance(value, Mapping):
            env[name] = ",".join(f"{owner}:{key}" for key, owner in value.items())
        else:
            env[name] = str(value)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Service:
    """One child process with its log file; stopped by its own PID only."""

    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        if not self.running():
            return
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL to the whole process group, as a crash: no clean-up, no acks."""
        if not self.running():
            return
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only what it started
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_redis(workdir: Path) -> tuple[Service, int]:
    port = free_port()
    # More databases than the default 16: every make_settings() takes a fresh one.
    command = [*redis_command(port, workdir / f"redis-{port}"), "--databases", "256"]
    service = Service("redis", command, workdir / "redis.log").start()
    wait_until(lambda: answers("127.0.0.1", port), 15, "redis-server")
    return service, port


def start_aof_redis(workdir: Path, port: int) -> Service:
    """A redis-server on ``port`` that writes every command to its AOF before answering: it
    can be killed and started again (same port, same folder) with nothing lost."""
    command = [*redis_command(port, workdir / f"redis-aof-{port}"), "--appendonly", "yes", "--appendfsync", "always"]
    service = Service(f"redis-aof-{port}", command, workdir / f"redis-aof-{port}.log").start()
    wait_until(lambda: answers("127.0.0.1", port), 15, "redis with AOF")
    return service


def start_seaweed(settings: Settings, workdir: Path, s3_port: int | None = None) -> tuple[Service, int]:
    """``weed mini`` on a block of free ports (tried again on another block if one of its
    ports was taken in the meantime: it then exits at once)."""
    for attempt in range(3):
        port = s3_port or free_port_block(SEAWEED_PORT_SPAN)
        command = seaweed_command(settings, port, workdir / f"seaweedfs-{port}")
        service = Service("seaweedfs", command, workdir / "seaweedfs.log").start()
        wait_until(lambda p=port, s=service: answers("127.0.0.1", p) or not s.running(), 30, "SeaweedFS S3")
        if service.running():
            return service, port
        if s3_port or attempt == 2:
            raise RuntimeError(f"SeaweedFS exited:\n{service.log()[-2000:]}")
    raise AssertionError("not reached")


def start_worker(
    settings: Settings,
    workdir: Path,
    name: str,
    concurrency: int = 20,
    app: str = "celery_app.worker",
    supervised: bool = False,
    watched: float | None = None,
    **env: str,
) -> Service:
    """A Celery worker of ``app``; ``supervised``: under ``delineate.dev.supervise``, as `make run` starts it;
    ``watched``: also replaced when its heartbeat (WORKER_HEARTBEAT_FILE) is older than that many seconds."""
    command = [
        str(BIN / "celery"), "-A", app, "--quiet", "worker",
        "--loglevel=INFO", "-c", str(concurrency), "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if supervised or watched is not None:
        command = [*supervise_command(settings, watched), *command]
    service = Service(name, command, workdir / f"{name}.log", settings_env(settings, **env)).start()
    wait_until(lambda: "ready." in service.log() or not service.running(), 60, f"worker {name}")
    if "ready." not in service.log():  # (a worker may be ready and already gone: a poison job)
        raise RuntimeError(f"worker {name} exited:\n{service.log()[-3000:]}")
    return service


def supervise_command(settings: Settings, watched: float | None = None) -> list[str]:
    """``delineate.dev.supervise``, watching the heartbeat of ``settings`` with a deadline of ``watched`` s."""
    watch = ["--heartbeat", settings.worker_heartbeat_file, "--deadline", str(watched)] if watched else []
    return [sys.executable, "-m", "delineate.dev.supervise", *watch, "--"]


def start_sweeper(settings: Settings, workdir: Path, name: str, supervised: bool = False) -> Service:
    """The sweeper process as `make run`, compose and k8s start it: beat inside a worker
    that consumes only the sweep queue (``supervised``: under ``delineate.dev.supervise``)."""
    command = [
        str(BIN / "celery"), "-A", "celery_app.worker", "--quiet", "worker", *sweeper_args(name),
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if supervised:
        command = [*supervise_command(settings), *command]
    service = Service(name, command, workdir / f"{name}.log", settings_env(settings)).start()
    wait_until(lambda: "ready." in service.log() or not service.running(), 60, f"sweeper {name}")
    if not service.running():
        raise RuntimeError(f"sweeper {name} exited:\n{service.log()[-3000:]}")
    return service


def start_api(
    settings: Settings,
    workdir: Path,
    name: str = "api",
    workers: int = 1,
    port: int | None = None,
    app: str = "delineate.wsgi:app",
    **env: str,
) -> tuple[Service, str]:
    port = port or free_port()
    command = [
        str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), app,
    ]  # fmt: skip
    service = Service(name, command, workdir / f"{name}.log", settings_env(settings, **env)).start()
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not service.running():
            return True
        try:
            # /health: never rate limited, so slow first answers cannot use up the limit
            return httpx.get(f"{base}/health", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_until(up, 30, f"gunicorn {name}")
    if not service.running():
        raise RuntimeError(f"gunicorn {name} exited:\n{service.log()[-3000:]}")
    return service, base


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    wait_until(predicate, timeout, what, interval)


def poll_status(get: object, job_id: str, states: set[str], timeout: float = 30.0) -> dict[str, object]:
    """Poll ``get(job_id)`` (returns the status dict) until its status is in ``states``."""
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        last = get(job_id)  # type: ignore[operator]
        if last.get("status") in states:
            return last
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}; last status: {last}")


def send_unreadable_job(settings: Settings) -> str:
    """Queue a job whose record the task cannot read: an unhandled error in the worker (a
    task failure, reported to Sentry). Returns its id."""
    import uuid

    import redis
    from celery import Celery

    from delineate.broker.queue import PREPARE_DOWNLOAD
    from delineate.store.keys import job_key

    job_id = str(uuid.uuid4())
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    now = "2025-01-01T00:00:00Z"
    client.hset(job_key(job_id), mapping={"jobId": job_id, "status": "queued", "fileIds": "{broken",
                                          "createdAt": now, "updatedAt": now, "version": 1})  # fmt: skip
    client.expire(job_key(job_id), 600)
    client.close()
    sender = Celery(broker=settings.celery_broker_url)
    try:
        sender.send_task(PREPARE_DOWNLOAD, args=[job_id], task_id=job_id, ignore_result=True)
    finally:
        sender.close()
    return job_id


def queued_job(store: JobStore, owner: str = "") -> str:
    """A queued single-file job that no worker will take (no task message): a test moves it on."""
    from delineate.models import Job, JobState

    job = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, file_ids=[70000], owner=owner)
    store.create(job)
    return job.job_id


def finish_job(store: JobStore, job_id: str) -> None:
    """Take a :func:`queued_job` to ``completed`` with the writes a worker makes (each publishes)."""
    from delineate.models import JobState, Phase

    store.update(job_id, status=JobState.PROCESSING, phase=Phase.CHECKING, attempts=1)
    store.update(
        job_id,
        status=JobState.COMPLETED,
        phase=Phase.DONE,
        progress=100,
        completedFiles=1,
        availableFiles=1,
        resultKey="downloads/70000.zip",
        size=1024,
    )


def completed_job(store: JobStore, owner: str = "") -> str:
    """A completed single-file job, written as a worker writes it (its status read presigns)."""
    job_id = queued_job(store, owner)
    finish_job(store, job_id)
    return job_id
