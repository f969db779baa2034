"""``make flower``: Flower on FLOWER_PORT, pointed at the same broker as the workers.

With FLOWER_BASIC_AUTH (``user:password``) every page and API call asks for it; the
value goes to Flower through its own environment variable, not the command line
(where ``ps`` would show it).

Flower's memory is bounded by :data:`FLOWER_BOUNDS` (its defaults keep 100,000 tasks and every
worker it ever saw, while KEDA adds and removes worker pods). The same flags are on compose's
``flower`` command; ``tests/deploy/test_deploy_files.py`` checks every Flower a deployment
file starts carries them. On the command line they win over Flower's FLOWER_MAX_TASKS and
FLOWER_PURGE_OFFLINE_WORKERS environment variables.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from delineate.boot import settings_or_exit

FLOWER_MAX_TASKS = 10_000
"""Tasks Flower keeps in memory, newest first (its default: 100,000). The job store, not
Flower, is the record of every job; Flower shows the recent ones."""

FLOWER_PURGE_OFFLINE_WORKERS_SECONDS = 600
"""Seconds after which Flower forgets a worker that went offline (its default: never, so
every pod KEDA ever started stays on its Workers page and in its metrics)."""

FLOWER_BOUNDS = (f"--max_tasks={FLOWER_MAX_TASKS}", f"--purge_offline_workers={FLOWER_PURGE_OFFLINE_WORKERS_SECONDS}")
"""Flower's own options for the two bounds, as every deployment passes them."""


def flower_command(python: str, port: int) -> list[str]:
    celery = str(Path(python).parent / "celery")
    return [celery, "-A", "celery_app.worker", "flower", "--address=127.0.0.1", f"--port={port}", *FLOWER_BOUNDS]


def flower_env(basic_auth: str, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k != "FLOWER_BASIC_AUTH"}
    if basic_auth:
        env["FLOWER_BASIC_AUTH"] = basic_auth  # read by Flower itself
    return env


def main() -> None:
    settings = settings_or_exit()
    args = flower_command(sys.executable, settings.flower_port)
    env = flower_env(settings.flower_basic_auth, dict(os.environ))
    os.execve(args[0], args, env)  # noqa: S606 - replaces this process; no shell involved


if __name__ == "__main__":
    main()
