"""Run one blocking call over many items, a bounded number at once, under one time budget.

Under gevent (the API's gunicorn workers) the calls run in a greenlet pool; elsewhere
(the Flask test client, a plain thread) in a thread pool. Either way at most
``concurrency`` calls are in flight, the results come back in the items' order, and
the whole map ends by the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from delineate.redis_io.base import gevent_patched

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Sequence[T], concurrency: int, budget_seconds: float) -> list[R]:
    """``[fn(item) for item in items]``, at most ``concurrency`` at a time.

    :raise TimeoutError: not every call finished within ``budget_seconds`` (the rest are
        abandoned: cancelled if not started).
    :raise Exception: the first exception a call raised, in the items' order.
    """
    if not items:
        return []
    workers = max(1, min(concurrency, len(items)))
    if gevent_patched():
        import gevent
        import gevent.pool

        pool = gevent.pool.Pool(workers)
        try:
            with gevent.Timeout(budget_seconds, TimeoutError):
                return list(pool.imap(fn, items))
        finally:
            pool.kill(block=False)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout")
    try:
        return list(executor.map(fn, items, timeout=budget_seconds))
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
