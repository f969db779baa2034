"""Carries out a fault schedule against a :class:`ChaosStack`, each fault on its own thread
(so a stall still lasting does not delay the next fault), and records when each really
began and ended: the windows the answers are judged against (``bench/chaos/check.py``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from bench.chaos.check import Window
from bench.chaos.schedule import (
    FAILOVER,
    HANG_JOB_WORKER,
    KILL_API_WORKER,
    KILL_JOB_WORKER,
    KILL_SWEEPER,
    RESTART_REDIS,
    STOP_REDIS,
    STOP_S3,
    WEBHOOK_500,
    Fault,
)
from bench.chaos.stack import ChaosStack


class Receiver(Protocol):
    def fail_for(self, seconds: float) -> None: ...


class Injector:
    def __init__(
        self,
        stack: ChaosStack,
        receiver: Receiver,
        began: float,
        log: Callable[[str], None] = print,
    ) -> None:
        self.stack = stack
        self.receiver = receiver
        self.began = began
        self.log = log
        self.windows: list[Window] = []
        self.errors: list[str] = []
        self.ending = threading.Event()
        """Set when the load ends: every lasting fault is cut short (the stack heals)."""
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.began

    def run(self, schedule: list[Fault]) -> None:
        for fault in schedule:
            if self.ending.wait(max(0.0, fault.at - self.now())):
                return
            thread = threading.Thread(target=self._carry_out, args=(fault,), name=f"fault-{fault.kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def end(self, timeout: float = 60.0) -> None:
        """Cut lasting faults short and wait until every fault is over."""
        self.ending.set()
        for thread in self._threads:
            thread.join(timeout)

    def _carry_out(self, fault: Fault) -> None:
        start = self.now()
        try:
            self._act(fault)
        except Exception as exc:  # a fault that could not be made is reported, not raised
            self.errors.append(f"{fault.describe()}: {exc}")
        end = self.now()
        self.log(f"  fault {fault.kind:16} {start:6.1f} s -> {end:6.1f} s")
        with self._lock:
            self.windows.append(Window(fault.kind, start, end))

    def _act(self, fault: Fault) -> None:
        stack = self.stack
        if fault.kind == KILL_JOB_WORKER:
            self._kill_supervised(stack.job_workers[fault.which % len(stack.job_workers)])
        elif fault.kind == HANG_JOB_WORKER:
            pid = stack.supervised_child(stack.job_workers[fault.which % len(stack.job_workers)])
            if pid is not None:
                self._pause(pid, fault.seconds)  # the supervisor should kill and replace it meanwhile
        elif fault.kind == KILL_SWEEPER:
            assert stack.sweeper is not None
            self._kill_supervised(stack.sweeper)
        elif fault.kind == KILL_API_WORKER:
            workers = stack.api_workers()
            if workers:
                os.kill(workers[fault.which % len(workers)], signal.SIGKILL)
        elif fault.kind == STOP_REDIS:
            self._pause(stack.primary().pid, fault.seconds)
            stack.settle()  # behind Sentinel a long pause is a failover: over once it settles
        elif fault.kind == STOP_S3:
            assert stack.s3 is not None
            self._pause(stack.s3.pid, fault.seconds)
        elif fault.kind == RESTART_REDIS:
            stack.restart_redis()
        elif fault.kind == WEBHOOK_500:
            self.receiver.fail_for(fault.seconds)
            self.ending.wait(fault.seconds)
            self.receiver.fail_for(0)
        elif fault.kind == FAILOVER:
            stack.failover()
        else:
            raise ValueError(f"unknown fault {fault.kind}")

    def _kill_supervised(self, service: object) -> None:
        """SIGKILL the process a supervisor runs (only it: whatever it started is left to the
        supervisor to clean up, which is part of what the run checks)."""
        pid = self.stack.supervised_child(service)  # type: ignore[arg-type]
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def _pause(self, pid: int, seconds: float) -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            self.ending.wait(seconds)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:  # a hung worker its supervisor has replaced meanwhile
                pass
