"""Parsers of the environment's text: one per kind of value, each raising
:class:`ConfigError` with one line naming the variable.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


def _int(name: str, raw: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name} must be at least {minimum}{upper}, got {value}")
    return value


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    value = raw.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name} is not a valid URL: {raw!r}") from None
    if parts.scheme not in schemes or not parts.hostname:
        expected = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name} must be a {expected} URL with a host, got {raw!r}")
    return value


def _optional_url(name: str, raw: str) -> str:
    """An http(s) URL, or empty (the feature it enables is off)."""
    return _url(name, raw, ("http", "https")) if raw.strip() else ""


def _trace_url(name: str, raw: str) -> str:
    """A link template for a trace: an http(s) URL holding ``{traceId}``, or empty."""
    value = _optional_url(name, raw)
    if value and "{traceId}" not in value:
        raise ConfigError(f"{name} must hold {{traceId}} where the trace id goes, got {raw!r}")
    return value


def _seconds(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not minimum <= value < float("inf"):
        raise ConfigError(f"{name} must be at least {minimum:g} seconds, got {raw!r}")
    return value


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _origins(name: str, raw: str) -> tuple[str, ...]:
    """CORS_ORIGINS: ``*`` or origins, each echoed in a response header as it is: printable
    ASCII without blanks (no control character can reach a header)."""
    origins = _csv(raw)
    for origin in origins:
        if not all("!" <= c <= "~" for c in origin):
            raise ConfigError(f"{name}: {origin!r} is not an origin (printable ASCII, no spaces)")
    return origins


def split_host_port(entry: str) -> tuple[str, int | None]:
    """A CALLBACK_ALLOWED_HOSTS entry, lower-cased: ``host``, ``host:port``, ``[v6]`` or
    ``[v6]:port`` (a bare IPv6 address has no port).

    :raise ValueError: the port is not a number from 1 to 65535, or the host is empty.
    """
    entry = entry.strip().lower()
    port_text: str | None
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise ValueError(f"bad entry {entry!r}")
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
    else:
        host, port_text = entry, None
    if not host or any(ch in host for ch in "/@?# "):
        raise ValueError(f"no host in {entry!r}")
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {entry!r}")
    return host, int(port_text)


def _callback_hosts(name: str, raw: str) -> tuple[str, ...]:
    """``host`` (ports 80 and 443) or ``host:port`` entries, comma-separated."""
    entries = _csv(raw.lower())
    for entry in entries:
        try:
            split_host_port(entry)
        except ValueError:
            raise ConfigError(f"{name} entries must look like host or host:port, got {entry!r}") from None
    return entries


def _sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (``[v6]:port`` too): every entry needs its port."""
    nodes: list[tuple[str, int]] = []
    for entry in _csv(raw):
        try:
            host, port = split_host_port(entry)
        except ValueError:
            port = None
        if port is None:
            raise ConfigError(f"{name} entries must look like host:port, got {entry!r}")
        nodes.append((host, port))
    if raw.strip() and not nodes:
        raise ConfigError(f"{name} must list host:port entries, got {raw!r}")
    return tuple(nodes)


def _sentinel_master(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(ch.isspace() for ch in value):
        raise ConfigError(f"{name} must be a name without spaces, got {raw!r}")
    return value


def _callback_secret(name: str, raw: str) -> str:
    """Any text; one starting with ``whsec_`` must be base64 after it (Standard Webhooks)."""
    if raw.startswith("whsec_"):
        try:
            key = base64.b64decode(raw[len("whsec_") :] + "==", validate=False)
        except (ValueError, binascii.Error):
            key = b""
        if not key:
            raise ConfigError(f"{name} starting with whsec_ must be followed by a base64 key")
    return raw


def _bind_address(name: str, raw: str) -> str:
    """The address the API listens on: an IPv4 or IPv6 address (``0.0.0.0`` for every interface)."""
    value = raw.strip().strip("[]")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name} must be an IP address (127.0.0.1, 0.0.0.0, ::), got {raw!r}") from None
    return value


def _basic_auth(name: str, raw: str) -> str:
    """``user:password`` (or empty: no authentication)."""
    value = raw.strip()
    user, sep, password = value.partition(":")
    if value and (not sep or not user or not password):
        raise ConfigError(f"{name} must look like user:password")
    return value


_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def _sampler(name: str, raw: str) -> str:
    """One of OpenTelemetry's built-in sampler names (or empty: the SDK's default)."""
    value = raw.strip().lower()
    if value and value not in _SAMPLERS:
        raise ConfigError(f"{name} must be one of {', '.join(_SAMPLERS)}, got {raw!r}")
    return value


def _ratio(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number from 0 to 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number from 0 to 1, got {raw!r}")
    return value


def _api_keys(name: str, raw: str) -> dict[str, str]:
    """``name:key,name:key`` → {key: name}."""
    keys: dict[str, str] = {}
    for item in _csv(raw):
        owner, sep, key = item.partition(":")
        owner, key = owner.strip(), key.strip()
        if not sep or not owner or not key:
            raise ConfigError(f"{name} entries must look like name:key, got {item!r}")
        # Either twice would silently change who owns what: a key with two names, or a
        # name with two keys (several keys per tenant: TENANTS_FILE).
        if key in keys:
            raise ConfigError(f"{name} gives one key to two names ({keys[key]!r} and {owner!r})")
        if owner in keys.values():
            raise ConfigError(f"{name} names {owner!r} twice (for several keys per tenant, use TENANTS_FILE)")
        keys[key] = owner
    return keys
