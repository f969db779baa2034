"""The liveness check (a heartbeat file and its age) and the supervisor's restart pauses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from delineate.broker import liveness
from delineate.dev import supervise
from delineate.dev.supervise import Heartbeat, restart_delay


def _touched_ago(path: Path, seconds: float) -> None:
    liveness.touch(str(path))
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_fresh_file_is_alive_a_stale_or_missing_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "run" / "worker.alive"  # its folder is made too
    assert liveness.age(str(path)) is None and not liveness.is_fresh(str(path), 60)
    liveness.touch(str(path))
    assert liveness.age(str(path)) < 1 and liveness.is_fresh(str(path), 60)
    _touched_ago(path, 90)
    assert 89 < liveness.age(str(path)) < 91 and not liveness.is_fresh(str(path), 60)
    liveness.touch(str(path))  # a touch makes it fresh again
    assert liveness.is_fresh(str(path), 60)
    assert liveness.interval(60) == 10  # six touches per deadline


def test_the_probe_command_exits_0_fresh_1_stale_or_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "worker.alive"
    assert liveness.main(["--file", str(path), "--max-age", "5"]) == 1
    liveness.touch(str(path))
    assert liveness.main(["--file", str(path), "--max-age", "5"]) == 0
    _touched_ago(path, 6)
    assert liveness.main(["--file", str(path), "--max-age", "5"]) == 1
    # As Kubernetes runs it: no arguments, the file and the deadline from the settings.
    monkeypatch.chdir(tmp_path)  # (no .env here)
    monkeypatch.setenv("WORKER_HEARTBEAT_FILE", str(path))
    monkeypatch.setenv("WORKER_LIVENESS_SECONDS", "10")
    assert liveness.main([]) == 0
    monkeypatch.setenv("WORKER_LIVENESS_SECONDS", "5")
    assert liveness.main([]) == 1
    monkeypatch.setenv("WORKER_HEARTBEAT_FILE", "")  # heartbeat off: nothing to judge
    assert liveness.main([]) == 0
    monkeypatch.setenv("WORKER_LIVENESS_SECONDS", "0")
    assert liveness.main([]) == 2  # a bad setting is not "hung"


def test_restart_pauses_double_up_to_a_few_seconds_and_reset_after_a_healthy_minute() -> None:
    pauses, previous = [], None
    for _ in range(8):  # eight quick deaths in a row
        previous = restart_delay(previous, ran_for=2.0)
        pauses.append(previous)
    assert pauses == [1, 2, 4, 4, 4, 4, 4, 4]
    assert max(pauses) == supervise.MAX_RESTART_DELAY_SECONDS <= 5
    assert restart_delay(4.0, ran_for=supervise.STABLE_AFTER_SECONDS) == supervise.RESTART_DELAY_SECONDS


def test_a_child_is_hung_when_its_heartbeat_is_stale_or_never_came(tmp_path: Path) -> None:
    path = tmp_path / "worker.alive"
    beat = Heartbeat(str(path), deadline=5, grace=30)
    assert not beat.hung(running_for=20)  # not written yet, still starting
    assert beat.hung(running_for=31)  # never written
    liveness.touch(str(path))
    assert not beat.hung(running_for=120)
    _touched_ago(path, 6)
    assert beat.hung(running_for=120)


def test_supervise_needs_a_command_and_a_deadline_with_a_heartbeat(tmp_path: Path) -> None:
    assert supervise.main(["--heartbeat", "x", "--deadline", "5", "--"]) == 2
    with pytest.raises(SystemExit) as usage:
        supervise.main(["--heartbeat", str(tmp_path / "x"), "--", "true"])
    assert usage.value.code == 2
