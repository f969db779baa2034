"""Container health checks that need no curl, wget or shell in the image.

    healthcheck.py                 GET /livez on the API port (PORT): the process serves
                                   (no Redis, no S3, never rate limited)
    healthcheck.py http URL        GET URL answers 2xx (e.g. /health, which checks Redis and S3)
    healthcheck.py tcp HOST:PORT   something accepts connections there (Flower)
    healthcheck.py process NAME    PID 1's command line names NAME and it is neither a zombie
                                   nor stopped (a Celery worker uses `python -m
                                   delineate.broker.liveness` instead, which also sees it hang)

Exit 0 healthy, 1 not. The default is the image's HEALTHCHECK; compose and Kubernetes
choose per role.
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

TIMEOUT_SECONDS = 4.0
"""Each probe gives up after this many seconds (below the 5 s HEALTHCHECK timeout)."""


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - fixed local URL
            return 200 <= response.status < 300
    except OSError:
        return False


def tcp_ok(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def process_ok(name: str, pid: int = 1) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        # The state is the field after the parenthesised command name: R, S, D, Z, T...
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return name in cmdline and state not in {"Z", "T", "X"}


def main(argv: list[str]) -> int:
    if not argv:
        from delineate.config import load_settings

        return 0 if http_ok(f"http://127.0.0.1:{load_settings().port}/livez") else 1
    kind, target = argv[0], argv[1] if len(argv) > 1 else ""
    checks = {"http": http_ok, "tcp": tcp_ok, "process": process_ok}
    if kind not in checks or not target:
        print(__doc__, file=sys.stderr)
        return 2
    return 0 if checks[kind](target) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
