"""Tenants: whoever owns jobs, each with its keys, limits, share of the workers and webhooks.

Three sources, the first that is set wins:

- ``TENANTS_FILE``, TOML or YAML (by its extension; ``.toml`` is TOML, ``.yaml``/``.yml``
  YAML): ``[tenants.<name>]`` tables with the fields of :data:`FIELDS`;
- ``API_KEYS`` (``name:key,...``): a tenant per name, everything else the defaults;
- neither: open mode, one tenant named ``""`` that every caller is.

A tenant's unset fields take the service's settings (RATE_LIMIT_MAX_REQUESTS,
MAX_ACTIVE_JOBS_PER_KEY, SSE_MAX_STREAMS, CALLBACK_ALLOWED_HOSTS, CALLBACK_SECRET; weight 1,
no cap on running jobs). A bad file, an unknown field, a bad value, or a key or name given
twice raises :class:`ConfigError` naming the tenant and the field: an entry point stops with
that line, a reload keeps what it had (:class:`TenantsHolder`).

Imports no web framework or Redis: the API, the worker and the sweeper each hold one.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delineate.config.parse import ConfigError, _callback_hosts, _callback_secret
from delineate.config.settings import Settings

logger = logging.getLogger(__name__)

OPEN_TENANT = ""
"""The one tenant of open mode (no API_KEYS, no TENANTS_FILE)."""

RELOAD_CHECK_SECONDS = 5.0
"""How often a process looks at the file's modification time, in seconds: a change is in
force in every process within about this (the contract: within 10 s)."""

MAX_WEIGHT = 1000.0


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _weight(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_WEIGHT:
        raise ValueError(f"must be a number above 0 and at most {MAX_WEIGHT:g}")
    return float(value)


def _keys(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(k, str) and k.strip() for k in value):
        raise ValueError("must be a list of one or more non-empty strings")
    keys = tuple(k.strip() for k in value)
    if len(set(keys)) != len(keys):
        raise ValueError("lists a key twice")
    return keys


def _hosts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise ValueError("must be a list of host or host:port strings")
    try:
        return _callback_hosts("callback_hosts", ",".join(value))
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("callback_hosts ")) from None


def _secret(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    try:
        return _callback_secret("webhook_secret", value)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("webhook_secret ")) from None


FIELDS: dict[str, Callable[[Any], Any]] = {
    "keys": _keys,
    "rate_limit": _positive_int,
    "max_active_jobs": _positive_int,
    "max_running": _positive_int,
    "max_streams": _positive_int,
    "weight": _weight,
    "callback_hosts": _hosts,
    "webhook_secret": _secret,
}
"""A tenant's fields, each with the check of its value."""


@dataclass(frozen=True, slots=True)
class Tenant:
    """One tenant, its settings complete (defaults filled in)."""

    name: str
    keys: tuple[str, ...]
    rate_limit: int
    max_active_jobs: int
    max_running: int | None
    max_streams: int
    weight: float
    callback_hosts: tuple[str, ...]
    webhook_secret: str

    def __repr__(self) -> str:  # keys and secrets never in a log line
        return f"Tenant({self.name!r}, {len(self.keys)} keys, weight {self.weight:g})"


@dataclass(frozen=True)
class Tenants:
    """Every tenant of the service, as one immutable value (a reload swaps it whole)."""

    tenants: Mapping[str, Tenant]
    source: str  # "open", "API_KEYS" or the file's path
    keyed: bool
    _by_key: Mapping[str, str] = field(repr=False)

    def owner_for(self, presented: str | None) -> str | None:
        """The tenant owning ``presented``, or None; constant time in the key's content
        (every key is compared, whatever matches)."""
        if not presented:
            return None
        found: str | None = None
        candidate = presented.encode()
        for key, name in self._by_key.items():
            if hmac.compare_digest(candidate, key.encode()):
                found = name
        return found

    def tenant(self, owner: str | None) -> Tenant:
        """``owner``'s settings; an owner that is gone (a job of a removed tenant) gets the
        open tenant's defaults."""
        found = self.tenants.get(owner or OPEN_TENANT)
        return found if found is not None else self._default

    @property
    def _default(self) -> Tenant:
        return self.tenants.get(OPEN_TENANT) or next(iter(self.tenants.values()))

    def secret_values(self) -> frozenset[str]:
        """Every key and webhook secret, to be kept out of logs and error reports."""
        values: set[str] = set()
        for tenant in self.tenants.values():
            values.update(tenant.keys)
            values.add(tenant.webhook_secret)
        return frozenset(v for v in values if len(v) >= 6)


def _defaults(settings: Settings) -> dict[str, Any]:
    return {
        "rate_limit": settings.rate_limit_max_requests,
        "max_active_jobs": settings.max_active_jobs_per_key,
        "max_running": None,
        "max_streams": settings.sse_max_streams,
        "weight": 1.0,
        "callback_hosts": settings.callback_allowed_hosts,
        "webhook_secret": settings.callback_secret,
    }


def _build(entries: Mapping[str, Mapping[str, Any]], settings: Settings, source: str) -> Tenants:
    tenants: dict[str, Tenant] = {}
    by_key: dict[str, str] = {}
    for name, entry in entries.items():
        values = _defaults(settings)
        for key, raw in entry.items():
            check = FIELDS.get(key)
            if check is None:
                known = ", ".join(FIELDS)
                raise ConfigError(f"{source}: tenant {name!r}: unknown field {key!r} (known: {known})")
            try:
                values[key] = check(raw)
            except ValueError as exc:
                raise ConfigError(f"{source}: tenant {name!r}: field {key!r} {exc}") from None
        if "keys" not in values:
            raise ConfigError(f"{source}: tenant {name!r}: field 'keys' is missing (a tenant needs a key)")
        for key in values["keys"]:
            if key in by_key:
                raise ConfigError(f"{source}: tenant {name!r}: field 'keys' repeats a key of tenant {by_key[key]!r}")
            by_key[key] = name
        tenants[name] = Tenant(name=name, **values)
    if not tenants:
        raise ConfigError(f"{source}: no tenant (add a [tenants.<name>] table)")
    return Tenants(tenants, source, True, by_key)


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"TENANTS_FILE {path}: cannot be read ({exc.strerror})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - any parse error is one line naming the file
        raise ConfigError(f"TENANTS_FILE {path}: not valid {path.suffix or 'TOML'}: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"tenants"} or not isinstance(data.get("tenants"), dict):
        raise ConfigError(f"TENANTS_FILE {path}: must hold one table, tenants, of [tenants.<name>] tables")
    for name, entry in data["tenants"].items():
        if not isinstance(name, str) or not name.strip() or name != name.strip() or ":" in name:
            raise ConfigError(f"TENANTS_FILE {path}: {name!r} is not a tenant name (no spaces around it, no ':')")
        if not isinstance(entry, dict):
            raise ConfigError(f"TENANTS_FILE {path}: tenant {name!r} must be a table of fields")
    return data["tenants"]  # type: ignore[no-any-return]


def load_tenants(settings: Settings) -> Tenants:
    """The tenants of ``settings``: its TENANTS_FILE, else its API_KEYS, else open mode.

    :raise ConfigError: the file cannot be read or parsed, or a tenant is malformed.
    """
    if settings.tenants_file:
        path = Path(settings.tenants_file)
        return _build(_read_file(path), settings, f"TENANTS_FILE {path}")
    if settings.api_keys:
        entries: dict[str, dict[str, Any]] = {}
        for key, name in settings.api_keys.items():
            entries.setdefault(name, {"keys": []})["keys"].append(key)
        return _build(entries, settings, "API_KEYS")
    open_tenant = Tenant(name=OPEN_TENANT, keys=(), **_defaults(settings))
    return Tenants({OPEN_TENANT: open_tenant}, "open", False, {})


class TenantsHolder:
    """A process's current tenants. Reading :attr:`current` is a field read; at most every
    RELOAD_CHECK_SECONDS it also looks at the file, and a changed file is loaded and swapped
    in whole (a request sees the old tenants or the new, never half). A file that no longer
    loads is logged and the old tenants kept. ``on_change`` is called with each new value
    (the API and the worker write the fair share's weights and caps to Redis with it)."""

    def __init__(self, settings: Settings, tenants: Tenants | None = None) -> None:
        self.settings = settings
        self._tenants = tenants if tenants is not None else load_tenants(settings)
        self._path = Path(settings.tenants_file) if settings.tenants_file else None
        self._stamp = self._file_stamp()
        self._next_check = time.monotonic() + RELOAD_CHECK_SECONDS
        self._lock = threading.Lock()
        self.on_change: list[Callable[[Tenants], None]] = []

    @property
    def current(self) -> Tenants:
        if self._path is not None and time.monotonic() >= self._next_check:
            self.check()
        return self._tenants

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def check(self, force: bool = False) -> bool:
        """Load the file again if it changed (or ``force``); True when the tenants changed."""
        with self._lock:
            self._next_check = time.monotonic() + RELOAD_CHECK_SECONDS
            stamp = self._file_stamp()
            if not force and stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                tenants = load_tenants(self.settings)
            except ConfigError as exc:
                logger.error("tenants: kept the tenants in force; the file does not load: %s", exc)
                return False
            self._tenants = tenants
        logger.info("tenants: loaded %d tenants from %s", len(tenants.tenants), tenants.source)
        for hook in self.on_change:
            try:
                hook(tenants)
            except Exception:
                logger.exception("tenants: a reload hook failed")
        return True
