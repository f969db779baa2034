"""One webhook delivery over HTTP, aimed only where the operator meant.

The rules (design.md, "Webhook" and "Tenants"):

- A tenant's callback hosts (``callback_hosts``, default CALLBACK_ALLOWED_HOSTS) are
  ``host`` or ``host:port``; a bare host allows ports 80 and 443 only, so listing
  ``localhost`` never opens Flower, Redis or the API itself.
- A URL is normalised once, as it goes on the wire (:func:`normalise_url`): the host
  IDNA-encoded, the path and query percent-encoded as httpx does. What cannot be
  normalised is refused, never half-sent.
- A URL naming an address literally (``http://127.0.0.1:9000/``) goes only where that
  literal is listed with that port: listing an address is the operator's explicit
  choice, and opens that address and port to URLs naming it, nothing else.
- A URL naming a host is resolved at delivery, and refused when any of its addresses is
  not public (:func:`is_public`): loopback, private, link-local, shared, site-local,
  multicast, reserved, or an IPv6 address carrying an inward IPv4 one (mapped,
  translated, compatible, NAT64, 6to4, Teredo). A listed literal address never makes a
  *name* that resolves to it acceptable.
- The connection goes to an address that was checked: the network backend below ignores
  the name httpcore asks for and connects to the pinned addresses, so a name that
  resolves again to something else (DNS rebinding) never gets a second lookup.
- One deadline for the whole delivery (resolution, connect, TLS, send, every read), a cap
  on the response body read, and no redirects (httpcore never follows them).
"""

from __future__ import annotations

import ipaddress
import re
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
import httpx
import idna

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
    """The callback URL is not allowed, or its host resolves to an address that is not."""


NOT_LISTED = "is not in the tenant's callback hosts (callback_hosts, default CALLBACK_ALLOWED_HOSTS)"


class BadURL(ValueError):
    """A callback URL that cannot be sent as written; the message names the problem."""


# -- URLs as they go on the wire ---------------------------------------------------------------

_NETLOC = re.compile(r"\[[0-9A-Fa-f:.]+\](?::[0-9]*)?|[^\[\]:]*(?::[0-9]*)?")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def ascii_host(host: str) -> str:
    """``host`` as it is sent (Host header, TLS name, lookup): lower case, IDNA-encoded
    when not ASCII (IDNA 2008, as httpx encodes it), an IP literal unchanged.

    :raise BadURL: an empty host, a bad IDNA or punycode label, or a character no host
        name holds.
    """
    host = host.lower()
    if not host:
        raise BadURL("it has no host")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = idna.encode(host).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise BadURL(f"host {host[:100]!r} is not a valid internationalised name ({exc})") from None
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise BadURL(f"host {host[:100]!r} is not a valid host name")
    for label in name.split("."):
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise BadURL(f"host {host[:100]!r} has a label that is not valid punycode") from None
    return host


def normalise_url(url: str) -> str:
    """``url`` exactly as the delivery sends it: scheme and host lower case, the host
    IDNA-encoded, the path and query percent-encoded by httpx's rules (UTF-8, existing
    ``%xx`` kept), the default port dropped. ``http://127.0.0.1:4500/é`` becomes
    ``http://127.0.0.1:4500/%C3%A9``. Only http and https, no credentials, no fragment.

    :raise BadURL: the URL cannot be sent as it is (the message says why).
    """
    if any(ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in url):
        raise BadURL("it contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadURL("it is not a valid URL") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise BadURL("only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise BadURL("it must not carry credentials")
    if not _NETLOC.fullmatch(parts.netloc):  # urlsplit lets "[::1]x" or "a]b" through
        raise BadURL("it is not a valid URL")
    if "#" in url:
        raise BadURL("it must not have a fragment")
    host = ascii_host(parts.hostname or "")
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{shown}:{port}" if port is not None else shown
    query = f"?{parts.query}" if parts.query or url.endswith("?") else ""
    try:
        sent = str(httpx.URL(f"{parts.scheme}://{netloc}{parts.path}{query}"))
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise BadURL(f"it cannot be sent as written ({exc})") from None
    again = urlsplit(sent)
    if (
        not sent.isascii()
        or again.hostname != host
        or (again.port or DEFAULT_PORTS[parts.scheme]) != (port or DEFAULT_PORTS[parts.scheme])
    ):  # a parser disagreement: never send what was not checked
        raise BadURL("it is not a valid URL")
    return sent


# -- which addresses are public ------------------------------------------------------------------

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # IPv4-mapped ::ffff:a.b.c.d
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated ::ffff:0:a.b.c.d (RFC 2765)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # IPv4-compatible ::a.b.c.d (deprecated, RFC 4291)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215), IPv4 last
_LAST_32_BITS = (_MAPPED, _TRANSLATED, _COMPATIBLE, _NAT64, _NAT64_LOCAL)
_6TO4 = ipaddress.IPv6Network("2002::/16")  # 6to4 (RFC 3056): the IPv4 in bits 16-48
_TEREDO = ipaddress.IPv6Network("2001::/32")  # Teredo (RFC 4380): server bits 32-64, client last ^ 1s
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")  # deprecated (RFC 3879); Python calls it global


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses an IPv6 address leads to (None: it carries none).

    Mapped, translated, compatible and NAT64 (both prefixes): the last 32 bits. 6to4: bits
    16-48. Teredo: the server (bits 32-64) and the client (the last 32 bits, inverted).
    """
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    value = int(address)
    if any(address in network for network in _LAST_32_BITS):
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if address in _6TO4:
        return (ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF),)
    if address in _TEREDO:
        server = ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF)
        return (server, ipaddress.IPv4Address(~value & 0xFFFFFFFF))
    return None


def is_public(address: IPAddress) -> bool:
    """Whether a delivery may connect to ``address`` reached through a host *name*: a
    global unicast address; an IPv6 one carrying IPv4 is judged by every IPv4 it carries."""
    carried = embedded_ipv4(address)
    if carried is not None:
        return all(is_public(inner) for inner in carried)
    if address in _SITE_LOCAL:
        return False
    return address.is_global and not address.is_multicast


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class HostRule:
    host: str
    port: int | None  # None: ports 80 and 443


def _rule(entry: str) -> HostRule:
    host, port = split_host_port(entry)
    try:
        host = ascii_host(host)  # a listed bücher.example matches the URL's xn--bcher-kva.example
    except BadURL:
        pass  # an entry no URL can name matches nothing
    return HostRule(host, port)


class CallbackPolicy:
    """A tenant's callback hosts, parsed once: which URLs may be called, and at which addresses."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.rules = tuple(_rule(entry) for entry in entries)

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host`` (as sent: lower case, ASCII) on ``port`` is listed. A listed
        address literal allows only URLs naming that literal, on its listed port (a bare
        one: 80 and 443)."""
        return any(
            rule.host == host and (port == rule.port if rule.port is not None else port in BARE_HOST_PORTS)
            for rule in self.rules
        )

    def resolve(self, host: str, port: int, timeout: float) -> list[IPAddress]:
        """The addresses to connect to for an allowed ``host``, every one checked: a listed
        literal as it is, a name's addresses only when each is public.

        :raise Refused: an address is not public (then none is used).
        :raise OSError: the name does not resolve, or not within ``timeout``.
        """
        literal = _literal(host)
        if literal is not None:
            return [literal]  # listed literally (allows() passed), with this port
        future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=max(timeout, 0.001))
        except FutureTimeout:
            raise OSError(f"resolving {host} took longer than the delivery deadline") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            raise OSError(f"{host} has no address")
        for address in addresses:
            if not is_public(address):
                carried = embedded_ipv4(address)
                shown = f"{address} ({', '.join(map(str, carried))})" if carried else str(address)
                raise Refused(f"{host} resolves to {shown}, which is not a public address")
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
    """POST ``body`` to ``url`` (normalised first, :func:`normalise_url`) once, under every rule above.

    :raise Refused: the URL cannot be sent as written, or it or an address of its host is
        not allowed.
    :raise TRANSPORT_ERRORS: resolution, connection, TLS or HTTP failed, or the deadline passed.
    """
    try:
        url = normalise_url(url)
    except BadURL as exc:
        raise Refused(f"the URL {url[:200]!r} cannot be sent: {exc}") from None
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    if not policy.allows(host, port):
        raise Refused(f"{parts.scheme}://{host}:{port} {NOT_LISTED}")
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
