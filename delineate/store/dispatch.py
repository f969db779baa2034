"""The fair share of the worker slots: the job store's side of it (the Lua is
``lua/dispatch.lua``, pasted into the create, update and grant scripts).

A new job waits in its tenant's ready list with its task message; a free slot goes to the
tenant whose running jobs divided by its weight is lowest (ties: the one waiting longest),
skipping a tenant at its ``max_running``, and granting it pushes the job's message onto
Celery's queue in the same script. Slots free when a job ends (the update script grants
them on at once) and appear when a worker registers its pool (:meth:`Dispatch.dispatch`,
from the worker's heartbeat); the sweeper calls it too, which also drops the slot of a
job that ended without saying so (its hash expired). Nothing here waits on a dispatcher
process: every grant happens inside a write that was made anyway.

Until a worker has ever registered, every job is granted at once (Celery's own order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from delineate.config.tenants import Tenants
from delineate.store.keys import DISPATCH_TENANTS_KEY, dispatch_tenant
from delineate.store.scripts import source

logger = logging.getLogger(__name__)

Publish = Callable[[list[str]], None]
"""Publishes the task messages of granted jobs through Celery (the broker is another Redis)."""


class Dispatch:
    """Mixed into :class:`delineate.store.JobStore` (which provides ``redis``, ``queue_key``
    and ``publish_granted``)."""

    redis: redis.Redis
    queue_key: str
    publish_granted: Publish | None

    def _granted(self, ids: list[Any]) -> None:
        """Publish what a script granted but could not push (the broker is another Redis)."""
        if ids and self.publish_granted is not None:
            self.publish_granted([str(i) for i in ids])

    def dispatch(self, worker: tuple[str, int, int] | None = None, repair: bool = False) -> list[str]:
        """Grant the free slots; with ``worker`` ``(id, slots, ttl s)``, register its pool first;
        with ``repair``, first free the slots of jobs that ended without saying so.
        Returns the ids granted."""
        worker_id, slots, ttl = worker or ("", 0, 0)
        args: list[str | int] = [self.queue_key, worker_id, slots, ttl, "1" if repair else "0"]
        ids = self._grant(args=args)
        self._granted(ids)
        return [str(i) for i in ids]

    def describe_tenants(self, shares: dict[str, tuple[float, int | None]]) -> None:
        """Write each tenant's weight and ``max_running`` for the scripts (``shares`` is
        tenant → (weight, cap); None: no cap), dropping tenants no longer there."""
        wanted = {dispatch_tenant(name): f"{weight:g} {cap or 0}" for name, (weight, cap) in shares.items()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(DISPATCH_TENANTS_KEY)
        if wanted:
            pipe.hset(DISPATCH_TENANTS_KEY, mapping=wanted)  # type: ignore[arg-type]
        pipe.execute()

    def _init_dispatch(self) -> None:
        self._grant = self.redis.register_script(source("grant"))


def share_workers(store: Dispatch, tenants: Tenants) -> None:
    """Tell the fair share each tenant's weight and cap (at start-up, at every change of the
    tenants, at every sweep); a Redis that does not answer now hears it next time."""
    try:
        store.describe_tenants({t.name: (t.weight, t.max_running) for t in tenants.tenants.values()})
    except redis.RedisError as exc:
        logger.warning("tenants: could not write the fair share's weights yet: %s", exc)
