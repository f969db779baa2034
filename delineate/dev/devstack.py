"""``make run``: the whole stack in the foreground, under honcho.

Starts Redis and SeaweedFS only when nothing answers at REDIS_URL / S3_ENDPOINT and
the host is local; then the worker, the sweeper (Celery beat and the sweep queue's
consumer, exactly one), the API and Flower. Each runs under ``delineate.dev.supervise``,
which restarts it when it dies, so one crashed process does not make honcho stop the
whole stack, and replaces the worker and the sweeper when they hang (a heartbeat file
each under .run/, stale past WORKER_LIVENESS_SECONDS). A set-up thread creates the
bucket and seeds the sample files once the store answers. Ctrl-C or SIGTERM stops every
process honcho started.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from pathlib import Path

from honcho.manager import Manager

from delineate.boot import settings_or_exit
from delineate.config import Settings
from delineate.dev.localstack import answers, host_port, is_local, redis_command, seaweed_command, wait_until

DEV_DEFAULTS = {"DOWNLOAD_DELAY_MIN_MS": "5000", "DOWNLOAD_DELAY_MAX_MS": "15000", "SENTRY_TEST_ROUTE": "true"}
"""The development delay range (the settings' own defaults stay 10-120 s), and the deliberate
500 of ``POST /v1/download/check?sentry_test=true`` (off by default)."""

RUN_DIR = Path(".run")


def sweeper_args(name: str) -> list[str]:
    """``celery worker`` arguments of the sweeper: beat inside (an in-memory schedule, no
    file), consuming only the sweep queue. Run exactly one (a second would only send
    sweeps that the sweep lock turns into no-ops)."""
    from delineate.broker.queue import SWEEP_QUEUE

    return ["--beat", "--scheduler", "celery.beat:Scheduler", "-Q", SWEEP_QUEUE, "-c", "2",
            "--loglevel=INFO", "-n", f"{name}@%h"]  # fmt: skip


def _command(args: list[str], heartbeat: tuple[Path, int] | None = None) -> str:
    """The shell line honcho runs: ``args`` under the restarting supervisor; with
    ``heartbeat`` (file, deadline in seconds), one that also replaces it when it hangs."""
    watch = ["--heartbeat", str(heartbeat[0]), "--deadline", str(heartbeat[1])] if heartbeat else []
    return shlex.join([sys.executable, "-m", "delineate.dev.supervise", *watch, "--", *args])


def _celery(name: str, args: list[str], settings: Settings, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The command and environment of a Celery worker of ``make run``: each writes its own
    heartbeat file under .run/ (unless WORKER_HEARTBEAT_FILE is empty), which its
    supervisor watches (delineate/broker/liveness.py)."""
    if not settings.worker_heartbeat_file:
        return _command(args), env
    path = (RUN_DIR / f"{name}-{settings.port}.alive").resolve()
    return _command(args, (path, settings.worker_liveness_seconds)), {**env, "WORKER_HEARTBEAT_FILE": str(path)}


def _setup(settings: Settings, manager: Manager) -> None:
    from delineate.dev.seed import SAMPLE_IDS, seed
    from delineate.storage import Storage

    try:
        s3_host, s3_port = host_port(settings.s3_endpoint, 80)
        wait_until(lambda: answers(s3_host, s3_port), 60, f"S3 at {settings.s3_endpoint}")
        storage = Storage(settings)
        wait_until(_bucket_ready(storage), 60, "the bucket", interval=0.5)
        written = seed(storage)
        # The API listens on BIND (deploy/gunicorn.conf.py): the loopback unless set otherwise.
        api_host = "127.0.0.1" if settings.bind in ("0.0.0.0", "::") else settings.bind
        api_host = f"[{api_host}]" if ":" in api_host else api_host
        print(
            f"\n  delineate is up: API http://{api_host}:{settings.port}/  "
            f"(health /health)  Flower http://127.0.0.1:{settings.flower_port}/\n"
            f"  {len(SAMPLE_IDS)} sample files in s3://{settings.s3_bucket_name}/downloads/ "
            f"({written} newly seeded). Ctrl-C stops everything.\n",
            flush=True,
        )
    except Exception as exc:  # noqa: BLE001 - report in one line, then stop the stack
        print(f"delineate: set-up failed: {exc}", file=sys.stderr, flush=True)
        manager.terminate()


def _bucket_ready(storage: object) -> object:
    def probe() -> bool:
        try:
            storage.ensure_bucket()  # type: ignore[attr-defined]
            return True
        except Exception:  # noqa: BLE001 - not yet
            return False

    return probe


def main() -> int:
    for name, value in DEV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    settings = settings_or_exit()
    env = dict(os.environ)
    manager = Manager()
    bin_dir = Path(sys.executable).parent

    redis_host, redis_port = host_port(settings.redis_url, 6379)
    # With Sentinel the data nodes are found through it: none is started here.
    if not settings.redis_sentinels and not answers(redis_host, redis_port):
        if not is_local(settings.redis_url):
            print(f"delineate: nothing answers at REDIS_URL={settings.redis_url}", file=sys.stderr)
            return 2
        manager.add_process("redis", _command(redis_command(redis_port, RUN_DIR / f"redis-{redis_port}")), env=env)

    s3_host, s3_port = host_port(settings.s3_endpoint, 80)
    if not answers(s3_host, s3_port):
        if not is_local(settings.s3_endpoint):
            print(f"delineate: nothing answers at S3_ENDPOINT={settings.s3_endpoint}", file=sys.stderr)
            return 2
        manager.add_process(
            "s3", _command(seaweed_command(settings, s3_port, RUN_DIR / f"seaweedfs-{s3_port}")), env=env
        )

    celery = [str(bin_dir / "celery"), "-A", "celery_app.worker", "--quiet"]  # no banner: the log is JSON lines
    RUN_DIR.mkdir(exist_ok=True)
    worker = [*celery, "worker", "--loglevel=INFO", "-E", "-n", f"worker-{settings.port}@%h"]
    command, worker_env = _celery("worker", worker, settings, env)
    manager.add_process("worker", command, env=worker_env)
    sweeper = [*celery, "worker", *sweeper_args(f"sweeper-{settings.port}")]
    command, sweeper_env = _celery("sweeper", sweeper, settings, env)
    manager.add_process("sweeper", command, env=sweeper_env)
    manager.add_process(
        "api",
        _command([str(bin_dir / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "delineate.wsgi:app"]),
        env=env,
    )
    manager.add_process("flower", _command([sys.executable, "-m", "delineate.flower"]), env=env)

    threading.Thread(target=_setup, args=(settings, manager), daemon=True).start()
    manager.loop()
    # Stopped by Ctrl-C or SIGTERM: that is the normal way out, not a failure.
    return 0 if manager.returncode in (None, 130, 143, -2, -15) else manager.returncode


if __name__ == "__main__":
    raise SystemExit(main())
