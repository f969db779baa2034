"""Processes that die leave nothing behind; a worker that hangs is replaced and its job completes.

A hang is made real with SIGSTOP: the worker's process exists, its event loop no longer
turns, so its heartbeat file (WORKER_HEARTBEAT_FILE) goes stale. Each test brings its own
processes on its own Redis database and signals only what it started, by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.faults.test_core import _client_and_get
from tests.support.stack import (
    ROOT,
    free_port,
    poll_status,
    settings_env,
    start_aof_redis,
    start_sweeper,
    start_worker,
    wait_for,
)

LIVE = {"worker_liveness_seconds": 3, "sweep_interval_seconds": 1, "job_lease_seconds": 3}
"""A heartbeat every 0.5 s, stale after 3 s; a sweep every second and short leases, so the
hung worker's job is handed on within seconds."""

PROBE = [sys.executable, "-m", "delineate.broker.liveness"]
"""The Kubernetes livenessProbe's command (deploy/k8s/worker-deployment.yaml)."""


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, session..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return [p for p in found if _alive(p)]


def _group(pgid: int) -> list[int]:
    """Every live process of process group ``pgid``."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and (fields := _stat(int(entry.name)))
        and fields[2] == str(pgid)
        and _alive(int(entry.name))
    ]


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_stopped_worker_is_replaced_and_its_job_completes(make_settings: Any, workdir: Path, tmp_path: Path) -> None:
    settings = make_settings(
        worker_heartbeat_file=str(tmp_path / "worker.alive"),
        download_delay_min_ms=4000,
        download_delay_max_ms=4000,
        visibility_timeout_seconds=120,  # the job comes back through its lease and the sweeper, not this
        **LIVE,
    )
    # The supervisor's deadline (5 s) is longer than the worker's own (3 s), as the probe's
    # period and failure threshold make Kubernetes act later than the first failed probe.
    worker = start_worker(settings, workdir, "worker-hung", concurrency=4, watched=5)
    sweeper = start_sweeper(settings.replace(worker_heartbeat_file=str(tmp_path / "sweeper.alive")), workdir, "sw-hung")
    stopped: list[int] = []
    try:
        client, get = _client_and_get(settings)
        job_id = client.post("/v1/download/initiate", json={"file_ids": [70000, 70007]}).get_json()["jobId"]
        wait_for(lambda: get(job_id)["status"] == "processing", 30, "the job running")
        (first,) = _children(worker.pid)
        env = settings_env(settings)
        assert subprocess.run(PROBE, env=env, cwd=ROOT).returncode == 0  # fresh

        os.kill(first, signal.SIGSTOP)
        stopped.append(first)
        began = time.monotonic()
        time.sleep(3.3)  # past WORKER_LIVENESS_SECONDS, before the supervisor's deadline
        probe = subprocess.run(PROBE, env=env, cwd=ROOT, capture_output=True, text=True)
        assert probe.returncode == 1, probe.stderr  # as Kubernetes would see it: stale
        wait_for(lambda: not _alive(first), 15, "the hung worker killed")
        killed = time.monotonic() - began
        wait_for(lambda: worker.log().count("ready.") == 2, 60, "its replacement ready")
        replaced = time.monotonic() - began
        done = poll_status(get, job_id, {"completed", "failed"}, timeout=60)
        completed = time.monotonic() - began
        assert done["status"] == "completed", done
        assert "is hung" in worker.log() and worker.running()
        assert subprocess.run(PROBE, env=env, cwd=ROOT).returncode == 0  # the replacement's heartbeat
        print(
            f"\nSIGSTOP -> killed {killed:.1f} s, -> replacement ready {replaced:.1f} s, "
            f"-> job completed {completed:.1f} s (attempts {done['attempts']})"
        )
    finally:
        _kill_all(stopped)  # (gone already, unless the test failed)
        worker.stop()
        sweeper.stop()


def test_a_redis_outage_does_not_make_a_worker_look_hung(make_settings: Any, workdir: Path, tmp_path: Path) -> None:
    """While the worker reconnects its event loop does not run; it is not hung for that."""
    port = free_port()
    redis_service = start_aof_redis(workdir, port)
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        worker_heartbeat_file=str(tmp_path / "worker.alive"),
        download_delay_enabled=False,
        **LIVE,
    )
    worker = start_worker(settings, workdir, "worker-outage-alive", concurrency=2, watched=3)
    try:
        redis_service.kill()
        time.sleep(10)  # three deadlines
        redis_service = start_aof_redis(workdir, port)
        client, get = _client_and_get(settings)
        job_id = client.post("/v1/download/initiate", json={"file_ids": [70000]}).get_json()["jobId"]
        assert poll_status(get, job_id, {"completed", "failed"}, timeout=30)["status"] == "completed"
        assert "is hung" not in worker.log()
    finally:
        worker.stop()
        redis_service.stop()


def test_a_killed_sweeper_takes_its_beat_with_it(make_settings: Any, workdir: Path, tmp_path: Path) -> None:
    """No supervisor (a bare VM, systemd without cgroup kill): Linux ends beat with its worker."""
    settings = make_settings(worker_heartbeat_file=str(tmp_path / "sweeper.alive"), sweep_interval_seconds=1)
    sweeper = start_sweeper(settings, workdir, "sweeper-orphan")
    beats: list[int] = []
    try:
        wait_for(lambda: len(_children(sweeper.pid)) == 1, 30, "beat started")
        beats = _children(sweeper.pid)
        os.kill(sweeper.pid, signal.SIGKILL)  # the worker alone, as an OOM kill would
        wait_for(lambda: not _alive(beats[0]), 5, "beat gone with its worker")
    finally:
        _kill_all(beats)
        sweeper.stop()


def test_a_killed_supervised_sweeper_leaves_nothing_and_one_beat_runs(
    make_settings: Any, workdir: Path, tmp_path: Path
) -> None:
    settings = make_settings(worker_heartbeat_file=str(tmp_path / "sweeper.alive"), sweep_interval_seconds=1)
    sweeper = start_sweeper(settings, workdir, "sweeper-supervised", supervised=True)
    first = 0
    try:
        wait_for(lambda: len(_children(sweeper.pid)) == 1 and len(_group(_children(sweeper.pid)[0])) == 2, 30, "beat")
        (first,) = _children(sweeper.pid)  # the worker leads its own group: itself and its beat
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not _group(first), 5, "nothing left of the killed sweeper's group")
        wait_for(lambda: sweeper.log().count("ready.") == 2, 60, "the sweeper restarted")
        (second,) = _children(sweeper.pid)
        wait_for(lambda: len(_children(second)) == 1, 10, "its beat")
        # One scheduler sends one sweep a second; an orphan beside it would double that.
        mark = sweeper.log().count("Sending due task")
        time.sleep(5)
        sent = sweeper.log().count("Sending due task") - mark
        assert 3 <= sent <= 6, sent
    finally:
        _kill_all(_group(first) if first else [])
        sweeper.stop()


def test_the_supervisor_leaves_nothing_behind(tmp_path: Path) -> None:
    """What a dead child left in its group is killed; a killed supervisor takes its child."""
    pids = tmp_path / "pids"
    child = textwrap.dedent(f"""
        import os, pathlib, subprocess, sys, time
        pids = pathlib.Path({str(pids)!r})
        first = not pids.exists()
        left = subprocess.Popen(["sleep", "60"]).pid if first else os.getpid()
        pids.write_text(pids.read_text() + f"{{left}} " if pids.exists() else f"{{left}} ")
        sys.exit(3) if first else time.sleep(60)
    """)
    sup = subprocess.Popen([sys.executable, "-m", "delineate.dev.supervise", "--", sys.executable, "-c", child])
    started: list[int] = []
    try:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, 15, "the child restarted")
        started = [int(p) for p in pids.read_text().split()]
        leftover, second = started
        assert not _alive(leftover)  # the first child's own child, killed with its group
        assert _alive(second)
        sup.kill()  # SIGKILL: the supervisor can do nothing more
        sup.wait(5)
        wait_for(lambda: not _alive(second), 5, "the child gone with its supervisor")
    finally:
        _kill_all(started)
        if sup.poll() is None:
            sup.kill()
