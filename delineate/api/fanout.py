"""Run one blocking call over many items, a bounded number at once, under one time budget.

Under gevent (the API's gunicorn workers) the calls run in a greenlet pool; elsewhere
(the Flask test client, a plain thread) in a thread pool. Either way at most
``concurrency`` calls are in flight, the results come back in the items' order, and
the whole map ends by the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Final, TypeVar

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


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


PENDING: Final = _Pending()
"""What :func:`map_within` leaves in place of a call that had not finished by the budget."""


def map_within(fn: Callable[[T], R], items: Sequence[T], concurrency: int, budget_seconds: float) -> list[R | _Pending]:
    """:func:`bounded_map` that answers by its budget whatever happens: the results of the
    calls that finished, and :data:`PENDING` in place of the others (abandoned: cancelled
    if not started). So a caller can answer with part of the work rather than nothing.

    :raise Exception: the first exception a call raised (in the order they finished).
    """
    results: list[R | _Pending] = [PENDING] * len(items)
    if not items:
        return results
    workers = max(1, min(concurrency, len(items)))
    if gevent_patched():
        import gevent
        import gevent.pool

        pool = gevent.pool.Pool(workers)
        errors: list[Exception] = []

        def run(index: int) -> None:
            try:
                results[index] = fn(items[index])
            except Exception as exc:  # noqa: BLE001 - raised below, in the caller's greenlet
                errors.append(exc)

        try:
            # Silent at the budget (False): spawning waits for a free slot, so the loop
            # itself stops there too, and the calls in flight are killed below.
            with gevent.Timeout(budget_seconds, False):
                for index in range(len(items)):
                    if errors:
                        break
                    pool.spawn(run, index)
                pool.join()
        finally:
            pool.kill(block=False)
        if errors:
            raise errors[0]
        return results
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout")
    try:
        futures = [executor.submit(fn, item) for item in items]
        done, _ = wait(futures, timeout=budget_seconds, return_when=FIRST_EXCEPTION)
        for index, future in enumerate(futures):
            if future in done:
                results[index] = future.result()  # (raises the call's exception)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return results
