"""``make flower``: Flower on FLOWER_PORT, pointed at the same broker as the workers.

With FLOWER_BASIC_AUTH (``user:password``) every page and API call asks for it; the
value goes to Flower through its own environment variable, not the command line
(where ``ps`` would show it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from delineate.boot import settings_or_exit


def flower_command(python: str, port: int) -> list[str]:
    celery = str(Path(python).parent / "celery")
    return [celery, "-A", "celery_app.worker", "flower", "--address=127.0.0.1", f"--port={port}"]


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
