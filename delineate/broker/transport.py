"""kombu's Redis transports, with one redis-py client per channel instead of one per publish.

kombu's Redis channel builds a new ``redis.Redis`` for every command it sends outside
its consumer's own client (``Channel.conn_or_acquire``): every task event a worker
publishes (received, started, succeeded), every ack's pipeline. ``Redis.__init__`` copies
some 200 response callbacks into a case-insensitive dict, and in the bundle benchmark
that construction alone was 5-12 % of a worker's samples (bench/results/bundle-profile.md).
A client holds no connection of its own (each command takes one from the channel's
pool and gives it back), so one client per channel and pool serves every thread.

``use_shared_clients()`` puts these classes under kombu's own names (``redis``,
``rediss``, ``sentinel``), so URLs, ``Connection.as_uri()`` and Flower's broker view are
unchanged; ``make_celery`` calls it before any connection is made, with FAST_PATHS (the
default), and ``use_kombus_own()`` without: the reference path, kombu as it ships.
"""

from __future__ import annotations

from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class _SharedClient:
    """Reuse the channel's synchronous client while its connection pool is the same one
    (kombu drops and rebuilds the pool after a fork or a failover)."""

    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        client = self._shared_client
        pool = self.pool  # type: ignore[attr-defined]
        if client is None or client.connection_pool is not pool:
            client = self._shared_client = super()._create_client()  # type: ignore[misc]
        return client


class Channel(_SharedClient, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_SharedClient, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


_KOMBUS_OWN = {name: TRANSPORT_ALIASES[name] for name in ("redis", "rediss", "sentinel")}


def _forget_resolved() -> None:
    # kombu resolves a transport's name once per process (get_transport_cls caches it): a
    # process that builds apps of both settings (the tests) must not keep the first choice.
    for name in _KOMBUS_OWN:
        kombu_transport._transport_cache.pop(name, None)


def use_kombus_own() -> None:
    """Give kombu's transports their own classes back (idempotent)."""
    TRANSPORT_ALIASES.update(_KOMBUS_OWN)
    _forget_resolved()


def use_shared_clients() -> None:
    """Make kombu's ``redis``, ``rediss`` and ``sentinel`` transports these (idempotent)."""
    TRANSPORT_ALIASES.update(
        {
            "redis": f"{__name__}:Transport",
            "rediss": f"{__name__}:Transport",
            "sentinel": f"{__name__}:SentinelTransport",
        }
    )
    _forget_resolved()
