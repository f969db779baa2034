"""Which of many file ids have a source object, and its size: the estimate's question.

A HEAD per id costs about half a millisecond of the API's CPU and the store's; 10,000 of
them take seconds. Where the ids are dense in the bucket's key order (a range of ids, most
exports), one LIST page answers for up to a thousand keys at once: the keys are listed from
the first id not yet settled, and every requested key up to the page's last key is settled
by it (present with its size, or absent). Once a page settles few ids (ids far apart among
many other objects) listing stops, and the ids left are HEADs, side by side. Without the
right to list (s3:ListBucket), every id is a HEAD, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from delineate.api.fanout import map_within
from delineate.errors import StorageMisconfigured
from delineate.storage import ObjectInfo, Storage, source_key

logger = logging.getLogger(__name__)

SOURCE_PREFIX = "downloads/"
"""What every :func:`~delineate.storage.source_key` starts with."""

LIST_MIN_IDS = 200
"""Fewer ids than this are HEADs only (a LIST would not pay for itself)."""

LIST_PAGE_KEYS = 1000
"""Keys per LIST page (S3's most)."""

LIST_MIN_SETTLED_PER_PAGE = 50
"""Listing goes on while each page settles at least this many ids (a page costs about what
a few dozen HEADs do); after one that settles fewer, the ids left are HEADs."""


def check_sources(
    storage: Storage, ids: Sequence[int], concurrency: int, budget_seconds: float
) -> list[ObjectInfo | object | None]:
    """Each id's source (None: absent), in the order given; by ``budget_seconds`` whatever
    happens, with :data:`~delineate.api.fanout.PENDING` for the ids not settled by then.

    :raise SourceUnavailable: the store did not answer a request.
    :raise StorageMisconfigured: the bucket cannot be used.
    """
    deadline = time.monotonic() + budget_seconds
    settled: dict[int, ObjectInfo | None] = {}
    if len(ids) >= LIST_MIN_IDS:
        try:
            settled = _listed(storage, ids, deadline)
        except StorageMisconfigured as exc:  # e.g. no s3:ListBucket: the HEADs say what is wrong, if anything
            logger.info("listing sources failed (%s); checking each with a HEAD", exc)
    rest = [file_id for file_id in dict.fromkeys(ids) if file_id not in settled]
    heads = map_within(
        lambda file_id: storage.head(source_key(file_id)), rest, concurrency, max(0.0, deadline - time.monotonic())
    )
    found: dict[int, ObjectInfo | object | None] = {**settled, **dict(zip(rest, heads, strict=True))}
    return [found[file_id] for file_id in ids]


def _listed(storage: Storage, ids: Sequence[int], deadline: float) -> dict[int, ObjectInfo | None]:
    """The ids settled by LIST pages, until listing stops paying or the deadline."""
    wanted = sorted({source_key(file_id): file_id for file_id in ids}.items())  # S3's order (ASCII keys)
    settled: dict[int, ObjectInfo | None] = {}
    position = 0
    while position < len(wanted) and time.monotonic() < deadline:
        first = wanted[position][0]
        # Start just before the first unsettled key: no source key lies between the two.
        listed, more = storage.list_sizes(SOURCE_PREFIX, first[:-1], LIST_PAGE_KEYS)
        before = position
        last = max(listed) if listed else None
        if more and last is None:  # (a store that says "more" and lists nothing)
            break
        while position < len(wanted) and (not more or wanted[position][0] <= last):  # type: ignore[operator]
            key, file_id = wanted[position]
            size = listed.get(key)
            settled[file_id] = None if size is None else ObjectInfo(key=key, size=size)
            position += 1
        if position - before < LIST_MIN_SETTLED_PER_PAGE and position < len(wanted):
            break  # sparse here: HEADs for the rest (so at most len(ids) / 50 pages in all)
    return settled
