"""One webhook delivery over HTTP, aimed only where the operator meant.

The rules (design.md, "Webhook"):

- CALLBACK_ALLOWED_HOSTS entries are ``host`` or ``host:port``; a bare host allows ports
  80 and 443 only, so listing ``localhost`` never opens Flower, Redis or the API itself.
- At delivery the host is resolved, and the delivery is refused when any of its
  addresses is loopback, private, link-local, shared, multicast or otherwise not global,
  unless that literal address is itself listed (tests list ``127.0.0.1:PORT``).
- The connection goes to an address that was checked: the network backend below ignores
  the name httpcore asks for and connects to the pinned addresses, so a name that
  resolves again to something else (DNS rebinding) never gets a second lookup.
- One deadline for the whole delivery (resolution, connect, TLS, send, every read), a cap
  on the response body read, and no redirects (httpcore never follows them).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore

from delineate.config import split_host_port

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
BARE_HOST_PORTS = frozenset({80, 443})
"""Ports a host listed without one allows."""

DELIVERY_DEADLINE_SECONDS = 10.0
"""Time limit of one delivery attempt, from resolution to the last byte read, in seconds."""

MAX_RESPONSE_BYTES = 64 * 1024
"""Bytes of a receiver's answer read at most; the rest is dropped with the connection."""

_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


class Refused(Exception):
    """The callback host is not allowed, or resolves to an address that is not."""


@dataclass(frozen=True)
class HostRule:
    host: str
    port: int | None  # None: ports 80 and 443


def _literal(host: str) -> IPAddress | None:
    try:
        return _embedded(ipaddress.ip_address(host))
    except ValueError:
        return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), which is where it leads."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


class CallbackPolicy:
    """CALLBACK_ALLOWED_HOSTS, parsed once: which URLs may be called, and at which addresses."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.rules = tuple(HostRule(*split_host_port(entry)) for entry in entries)
        self.listed_addresses = frozenset(a for a in (_literal(r.host) for r in self.rules) if a is not None)

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host`` (lower case) on ``port`` is listed."""
        return any(
            rule.host == host and (port == rule.port if rule.port is not None else port in BARE_HOST_PORTS)
            for rule in self.rules
        )

    def address_allowed(self, address: IPAddress) -> bool:
        """A global address, or one listed literally."""
        address = _embedded(address)
        if address in self.listed_addresses:
            return True
        return address.is_global and not address.is_multicast

    def resolve(self, host: str, port: int, timeout: float) -> list[IPAddress]:
        """The addresses to connect to, every one checked.

        :raise Refused: an address is not allowed (then none is used).
        :raise OSError: the name does not resolve, or not within ``timeout``.
        """
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
            try:
                infos = future.result(timeout=max(timeout, 0.001))
            except FutureTimeout:
                raise OSError(f"resolving {host} took longer than the delivery deadline") from None
            addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            raise OSError(f"{host} has no address")
        for address in addresses:
            if not self.address_allowed(address):
                raise Refused(f"{host} resolves to {address}, which is not a public address")
        return addresses


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def clip(self, timeout: float | None) -> float:
        """The smaller of ``timeout`` and the time left. :raise httpcore.TimeoutException: none left."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the delivery deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every read, write and TLS handshake ends by the delivery deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.inner = inner
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.deadline.clip(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.deadline.clip(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self.inner.start_tls(ssl_context, server_hostname, self.deadline.clip(timeout))
        return _DeadlineStream(inner, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked addresses, whatever host name httpcore asks for.

    The name still goes into the Host header and TLS (SNI and certificate check), so
    virtual hosts and HTTPS work as usual; only the lookup is not repeated.
    """

    def __init__(self, addresses: list[IPAddress], deadline: _Deadline) -> None:
        self.addresses = addresses
        self.deadline = deadline
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in self.addresses:
            try:
                stream = self.inner.connect_tcp(
                    str(address), port, self.deadline.clip(timeout), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise error


@dataclass(frozen=True)
class Answer:
    """What the receiver said: the status code (the body is read up to the cap, then dropped)."""

    status: int


TRANSPORT_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, OSError)
"""Failures of the network or the receiver's HTTP, worth another attempt later."""


def send(
    url: str,
    body: bytes,
    headers: list[tuple[str, str]],
    policy: CallbackPolicy,
    deadline_seconds: float = DELIVERY_DEADLINE_SECONDS,
    ssl_context: ssl.SSLContext | None = None,
) -> Answer:
    """POST ``body`` to ``url`` once, under every rule above.

    :raise Refused: the URL or an address of its host is not allowed.
    :raise TRANSPORT_ERRORS: resolution, connection, TLS or HTTP failed, or the deadline passed.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    if parts.scheme not in DEFAULT_PORTS or not host or not policy.allows(host, port):
        raise Refused(f"{parts.scheme}://{host}:{port} is not in CALLBACK_ALLOWED_HOSTS")
    deadline = _Deadline(deadline_seconds)
    addresses = policy.resolve(host, port, deadline.clip(None))
    pool = httpcore.ConnectionPool(
        ssl_context=ssl_context or ssl.create_default_context(),
        network_backend=_PinnedBackend(addresses, deadline),
        max_connections=1,
        retries=0,
    )
    left = deadline.clip(None)
    timeouts = {"connect": left, "read": left, "write": left, "pool": left}
    with pool, pool.stream("POST", url, headers=headers, content=body, extensions={"timeout": timeouts}) as response:
        read = 0
        for chunk in response.iter_stream():
            read += len(chunk)
            if read >= MAX_RESPONSE_BYTES:
                break
        return Answer(response.status)
