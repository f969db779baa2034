"""How many bundles a worker process builds at once, so its memory stays within the pod's
limit (ARCHITECTURE.md, "Bounded worker memory"): one semaphore per process, whose slots
a job holds while it has a bundle's bytes in hand."""

from __future__ import annotations

import threading

from delineate.config import Settings
from delineate.storage import PART_SIZE_BYTES

WORKER_BASE_MEMORY_BYTES = 160 * 1024 * 1024
"""A worker process's memory before any bundle (idle ~92 MB RSS, plus threads and margin)."""

BUNDLE_MEMORY_BYTES = 40 * 1024 * 1024
"""Worst-case memory of one bundle being built: one part (PART_SIZE_BYTES, 8 MiB) in the
buffer, its copy for the PUT, botocore's request and SigV4 hashing copies, the read
chunks. Measured with bench/worker_memory.py (see ARCHITECTURE.md)."""

DEFAULT_BUNDLE_CONCURRENCY = 8
"""Bundles built at once per worker process when neither BUNDLE_CONCURRENCY nor
WORKER_MEMORY_LIMIT_BYTES is set."""

MEMORY_LIMIT_SHARE = 0.75
"""Share of WORKER_MEMORY_LIMIT_BYTES the bundles may plan for (the rest is margin)."""

PREFETCH_BYTES = PART_SIZE_BYTES
"""With no simulated delay, a bundle's files are checked by GET rather than HEAD and
kept, up to this many bytes per job (a bundle that ends within one part is held in
memory for its single PUT anyway): one request per file instead of two. The files past
it are checked by HEAD and streamed while bundling."""


def bundle_slots(settings: Settings) -> int:
    """How many bundles one worker process builds at once: BUNDLE_CONCURRENCY, else what
    fits in WORKER_MEMORY_LIMIT_BYTES (the pod's limit, given by Kubernetes' Downward API)."""
    if settings.bundle_concurrency:
        return settings.bundle_concurrency
    if settings.worker_memory_limit_bytes:
        budget = settings.worker_memory_limit_bytes * MEMORY_LIMIT_SHARE - WORKER_BASE_MEMORY_BYTES
        return max(1, int(budget // BUNDLE_MEMORY_BYTES))
    return DEFAULT_BUNDLE_CONCURRENCY


_bundle_gate: tuple[int, threading.BoundedSemaphore] | None = None
_bundle_gate_lock = threading.Lock()


def bundle_gate(settings: Settings) -> threading.BoundedSemaphore:
    """The process-wide semaphore that bounds concurrent bundling (one per process)."""
    global _bundle_gate
    slots = bundle_slots(settings)
    with _bundle_gate_lock:
        if _bundle_gate is None or _bundle_gate[0] != slots:
            _bundle_gate = (slots, threading.BoundedSemaphore(slots))
        return _bundle_gate[1]
