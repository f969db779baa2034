"""What an API process adds to the console's timeline and error log, written off the
request path.

A request only adds to in-process tallies (:class:`ConsoleRecorder.request`,
:class:`ConsoleRecorder.error`); one thread per process (:func:`_flush_forever`) writes what
piled up every FLUSH_SECONDS in one ``MULTI``/``EXEC``, and samples the queue depth and
jobs in progress once a timeline step. A stalled or lost Redis delays the figures, never a
request: what could not be written is kept (bounded) and written with the next flush.
Imports neither Flask nor prometheus-client.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis

from delineate.store.errorlog import PendingErrors, add_commands
from delineate.telemetry.timeline import StepTally, current_step, sample_commands

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
"""How often a process writes its timeline tallies and errors to Redis, in seconds."""

Sample = Callable[[], tuple[int, int]]
"""Reads (queue depth, jobs in progress) from Redis."""


class ConsoleRecorder:
    """One app's timeline tally and pending errors, flushed by the process's flusher."""

    def __init__(self, client: redis.Redis, sample: Sample) -> None:
        self.client = client
        self.sample = sample
        self.steps = StepTally()
        self.errors = PendingErrors()
        self._sampled_step = -1
        self._failing = False
        self._flush_lock = threading.Lock()
        _register(self)

    def request(self, status: int, seconds: float) -> None:
        """Count one answered request in this step (a few additions)."""
        self.steps.add(status, seconds, time.time())

    def error(self, owner: str | None, record: dict[str, Any]) -> None:
        """Queue an error log entry (:func:`delineate.store.errorlog.entry`) for ``owner``."""
        self.errors.add(owner, record)

    def flush(self) -> None:
        """Write what piled up since the last flush, with this step's sample (once a step).
        An idle process writes nothing, not even the sample: someone who looks at the
        charts makes requests, so some process samples every step they see."""
        with self._flush_lock:
            pending = self.steps.drain()
            errors = self.errors.drain()
            commands = self.steps.commands(pending)
            for owner, record in errors:
                commands += add_commands(owner, record)
            if not commands:
                return
            step = current_step()
            try:
                if step != self._sampled_step:
                    commands += sample_commands(*self.sample())
                pipe = self.client.pipeline(transaction=True)  # all or nothing: never counted twice
                for command in commands:
                    pipe.execute_command(*command)
                pipe.execute()
            except redis.RedisError as exc:
                self.steps.restore(pending)
                self.errors.put_back(errors)
                if not self._failing:  # once an outage, not once a second
                    logger.warning("console: timeline and error log kept until Redis answers: %s", exc)
                self._failing = True
                return
            self._sampled_step = step
            if self._failing:
                logger.info("console: timeline and error log written again")
            self._failing = False


_recorders: weakref.WeakSet[ConsoleRecorder] = weakref.WeakSet()
_registry_lock = threading.Lock()
_flusher_pid = 0


def _register(recorder: ConsoleRecorder) -> None:
    global _flusher_pid
    with _registry_lock:
        _recorders.add(recorder)
        if _flusher_pid != os.getpid():  # one flusher per process (a forked child starts its own)
            _flusher_pid = os.getpid()
            threading.Thread(target=_flush_forever, name="delineate-console-flush", daemon=True).start()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        with _registry_lock:
            recorders = list(_recorders)
        for recorder in recorders:
            try:
                recorder.flush()
            except Exception:
                logger.exception("console: flush failed")
