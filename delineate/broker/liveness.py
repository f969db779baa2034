"""Is a worker alive? A file its consumer loop touches every few seconds says so.

A worker can hang without dying: a deadlock, a socket that never answers, SIGSTOP, the
"stops consuming after a reconnect" family of Celery reports. Its process still exists,
so a check that it runs sees nothing wrong, and a ``celery inspect ping`` goes through
Redis, so a Redis outage would fail it on every worker at once. Instead the worker's own
event loop touches WORKER_HEARTBEAT_FILE (``delineate.broker.heartbeat``): the file goes
stale exactly when that loop stops turning. Reading it needs no broker and no import of
Celery, so the same check serves `make run`'s supervisor (``delineate.dev.supervise
--heartbeat``), compose's healthcheck and Kubernetes' livenessProbe::

    python -m delineate.broker.liveness [--file F] [--max-age S]

exits 0 when F was touched within S seconds, 1 when it is older or missing, 2 on a usage
or settings error. F and S default to WORKER_HEARTBEAT_FILE and WORKER_LIVENESS_SECONDS.

Also here: :func:`die_with_parent`, so a child process (the sweeper's embedded beat, a
supervised command) does not outlive the process that started it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

HEARTBEATS_PER_DEADLINE = 6
"""Touches per WORKER_LIVENESS_SECONDS: one late touch (a long GC, a busy loop) is not a hang."""

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when the thread that created it exits (Linux)."""


def interval(max_age: float) -> float:
    """Seconds between two touches for a deadline of ``max_age`` seconds."""
    return max_age / HEARTBEATS_PER_DEADLINE


def touch(path: str) -> None:
    """Set the file's modification time to now, creating it (and its folder) if needed.

    :raise OSError: the file cannot be written.
    """
    try:
        os.utime(path)
    except FileNotFoundError:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()


def age(path: str, now: float | None = None) -> float | None:
    """Seconds since the file was last touched (wall clock, as its mtime); None when it is missing."""
    try:
        touched = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now is None else now) - touched)


def is_fresh(path: str, max_age: float, now: float | None = None) -> bool:
    """The file exists and was touched within ``max_age`` seconds."""
    seconds = age(path, now)
    return seconds is not None and seconds <= max_age


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()
"""Loaded at import: :func:`die_with_parent` also runs between fork and exec, where
loading a library could wait on a lock held by a thread that was not forked."""


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits (even by SIGKILL).

    ``parent_pid`` closes the race of a parent that died before the request: then this
    process was already handed to another parent, and the caller should exit. Returns
    False when that happened; True otherwise, also where there is no prctl (not Linux)
    and nothing can be done.
    """
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is None:
        return True
    prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return os.getppid() == parent_pid


def _check(path: str, max_age: float) -> int:
    seconds = age(path)
    if seconds is None:
        print(f"liveness: {path} is missing", file=sys.stderr)
        return 1
    if seconds > max_age:
        print(f"liveness: {path} last touched {seconds:.1f} s ago (more than {max_age:g} s)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m delineate.broker.liveness", description=__doc__.split("\n")[0])
    parser.add_argument("--file", help="the heartbeat file (default: WORKER_HEARTBEAT_FILE)")
    parser.add_argument("--max-age", type=float, help="seconds (default: WORKER_LIVENESS_SECONDS)")
    args = parser.parse_args(argv)
    path, max_age = args.file, args.max_age
    if path is None or max_age is None:
        from delineate.config import ConfigError, load_settings

        try:
            settings = load_settings()
        except ConfigError as exc:
            print(f"liveness: {exc}", file=sys.stderr)
            return 2
        path = settings.worker_heartbeat_file if path is None else path
        max_age = settings.worker_liveness_seconds if max_age is None else max_age
    if not path:
        return 0  # WORKER_HEARTBEAT_FILE="": no heartbeat is written, so none is judged
    return _check(path, max_age)


if __name__ == "__main__":
    raise SystemExit(main())
