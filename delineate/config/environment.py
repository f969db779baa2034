"""The environment table and the two functions that read the environment: the only
readers of ``os.environ`` in the project."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from dotenv import dotenv_values

from delineate.config.parse import (
    ConfigError,
    _api_keys,
    _basic_auth,
    _bind_address,
    _bool,
    _callback_hosts,
    _callback_secret,
    _int,
    _optional_url,
    _origins,
    _ratio,
    _sampler,
    _seconds,
    _sentinel_master,
    _sentinels,
    _trace_url,
    _url,
)
from delineate.config.settings import Settings

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
    "CORS_ORIGINS": ("cors_origins", _origins),
    "API_KEYS": ("api_keys", _api_keys),
    "TRUSTED_PROXY_HOPS": ("trusted_proxy_hops", lambda n, v: _int(n, v, 0, 10)),
    "CALLBACK_ALLOWED_HOSTS": ("callback_allowed_hosts", _callback_hosts),
    "CALLBACK_SECRET": ("callback_secret", _callback_secret),
    "SSE_HEARTBEAT_SECONDS": ("sse_heartbeat_seconds", lambda n, v: _int(n, v, 1, 3600)),
    "SSE_MAX_STREAMS": ("sse_max_streams", lambda n, v: _int(n, v, 1, 1_000_000)),
    "MAX_BODY_BYTES": ("max_body_bytes", lambda n, v: _int(n, v, 64)),
    "MAX_FILE_IDS": ("max_file_ids", lambda n, v: _int(n, v, 1, 100_000)),
    "MAX_INITIATE_BODY_BYTES": ("max_initiate_body_bytes", lambda n, v: _int(n, v, 64, 16_777_216)),
    "SENTRY_DSN": ("sentry_dsn", lambda n, v: v.strip()),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("otel_exporter_otlp_endpoint", lambda n, v: v.strip()),
    "OTEL_TRACES_SAMPLER": ("otel_traces_sampler", _sampler),
    "OTEL_TRACES_SAMPLER_ARG": ("otel_traces_sampler_arg", _ratio),
    "DASHBOARD_SENTRY_DSN": ("dashboard_sentry_dsn", _optional_url),
    "DASHBOARD_OTLP_ENDPOINT": ("dashboard_otlp_endpoint", _optional_url),
    "DASHBOARD_TRACE_URL": ("dashboard_trace_url", _trace_url),
    "FAST_PATHS": ("fast_paths", _bool),
    "TENANTS_FILE": ("tenants_file", lambda n, v: v.strip()),
    "SENTRY_TEST_ROUTE": ("sentry_test_route", _bool),
    "BIND": ("bind", _bind_address),
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
    "BUNDLE_REUSE": ("bundle_reuse", _bool),
    "WORKER_MEMORY_LIMIT_BYTES": ("worker_memory_limit_bytes", _int),
    "WORKER_HEARTBEAT_FILE": ("worker_heartbeat_file", lambda n, v: v.strip()),
    "WORKER_LIVENESS_SECONDS": ("worker_liveness_seconds", lambda n, v: _int(n, v, 2, 3600)),
    "BUNDLE_PART_BYTES": ("bundle_part_bytes", lambda n, v: _int(n, v, 4096)),
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
