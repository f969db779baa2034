"""Redis plumbing: building clients (straight or through Sentinel), and the lanes the hot
path's commands take (:func:`lane_for`)."""

from __future__ import annotations

import redis

from delineate.redis_io.base import Lane, gevent_patched


def lane_for(client: redis.Redis, fast: bool = True) -> Lane:
    """The hot path's lane to ``client``'s server: shared round trips under gevent
    (:class:`~delineate.redis_io.pipelined.PipelinedRedis`), a connection per call with
    threads (:class:`~delineate.redis_io.direct.DirectRedis`); without ``fast`` (FAST_PATHS
    false), redis-py's client itself (:class:`~delineate.redis_io.library.LibraryLane`)."""
    if not fast:
        from delineate.redis_io.library import LibraryLane

        return LibraryLane(client)
    if gevent_patched():
        from delineate.redis_io.pipelined import PipelinedRedis

        return PipelinedRedis.for_client(client)  # type: ignore[return-value]
    from delineate.redis_io.direct import DirectRedis

    return DirectRedis.for_client(client)
