"""Old home of the job store, now :mod:`delineate.store`: re-exports for old imports."""

# compat: removed in E
from delineate.store.history import HISTORY_MARGIN_SECONDS, HISTORY_SCAN_SLACK, HISTORY_TRIM_CHANCE
from delineate.store.jobstore import JobGone, JobStore, LeaseLost, Replay, TooManyActive, Written
from delineate.store.keys import (
    EXPIRY_KEY,
    LIVE_KEY,
    PREFIX,
    RATE_LIMIT_PREFIX,
    SUSPECTS_KEY,
    SWEEP_LOCK_KEY,
    WEBHOOKS_KEY,
    active_key,
    count_key,
    events_channel,
    history_key,
    idempotency_key,
    job_key,
    lease_key,
)
from delineate.store.sweep_index import WEBHOOK_CLAIM_INTERVALS

__all__ = [
    "EXPIRY_KEY",
    "HISTORY_MARGIN_SECONDS",
    "HISTORY_SCAN_SLACK",
    "HISTORY_TRIM_CHANCE",
    "LIVE_KEY",
    "PREFIX",
    "RATE_LIMIT_PREFIX",
    "SUSPECTS_KEY",
    "SWEEP_LOCK_KEY",
    "WEBHOOKS_KEY",
    "WEBHOOK_CLAIM_INTERVALS",
    "JobGone",
    "JobStore",
    "LeaseLost",
    "Replay",
    "TooManyActive",
    "Written",
    "active_key",
    "count_key",
    "events_channel",
    "history_key",
    "idempotency_key",
    "job_key",
    "lease_key",
]
