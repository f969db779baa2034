"""Sample data: ``downloads/{id}.zip`` for every multiple of 7 from 70000 to 70994."""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor

from delineate.storage import Storage, source_key

logger = logging.getLogger(__name__)

SAMPLE_IDS: tuple[int, ...] = tuple(range(70000, 70995, 7))
MIN_SIZE_BYTES = 1024
MAX_SIZE_BYTES = 1024 * 1024


def sample_content(file_id: int, size: int | None = None) -> bytes:
    """Deterministic bytes for ``file_id``: the same on every machine and run."""
    rng = random.Random(file_id)
    length = size if size is not None else rng.randint(MIN_SIZE_BYTES, MAX_SIZE_BYTES)
    return rng.randbytes(length)


def seed(storage: Storage, ids: tuple[int, ...] = SAMPLE_IDS, size: int | None = None) -> int:
    """Upload the sample objects that are missing or of the wrong size. Idempotent.

    Returns how many objects were written.
    """
    storage.ensure_bucket()

    def one(file_id: int) -> bool:
        data = sample_content(file_id, size)
        existing = storage.head(source_key(file_id))
        if existing is not None and existing.size == len(data):
            return False
        storage.put(source_key(file_id), data)
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        written = sum(pool.map(one, ids))
    logger.info("seeded %d of %d sample files", written, len(ids))
    return written
