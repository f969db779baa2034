"""The 202 rule behind Sentinel: a new job is on a replica before initiate answers 202.

Redis replicates asynchronously: a primary that dies a millisecond after the job's record
and task message were written may take them with it, and the replica Sentinel promotes
never heard of a job the client was promised. So with Sentinel, initiate's create script
is followed, on the same connection and in the same round trip, by ``WAIT 1 <timeout>``:
Redis answers once at least one replica has acknowledged everything that connection
wrote, or after REDIS_REPLICA_ACK_TIMEOUT_MS with the count so far. Fewer than one means
the store raises :class:`NoReplicaAck` and the API answers 503 instead of 202.

A primary without any replica (the one that is left after the other died, until a new
replica attaches) has nothing to wait for: WAIT would only burn its timeout on every
initiate. Such writes are accepted as a single Redis would take them, and logged; the
count of connected replicas comes from ``ROLE``, asked at most once per
:data:`REPLICA_CHECK_SECONDS` per process. ARCHITECTURE.md ("Redis high availability")
says which writes this leaves exposed.

The create and its WAIT go through a lane of their own (a connection per concurrent
call, :class:`~delineate.redis_io.direct.DirectRedis`): on the API's shared pipelined lane
a WAIT would hold up every other command of the process behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from delineate.redis_io.base import DirectScript, Lane, failover_error

logger = logging.getLogger(__name__)

REPLICA_CHECK_SECONDS = 1.0
"""How long a process trusts its last count of the primary's replicas, in seconds."""

WANTED_ACKS = 1
"""Replicas that must hold a new job before the 202."""


class NoReplicaAck(Exception):
    """Replicas exist, and none acknowledged the write within the timeout."""


class ReplicaAck:
    """Sends a write with ``WAIT`` behind it and tells whether a replica acknowledged it."""

    def __init__(self, lane: Lane, timeout_ms: int) -> None:
        self.lane = lane
        self.timeout_ms = timeout_ms
        self._replicas = 0
        self._checked_at = float("-inf")

    def replicas(self) -> int:
        """Replicas connected to the primary now (cached for REPLICA_CHECK_SECONDS).

        :raise redis.ConnectionError: Redis away, or the node is no longer a primary.
        """
        now = time.monotonic()
        if now - self._checked_at < REPLICA_CHECK_SECONDS:
            return self._replicas
        role = self.lane.command("ROLE")
        if not role or role[0] not in ("master", b"master"):  # a demoted primary, mid-failover
            raise failover_error()
        count = len(role[2]) if len(role) > 2 else 0
        if count == 0 and self._replicas:
            logger.warning("redis: the primary has no replica; new jobs are accepted without a replica's copy")
        self._replicas, self._checked_at = count, now
        return count

    def forget(self) -> None:
        """Count the replicas again on the next write (after a failure or a short count)."""
        self._checked_at = float("-inf")

    def execute(self, script: DirectScript, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, int | None]:
        """Run ``script`` and then WAIT on one connection: ``(its reply, replicas that
        acknowledged)``; None for the count when the primary has no replica to wait for.

        :raise redis.ConnectionError, redis.TimeoutError: Redis away (failover).
        :raise redis.ResponseError: the script failed.
        """
        try:
            wait = [("WAIT", WANTED_ACKS, self.timeout_ms)] if self.replicas() else []
            replies = self.lane.execute(script.command(keys, args), *wait, raise_on_error=False)
            if isinstance(replies[0], NoScriptError):  # the script cache is empty (a new primary)
                replies = self.lane.execute(script.eval_command(keys, args), *wait, raise_on_error=False)
        except Exception:
            self.forget()
            raise
        for reply in replies:
            if isinstance(reply, ResponseError):
                self.forget()
                raise reply
        return replies[0], (int(replies[1]) if wait else None)

    def confirm(self, acked: int | None, job_id: str) -> None:
        """:raise NoReplicaAck: replicas exist, and fewer than WANTED_ACKS acknowledged."""
        if acked is None or acked >= WANTED_ACKS:
            return
        self.forget()
        logger.warning("job %s: no replica acknowledged it within %d ms", job_id, self.timeout_ms)
        raise NoReplicaAck(f"no replica acknowledged job {job_id} within {self.timeout_ms} ms")
