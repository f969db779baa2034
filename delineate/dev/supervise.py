"""``python -m delineate.dev.supervise -- COMMAND...``: run COMMAND, restart it when it dies.

honcho (``make run``) stops the whole stack when one of its processes exits; a worker
that a library bug ends (kombu's ``restore_unacked`` after Redis was killed, see
ARCHITECTURE.md "Crash safety") would take the API and everything else with it. Each
process of ``make run`` therefore runs under this small supervisor, as compose's
``restart: unless-stopped`` and Kubernetes' restart policy do for containers.

SIGTERM or SIGINT to the supervisor is passed to the child, and then the supervisor
exits with the child's code instead of restarting it. A child that dies on its own is
restarted after a pause that doubles from RESTART_DELAY_SECONDS up to
MAX_RESTART_DELAY_SECONDS, and starts again from the shortest one once a run lasted
STABLE_AFTER_SECONDS.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from types import FrameType

RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 30.0
STABLE_AFTER_SECONDS = 60.0


def supervise(command: list[str], name: str) -> int:
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # (a second SIGTERM is harmless to our children)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    delay = RESTART_DELAY_SECONDS
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        if stopping.is_set():  # the signal came while the child was being started
            child.send_signal(signal.SIGTERM)
        code = child.wait()
        if stopping.is_set():
            return code
        if time.monotonic() - started >= STABLE_AFTER_SECONDS:
            delay = RESTART_DELAY_SECONDS
        print(f"supervise: {name} exited with {code}; restarting in {delay:.0f} s", file=sys.stderr, flush=True)
        if stopping.wait(delay):
            return code
        delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    return supervise(argv, argv[0].rsplit("/", 1)[-1])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
