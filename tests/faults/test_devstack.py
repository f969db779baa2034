"""`make run` stays up when one of its processes dies: each runs under a restarting supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.stack import ROOT, free_port, settings_env, wait_for


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): only what this test started is ever signalled."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
    except OSError:
        return ""


def _worker_pids(root: int, port: int) -> list[int]:
    return [p for p in _descendants(root) if f"worker-{port}@" in _cmdline(p) and "supervise" not in _cmdline(p)]


def test_supervisor_restarts_a_dead_child_and_stops_on_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    child = f"import pathlib,time,sys; p=pathlib.Path({str(marker)!r}); n=len(p.read_text()) if p.exists() else 0; p.write_text('x'*(n+1)); sys.exit(3) if n == 0 else time.sleep(60)"  # noqa: E501
    sup = subprocess.Popen(
        [sys.executable, "-m", "delineate.dev.supervise", "--", sys.executable, "-c", child], cwd=ROOT
    )
    try:
        wait_for(lambda: marker.exists() and marker.read_text() == "xx", 15, "the restarted child")
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(10) != 0  # the child's code (killed by SIGTERM), and no third run
        assert marker.read_text() == "xx"
    finally:
        if sup.poll() is None:
            sup.kill()


def test_make_run_survives_a_killed_worker(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()  # Redis and S3 already answer: make run starts neither
    port, flower = free_port(), free_port()
    env = settings_env(settings, PORT=str(port), FLOWER_PORT=str(flower))
    log = open(tmp_path / "devstack.log", "wb")
    stack = subprocess.Popen(
        [sys.executable, "-m", "delineate.dev.devstack"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def api_up() -> bool:
            try:
                return httpx.get(f"{base}/livez", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: api_up() and len(_worker_pids(stack.pid, port)) == 1, 90, "make run up")
        (first,) = _worker_pids(stack.pid, port)
        os.kill(first, signal.SIGKILL)  # the worker dies (as a library bug made it do)
        wait_for(lambda: _worker_pids(stack.pid, port) not in ([], [first]), 30, "the worker restarted")
        assert stack.poll() is None and api_up()  # everything else stayed up
        job = httpx.post(f"{base}/v1/download/initiate", json={"file_ids": [70000]}, timeout=5).json()["jobId"]

        def done() -> bool:
            return httpx.get(f"{base}/v1/download/status/{job}", timeout=5).json()["status"] == "completed"

        wait_for(done, 60, "a job on the restarted worker")
    finally:
        os.killpg(stack.pid, signal.SIGTERM)  # its own session: only what this test started
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
        log.close()
