"""The :class:`Settings` object, and how its secrets are kept out of reprs and free text."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from delineate.config.parse import ConfigError

REDACTED = "[redacted]"

SECRET_FIELDS = frozenset(
    {
        "s3_secret_access_key",
        "callback_secret",
        "api_keys",
        "flower_basic_auth",
        "sentry_dsn",
        "dashboard_sentry_dsn",  # public by design (it is sent to browsers), but often SENTRY_DSN itself
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
    # Where the API listens: the loopback by default (`make run`); the image sets 0.0.0.0.
    bind: str = "127.0.0.1"
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
    # Tenants with their own keys, limits and webhooks (delineate/config/tenants.py); wins over API_KEYS.
    tenants_file: str = ""
    trusted_proxy_hops: int = 0
    callback_allowed_hosts: tuple[str, ...] = ()
    callback_secret: str = ""
    sse_heartbeat_seconds: int = 15
    sse_max_streams: int = 5000
    max_body_bytes: int = 65_536
    # Large exports (design.md): ids per initiate or estimate, and those two routes' body limit.
    max_file_ids: int = 10_000
    max_initiate_body_bytes: int = 262_144
    sentry_dsn: str = ""
    # `?sentry_test=true` on POST /v1/download/check answers a deliberate 500 (make run, compose's dev profile).
    sentry_test_route: bool = False
    otel_exporter_otlp_endpoint: str = ""
    otel_traces_sampler: str = ""  # the SDK's names; empty: parentbased_always_on (every trace)
    otel_traces_sampler_arg: float = 1.0
    # The operator console's browser SDKs (None: the server's own settings; "": off).
    dashboard_sentry_dsn: str | None = None
    dashboard_otlp_endpoint: str | None = None
    dashboard_trace_url: str = ""  # e.g. http://localhost:16686/trace/{traceId}
    # Our own hot paths around the libraries (the fast lane in front of Flask, the Redis lanes,
    # the direct S3 requests, kombu's shared client); False: the libraries alone.
    fast_paths: bool = True
    flower_port: int = 5555
    flower_basic_auth: str = ""
    # Crash safety (see ARCHITECTURE.md, "Crash safety").
    visibility_timeout_seconds: int = 180
    unacked_restore_interval_seconds: int = 5
    job_lease_seconds: int = 30
    max_redeliveries: int = 3
    max_retries: int = 5
    retry_backoff_base_seconds: float = 2.0
    # The sweeper (delineate/jobs/sweeper.py) and what it drives.
    sweep_interval_seconds: int = 15
    job_deadline_seconds: int = 21_600
    webhook_retry_base_seconds: float = 15.0
    webhook_retry_max_delay_seconds: float = 600.0
    webhook_retry_window_seconds: int = 10_800
    multipart_abort_after_seconds: int = 3600
    # Bounded worker memory: bundles built at once per worker process (0: from the limit).
    bundle_concurrency: int = 0
    # A job whose id set and source ETags equal a live bundle's completes with it (jobs/reuse.py).
    bundle_reuse: bool = True
    worker_memory_limit_bytes: int = 0
    # Liveness (delineate/broker/liveness.py): the file a worker's consumer loop touches ("":
    # none), and how stale it may get before the worker counts as hung and is replaced.
    worker_heartbeat_file: str = "/tmp/delineate-worker.alive"  # noqa: S108 - a pod's own /tmp
    worker_liveness_seconds: int = 60
    # A bundle larger than this is written as numbered parts of at most this size (delineate/jobs/parts.py).
    bundle_part_bytes: int = 2_147_483_648

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
        if self.dashboard_sentry_dsn is None:
            object.__setattr__(self, "dashboard_sentry_dsn", self.sentry_dsn)
        if self.dashboard_otlp_endpoint is None:
            object.__setattr__(self, "dashboard_otlp_endpoint", self.otel_exporter_otlp_endpoint)

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
