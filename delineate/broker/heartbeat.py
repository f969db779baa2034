"""The worker side of :mod:`delineate.broker.liveness`: a consumer bootstep that touches
WORKER_HEARTBEAT_FILE from the consumer's own event loop.

The touch is a timer entry of the consumer (``c.timer``, driven by the event loop that
also reads the broker's socket and hands messages to the pool), so the file goes stale
when that loop stops turning, however it stopped. Between connections, the loop does not
run at all: Celery is connecting to the broker, retrying with bounded timeouts. A Redis
outage must not make every worker look hung (and be restarted, in a loop, for as long as
it lasts), so during that time, and while a warm shutdown waits for running jobs, a
small thread touches the file instead.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery, bootsteps

from delineate.broker import liveness
from delineate.broker.app import services_of

logger = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    """Touches the heartbeat file every ``WORKER_LIVENESS_SECONDS / 6`` seconds."""

    label = "Heartbeat"
    requires = ("celery.worker.consumer.tasks:Tasks",)  # started once tasks are consumed

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        settings = services_of(parent.app).settings
        self.path: str = settings.worker_heartbeat_file
        self.interval = liveness.interval(settings.worker_liveness_seconds)
        self._looping = False  # True while the event loop owns the touches
        self._tref: Any = None
        self._failed = False
        if self.path:
            if getattr(parent, "hub", None) is None:
                logger.warning("liveness: this worker has no event loop; its heartbeat only shows its timer runs")
            self._touch()
            threading.Thread(target=self._between_loops, name="heartbeat", daemon=True).start()

    def start(self, parent: Any) -> None:
        if not self.path:
            return
        self._looping = True
        self._touch()
        self._tref = parent.timer.call_repeatedly(self.interval, self._touch)

    def stop(self, parent: Any) -> None:
        # The connection was lost (or the worker is stopping): the loop no longer runs.
        self._looping = False
        if self._tref is not None:
            self._tref.cancel()  # (the consumer may have cleared its timer already: harmless)
            self._tref = None

    shutdown = stop

    def _between_loops(self) -> None:
        while True:
            time.sleep(self.interval)
            if not self._looping:
                self._touch()

    def _touch(self) -> None:
        try:
            liveness.touch(self.path)
        except OSError as exc:
            if not self._failed:  # once, not every few seconds
                logger.error("liveness: cannot touch %s: %s", self.path, exc)
            self._failed = True
        else:
            self._failed = False


def add_heartbeat(celery: Celery) -> None:
    """Register the step on ``celery``'s consumer (a worker of it writes the heartbeat
    when WORKER_HEARTBEAT_FILE is set)."""
    celery.steps["consumer"].add(Heartbeat)
