"""The ``revoked`` webhook's state in the job hash (``delineate/jobs/webhooks.py`` sends it).

A completed job with a callback URL that is revoked gets one more delivery, event
``revoked``. Its state is the hash field ``revokedCallback`` (JSON ``{status, attempts,
lastError, since}``, ``since`` in epoch seconds), beside the job's own ``callback``; the
field is private (not in the status JSON). ``lua/revoke.lua`` writes its first state in the
revoking step itself. Its schedule is the job's entry in ``sweep:webhooks``, the index the
sweeper already drives, used one event at a time: the ``revoked`` event is scheduled only
once the job's own delivery is over (``delivered`` or ``failed``), so the two never share
the entry at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from delineate.models import Job
from delineate.redis_io.base import pairs_to_dict
from delineate.store.keys import WEBHOOKS_KEY, job_key

if TYPE_CHECKING:
    from delineate.store.jobstore import JobStore

FIELD = "revokedCallback"

ACTIVE = frozenset({"pending", "retrying"})
"""States in which a delivery is still to be made."""

OVER = frozenset({"delivered", "failed"})
"""States in which a delivery is over."""


def read(store: JobStore, job_id: str) -> tuple[Job | None, dict[str, Any] | None]:
    """The job and its ``revoked`` delivery state (None: none), in one round trip."""
    reply = store.direct.command(*store.read_command(job_id))
    if not reply:
        return None, None
    raw = pairs_to_dict(reply)
    return Job.from_hash(raw), _decode(raw.get(FIELD))


def state(store: JobStore, job_id: str) -> dict[str, Any] | None:
    """The ``revoked`` delivery state alone (None: none)."""
    return _decode(store.redis.hget(job_key(job_id), FIELD))


def _decode(raw: Any) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def set_outcome(store: JobStore, job_id: str, outcome: dict[str, Any], next_attempt_at: float | None) -> bool:
    """Store an attempt's outcome and schedule the next one at ``next_attempt_at`` (epoch s;
    None: no more). False: the job is gone."""
    return store.set_revoked_callback(job_id, orjson.dumps(outcome), next_attempt_at)


def schedule_now(store: JobStore, job_id: str) -> None:
    """The job's own delivery just ended: make its waiting ``revoked`` delivery due now
    (unless it is already scheduled)."""
    store.redis.zadd(WEBHOOKS_KEY, {job_id: int(time.time())}, nx=True)
