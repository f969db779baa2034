"""``python -m delineate.dev.supervise [--heartbeat FILE --deadline S [--grace G]] -- COMMAND...``:
run COMMAND, restart it when it dies or hangs.

honcho (``make run``) stops the whole stack when one of its processes exits; a worker
that a library bug ends (kombu's ``restore_unacked`` after Redis was killed, see
ARCHITECTURE.md "Crash safety") would take the API and everything else with it. Each
process of ``make run`` therefore runs under this small supervisor, as compose's
``restart: unless-stopped`` and Kubernetes' restart policy do for containers.

- The child runs in a process group (and session) of its own. Whenever it exits, however
  it died, whatever is left of that group is killed: the sweeper's embedded Celery beat
  would otherwise outlive a SIGKILLed worker and send sweeps for ever. The child also
  gets SIGKILL from Linux if the supervisor itself is killed (honcho kills it 5 s after
  Ctrl-C if it has not exited by then).
- With ``--heartbeat FILE --deadline S`` (a Celery worker and WORKER_HEARTBEAT_FILE, see
  ``delineate.broker.liveness``), a child whose file is older than S seconds, or that has
  not written it within G seconds of its start (default 30), is hung: its group is
  SIGKILLed, and it is restarted like a child that died.
- SIGTERM or SIGINT to the supervisor is passed to the child's group as SIGTERM, and then
  the supervisor exits with the child's code instead of restarting it.
- A child that dies is restarted after a pause of RESTART_DELAY_SECONDS, doubling with
  each quick death up to MAX_RESTART_DELAY_SECONDS, and back to the shortest once a run
  lasted STABLE_AFTER_SECONDS.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType

from delineate.broker import liveness

RESTART_DELAY_SECONDS = 1.0
"""The pause before restarting a child that died, in seconds."""
MAX_RESTART_DELAY_SECONDS = 4.0
"""The longest pause, in seconds: a job worker that keeps dying is never down for longer."""
STABLE_AFTER_SECONDS = 60.0
"""A run this long (seconds) counts as healthy: the next pause is the shortest again."""
POLL_SECONDS = 0.2
"""How often the child's exit and its heartbeat are looked at, in seconds."""
START_GRACE_SECONDS = 30.0
"""Default seconds a child has to write its first heartbeat (imports, connecting)."""


@dataclass(frozen=True)
class Heartbeat:
    """The file a supervised child must keep fresh."""

    path: str
    deadline: float
    grace: float = START_GRACE_SECONDS

    def hung(self, running_for: float, now: float | None = None) -> bool:
        """The child, started ``running_for`` seconds ago, has gone quiet for too long."""
        seconds = liveness.age(self.path, now)
        if seconds is None:  # (the file is removed before each start)
            return running_for > max(self.grace, self.deadline)
        return seconds > self.deadline


def restart_delay(previous: float | None, ran_for: float) -> float:
    """The pause before a restart, after a run of ``ran_for`` seconds that followed a pause
    of ``previous`` seconds (None: the first restart)."""
    if previous is None or ran_for >= STABLE_AFTER_SECONDS:
        return RESTART_DELAY_SECONDS
    return min(previous * 2, MAX_RESTART_DELAY_SECONDS)


def _die_with_us(supervisor: int) -> None:
    """Runs in the child between fork and exec."""
    if not liveness.die_with_parent(supervisor):
        os._exit(1)  # the supervisor is already gone


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left of it


def _exited(child: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited, without reaping it: while it is a zombie its pid,
    and so its process group's id, cannot be given to another process, so killing that
    group is safe until :meth:`Popen.wait`."""
    try:
        return os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def supervise(command: list[str], name: str, heartbeat: Heartbeat | None = None) -> int:
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if child is not None and child.returncode is None:
            _signal_group(child.pid, signal.SIGTERM)  # (a second SIGTERM is harmless to our children)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    delay: float | None = None
    supervisor = os.getpid()
    while True:
        if heartbeat is not None:
            _remove(heartbeat.path)  # the last run's file says nothing about this one
        started = time.monotonic()
        child = subprocess.Popen(command, start_new_session=True, preexec_fn=lambda: _die_with_us(supervisor))
        if stopping.is_set():  # the signal came while the child was being started
            _signal_group(child.pid, signal.SIGTERM)
        watched = heartbeat
        while not _exited(child):
            if watched is not None and not stopping.is_set() and watched.hung(time.monotonic() - started):
                age = liveness.age(watched.path)
                quiet = "never written" if age is None else f"last touched {age:.1f} s ago"
                print(f"supervise: {name} is hung ({watched.path} {quiet}); killing it", file=sys.stderr, flush=True)
                _signal_group(child.pid, signal.SIGKILL)
                watched = None  # once: it is dying
            time.sleep(POLL_SECONDS)
        _signal_group(child.pid, signal.SIGKILL)  # what is left of it (e.g. celery beat)
        code = child.wait()
        if stopping.is_set():
            return code
        delay = restart_delay(delay, time.monotonic() - started)
        print(f"supervise: {name} exited with {code}; restarting in {delay:.0f} s", file=sys.stderr, flush=True)
        if stopping.wait(delay):
            return code


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else -1  # no "--": all of it is the command
    options, command = argv[: max(split, 0)], argv[split + 1 :]
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m delineate.dev.supervise", usage="%(prog)s [options] -- COMMAND...")
    parser.add_argument("--heartbeat", help="a file the child keeps touching")
    parser.add_argument("--deadline", type=float, help="seconds the heartbeat may be stale")
    parser.add_argument("--grace", type=float, default=START_GRACE_SECONDS, help="seconds to the first heartbeat")
    args = parser.parse_args(options)
    if (args.heartbeat is None) != (args.deadline is None):
        parser.error("--heartbeat and --deadline go together")
    heartbeat = Heartbeat(args.heartbeat, args.deadline, args.grace) if args.heartbeat else None
    return supervise(command, command[0].rsplit("/", 1)[-1], heartbeat)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
