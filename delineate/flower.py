"""``make flower``: Flower on FLOWER_PORT, pointed at the same broker as the workers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from delineate.cli import settings_or_exit


def main() -> None:
    settings = settings_or_exit()
    celery = str(Path(sys.executable).parent / "celery")
    args = [
        celery,
        "-A",
        "celery_app.worker",
        "flower",
        "--address=127.0.0.1",
        f"--port={settings.flower_port}",
    ]
    os.execv(celery, args)  # noqa: S606 - replaces this process; no shell involved


if __name__ == "__main__":
    main()
