"""Settings: one object, built in one place, from three layers.

1. safe defaults (the table below),
2. the environment (and a ``.env`` file in the working directory, which never
   overrides a variable already set),
3. overrides passed by the caller (tests, ``create_app(test_config=...)``).

Nothing else in the project reads ``os.environ``. A bad value raises
:class:`ConfigError` with one line naming the variable; entry points print that
line and exit instead of showing a traceback.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values


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
        if not sep or not owner.strip() or not key.strip():
            raise ConfigError(f"{name} entries must look like name:key, got {item!r}")
        keys[key.strip()] = owner.strip()
    return keys


REDACTED = "[redacted]"

SECRET_FIELDS = frozenset(
    {
        "s3_secret_access_key",
        "callback_secret",
        "api_keys",
        "flower_basic_auth",
        "sentry_dsn",
        "redis_sentinel_password",
    }
)
"""Fields whose values never appear in a repr, a log line or an error report."""

URL_FIELDS = ("redis_url", "celery_broker_url", "celery_result_backend")
"""URLs that may carry a password (``redis://:password@host``): shown without it."""

MIN_SCRUBBED_LENGTH = 6
"""Secret values shorter than this are not searched for in free text (they would match
ordinary words); every secret field is still redacted in the repr."""


def url_without_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``[redacted]``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{REDACTED}@{host}").geturl()


@dataclass(frozen=True, repr=False)
class Settings:
    """Every knob of the service. Units are in the names.

    The repr (and str) shows every secret as ``[redacted]``: settings end up in
    tracebacks, debug logs and error reports (:data:`SECRET_FIELDS`, :data:`URL_FIELDS`).
    """

    port: int = 3000
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str = ""
    celery_result_backend: str = ""
    # Sentinel (empty: none). With it, REDIS_URL gives only the database and the password.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "delineate"
    redis_sentinel_password: str = ""
    # With Sentinel: how long initiate waits for a replica to acknowledge the new job (WAIT).
    redis_replica_ack_timeout_ms: int = 500
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_public_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = "delineate"
    s3_secret_access_key: str = "delineate-secret"  # noqa: S105 - the documented dev default
    s3_bucket_name: str = "downloads"
    s3_force_path_style: bool = True
    download_delay_enabled: bool = True
    download_delay_min_ms: int = 10_000
    download_delay_max_ms: int = 120_000
    job_ttl_seconds: int = 86_400
    presigned_url_expiry_seconds: int = 900
    worker_concurrency: int = 100
    request_timeout_ms: int = 30_000
    rate_limit_window_ms: int = 60_000
    rate_limit_max_requests: int = 100
    max_active_jobs_per_key: int = 20
    cors_origins: tuple[str, ...] = ("*",)
    api_keys: Mapping[str, str] = field(default_factory=dict)
    trusted_proxy_hops: int = 0
    callback_allowed_hosts: tuple[str, ...] = ()
    callback_secret: str = ""
    sse_heartbeat_seconds: int = 15
    sse_max_streams: int = 5000
    max_body_bytes: int = 65_536
    sentry_dsn: str = ""
    otel_exporter_otlp_endpoint: str = ""
    otel_traces_sampler: str = ""  # the SDK's names; empty: parentbased_always_on (every trace)
    otel_traces_sampler_arg: float = 1.0
    flower_port: int = 5555
    flower_basic_auth: str = ""
    # Crash safety (see ARCHITECTURE.md, "Crash safety").
    visibility_timeout_seconds: int = 180
    unacked_restore_interval_seconds: int = 5
    job_lease_seconds: int = 30
    max_redeliveries: int = 3
    max_retries: int = 5
    retry_backoff_base_seconds: float = 2.0
    # The sweeper (celery_app/sweeper.py) and what it drives.
    sweep_interval_seconds: int = 15
    job_deadline_seconds: int = 21_600
    webhook_retry_base_seconds: float = 15.0
    webhook_retry_max_delay_seconds: float = 600.0
    webhook_retry_window_seconds: int = 10_800
    multipart_abort_after_seconds: int = 3600
    # Bounded worker memory: bundles built at once per worker process (0: from the limit).
    bundle_concurrency: int = 0
    worker_memory_limit_bytes: int = 0

    def __post_init__(self) -> None:
        if self.download_delay_min_ms > self.download_delay_max_ms:
            raise ConfigError(
                "DOWNLOAD_DELAY_MIN_MS must not exceed DOWNLOAD_DELAY_MAX_MS "
                f"({self.download_delay_min_ms} > {self.download_delay_max_ms})"
            )
        if self.redis_sentinels:
            for name, url in (("REDIS_URL", self.redis_url), ("CELERY_BROKER_URL", self.celery_broker_url)):
                if url.startswith("rediss:"):
                    # Sentinel's clients here would reach the data nodes in plain text: refuse
                    # rather than drop the TLS that the URL asks for.
                    raise ConfigError(f"{name}: TLS (rediss://) is not supported together with REDIS_SENTINELS")
        # Derived defaults: the broker and result backend follow REDIS_URL.
        if not self.celery_broker_url:
            object.__setattr__(self, "celery_broker_url", self.redis_url)
        if not self.celery_result_backend:
            object.__setattr__(self, "celery_result_backend", self.redis_url)
        if not self.s3_public_endpoint:
            object.__setattr__(self, "s3_public_endpoint", self.s3_endpoint)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "api_keys":
                text = "{" + ", ".join(f"{REDACTED!r}: {name!r}" for name in value.values()) + "}"
            elif f.name in SECRET_FIELDS:
                text = repr(REDACTED if value else value)
            elif f.name in URL_FIELDS:
                text = repr(url_without_password(value))
            else:
                text = repr(value)
            shown.append(f"{f.name}={text}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    def secret_values(self) -> frozenset[str]:
        """Every configured secret as text, to be searched for and removed from free text
        (log lines, error events): keys, passwords, the Sentry DSN and its key."""
        values: set[str] = {self.s3_secret_access_key, self.callback_secret, self.sentry_dsn, *self.api_keys}
        values.add(self.redis_sentinel_password)
        values.add(self.flower_basic_auth)
        values.add(self.flower_basic_auth.partition(":")[2])
        for url in (self.sentry_dsn, *(getattr(self, name) for name in URL_FIELDS)):
            try:
                parts = urlsplit(url)
            except ValueError:
                continue
            values.update(v for v in (parts.password, parts.username if url == self.sentry_dsn else None) if v)
        return frozenset(v for v in values if len(v) >= MIN_SCRUBBED_LENGTH)


_REDIS = ("redis", "rediss", "unix")
_HTTP = ("http", "https")

#: Environment variable → (field, parser). One readable column, like Warehouse's ``maybe_set``.
ENVIRONMENT: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "PORT": ("port", lambda n, v: _int(n, v, 1, 65535)),
    "REDIS_URL": ("redis_url", lambda n, v: _url(n, v, _REDIS)),
    "CELERY_BROKER_URL": ("celery_broker_url", lambda n, v: _url(n, v, _REDIS)),
    "CELERY_RESULT_BACKEND": ("celery_result_backend", lambda n, v: _url(n, v, _REDIS)),
    "REDIS_SENTINELS": ("redis_sentinels", _sentinels),
    "REDIS_SENTINEL_MASTER": ("redis_sentinel_master", _sentinel_master),
    "REDIS_SENTINEL_PASSWORD": ("redis_sentinel_password", lambda n, v: v.strip()),
    "REDIS_REPLICA_ACK_TIMEOUT_MS": ("redis_replica_ack_timeout_ms", lambda n, v: _int(n, v, 1, 10_000)),
    "S3_ENDPOINT": ("s3_endpoint", lambda n, v: _url(n, v, _HTTP)),
    "S3_PUBLIC_ENDPOINT": ("s3_public_endpoint", lambda n, v: _url(n, v, _HTTP)),
    "S3_REGION": ("s3_region", lambda n, v: v.strip()),
    "S3_ACCESS_KEY_ID": ("s3_access_key_id", lambda n, v: v.strip()),
    "S3_SECRET_ACCESS_KEY": ("s3_secret_access_key", lambda n, v: v.strip()),
    "S3_BUCKET_NAME": ("s3_bucket_name", lambda n, v: v.strip()),
    "S3_FORCE_PATH_STYLE": ("s3_force_path_style", _bool),
    "DOWNLOAD_DELAY_ENABLED": ("download_delay_enabled", _bool),
    "DOWNLOAD_DELAY_MIN_MS": ("download_delay_min_ms", _int),
    "DOWNLOAD_DELAY_MAX_MS": ("download_delay_max_ms", _int),
    "JOB_TTL_SECONDS": ("job_ttl_seconds", lambda n, v: _int(n, v, 1)),
    "PRESIGNED_URL_EXPIRY_SECONDS": (
        "presigned_url_expiry_seconds",
        lambda n, v: _int(n, v, 1, 604_800),
    ),
    "WORKER_CONCURRENCY": ("worker_concurrency", lambda n, v: _int(n, v, 1, 2000)),
    "REQUEST_TIMEOUT_MS": ("request_timeout_ms", lambda n, v: _int(n, v, 1)),
    "RATE_LIMIT_WINDOW_MS": ("rate_limit_window_ms", lambda n, v: _int(n, v, 1)),
    "RATE_LIMIT_MAX_REQUESTS": ("rate_limit_max_requests", lambda n, v: _int(n, v, 1)),
    "MAX_ACTIVE_JOBS_PER_KEY": ("max_active_jobs_per_key", lambda n, v: _int(n, v, 1)),
    "CORS_ORIGINS": ("cors_origins", lambda n, v: _csv(v)),
    "API_KEYS": ("api_keys", _api_keys),
    "TRUSTED_PROXY_HOPS": ("trusted_proxy_hops", lambda n, v: _int(n, v, 0, 10)),
    "CALLBACK_ALLOWED_HOSTS": ("callback_allowed_hosts", _callback_hosts),
    "CALLBACK_SECRET": ("callback_secret", _callback_secret),
    "SSE_HEARTBEAT_SECONDS": ("sse_heartbeat_seconds", lambda n, v: _int(n, v, 1, 3600)),
    "SSE_MAX_STREAMS": ("sse_max_streams", lambda n, v: _int(n, v, 1, 1_000_000)),
    "MAX_BODY_BYTES": ("max_body_bytes", lambda n, v: _int(n, v, 64)),
    "SENTRY_DSN": ("sentry_dsn", lambda n, v: v.strip()),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("otel_exporter_otlp_endpoint", lambda n, v: v.strip()),
    "OTEL_TRACES_SAMPLER": ("otel_traces_sampler", _sampler),
    "OTEL_TRACES_SAMPLER_ARG": ("otel_traces_sampler_arg", _ratio),
    "FLOWER_PORT": ("flower_port", lambda n, v: _int(n, v, 1, 65535)),
    "FLOWER_BASIC_AUTH": ("flower_basic_auth", _basic_auth),
    "CELERY_VISIBILITY_TIMEOUT_SECONDS": (
        "visibility_timeout_seconds",
        lambda n, v: _int(n, v, 1),
    ),
    "CELERY_UNACKED_RESTORE_INTERVAL_SECONDS": (
        "unacked_restore_interval_seconds",
        lambda n, v: _int(n, v, 1),
    ),
    "JOB_LEASE_SECONDS": ("job_lease_seconds", lambda n, v: _int(n, v, 2)),
    "MAX_REDELIVERIES": ("max_redeliveries", lambda n, v: _int(n, v, 0, 100)),
    "MAX_RETRIES": ("max_retries", lambda n, v: _int(n, v, 0, 20)),
    "SWEEP_INTERVAL_SECONDS": ("sweep_interval_seconds", lambda n, v: _int(n, v, 1, 3600)),
    "JOB_DEADLINE_SECONDS": ("job_deadline_seconds", lambda n, v: _int(n, v, 1)),
    "WEBHOOK_RETRY_BASE_SECONDS": ("webhook_retry_base_seconds", lambda n, v: _seconds(n, v, 0.1)),
    "WEBHOOK_RETRY_MAX_DELAY_SECONDS": ("webhook_retry_max_delay_seconds", lambda n, v: _seconds(n, v, 0.1)),
    "WEBHOOK_RETRY_WINDOW_SECONDS": ("webhook_retry_window_seconds", lambda n, v: _int(n, v, 0)),
    "MULTIPART_ABORT_AFTER_SECONDS": ("multipart_abort_after_seconds", lambda n, v: _int(n, v, 1)),
    "BUNDLE_CONCURRENCY": ("bundle_concurrency", lambda n, v: _int(n, v, 0, 1000)),
    "WORKER_MEMORY_LIMIT_BYTES": ("worker_memory_limit_bytes", _int),
}


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    dotenv_path: str | None = ".env",
) -> Settings:
    """Build the settings: defaults, then ``.env`` and the environment, then overrides.

    ``overrides`` may use field names (``redis_url``) or variable names (``REDIS_URL``);
    values given as strings are parsed like the environment's.

    :raise ConfigError: a value is malformed or out of range.
    """
    source: dict[str, str] = {}
    if dotenv_path and os.path.isfile(dotenv_path):
        source.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    source.update(os.environ if environ is None else environ)

    values: dict[str, Any] = {}
    for name, (attr, parse) in ENVIRONMENT.items():
        if name in source:
            values[attr] = parse(name, source[name])

    by_attr = {attr: (name, parse) for name, (attr, parse) in ENVIRONMENT.items()}
    fields = {f.name for f in dataclasses.fields(Settings)}
    for key, value in (overrides or {}).items():
        if key in ENVIRONMENT:
            name, (attr, parse) = key, ENVIRONMENT[key]
        elif key.lower() in fields:
            attr = key.lower()
            name, parse = by_attr.get(attr, (key.upper(), None))  # type: ignore[assignment]
        else:
            raise ConfigError(f"unknown setting {key!r}")
        values[attr] = parse(name, value) if isinstance(value, str) and parse is not None else value
    return Settings(**values)


DEFAULT_CLIENT_URL = "http://localhost:3000"


def client_defaults(environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The CLI client's server URL and API key: DELINEATE_URL and DELINEATE_API_KEY."""
    source = os.environ if environ is None else environ
    return source.get("DELINEATE_URL") or DEFAULT_CLIENT_URL, source.get("DELINEATE_API_KEY") or None
