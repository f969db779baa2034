"""Error reporting to Sentry, when SENTRY_DSN is set (API and worker alike).

Unhandled errors reach Sentry three ways: Flask's (our catch-all handler logs them with
``logger.exception``, which the logging integration turns into an event), Celery task
failures (the Celery integration), and any ``logger.error``. Imports no web framework:
the API hooks its request's data in (:func:`add_event_hook`). Every event is tagged with
the request id, job id and trace id where known, and scrubbed before it leaves the
process: no API key, no Authorization header, no presigned URL signature (:func:`scrub`),
and no configured secret anywhere in it (:func:`scrubber`). Frame locals are never sent
(``include_local_variables=False``) nor request bodies: they are where secrets hide.

The SDK's Flask integration is not used: its WSGI middleware forks a scope, copies the
headers and builds an event processor for EVERY request, which cost about a quarter of
a status read's CPU. Events are only ever made inside a request by our own handlers, so
:func:`scrub` adds the request's data there and then, and keeps only the breadcrumbs of
that request (a connection's requests share one greenlet, and so one scope). Nor are the
auto-enabling integrations (Redis, botocore, httpx...): they add a breadcrumb and a span
around every command and request, in the API and the worker alike.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from delineate.config import Settings
from delineate.telemetry.tracing import current_ids

logger = logging.getLogger(__name__)

FILTERED = "[Filtered]"
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "set-cookie", "proxy-authorization"})

# The signing parts of a presigned S3 URL (v4 and v2) and an api_key in a query string.
_URL_SECRET = re.compile(
    r"(?i)\b(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId|api_key)=[^&\s\"'<>]+"
)


def redact(text: str) -> str:
    """Replace the secret values in a URL or message (signatures, credentials, keys)."""
    if "=" not in text:
        return text
    return _URL_SECRET.sub(lambda m: f"{m.group(1)}={FILTERED}", text)


def remove_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by ``[Filtered]``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, FILTERED)
    return text


def _scrub_value(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    if isinstance(value, str):
        return remove_secrets(redact(value), secrets)
    if isinstance(value, dict):
        return {_scrub_value(k, secrets): _scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_value(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub_value(v, secrets) for v in value)
    return value


EventHook = Callable[[dict[str, Any]], None]
_event_hooks: list[EventHook] = []


def add_event_hook(hook: EventHook) -> None:
    """Let ``hook`` add to every event before it is scrubbed (the API adds the request's
    data: :mod:`delineate.api.request_context`)."""
    if hook not in _event_hooks:
        _event_hooks.append(hook)


def scrub(event: dict[str, Any], hint: dict[str, Any] | None = None, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """``before_send``: tag the event with our ids and remove every secret from it."""
    for hook in _event_hooks:
        hook(event)
    tags = event.setdefault("tags", {})
    for name, value in current_ids().items():
        if name != "span_id":
            tags.setdefault(name, value)
    req = event.get("request")
    if isinstance(req, dict):
        headers = req.get("headers")
        if isinstance(headers, dict):
            req["headers"] = {k: (FILTERED if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}
        elif isinstance(headers, list):  # [[name, value], ...]
            req["headers"] = [[k, FILTERED if str(k).lower() in SECRET_HEADERS else v] for k, v in headers]
        req.pop("cookies", None)
    return _scrub_value(event, secrets)  # type: ignore[no-any-return]


def scrubber(settings: Settings) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """The ``before_send`` of these settings: :func:`scrub`, and every configured secret
    value (longest first, so a DSN goes before the key inside it) replaced wherever it is."""
    secrets = tuple(sorted(settings.secret_values(), key=len, reverse=True))

    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        return scrub(event, hint, secrets)

    return before_send


def setup_sentry(settings: Settings, service_name: str) -> bool:
    """Start the SDK when SENTRY_DSN is set; returns whether it did."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        integrations=[CeleryIntegration()],
        auto_enabling_integrations=False,  # see the module's docstring
        before_send=scrubber(settings),  # type: ignore[arg-type]
        send_default_pii=False,
        include_local_variables=False,  # a frame's locals hold settings, clients, keys
        max_request_body_size="never",
        server_name=service_name,
        traces_sample_rate=None,  # tracing is OpenTelemetry's job
    )
    sentry_sdk.set_tag("service", service_name)
    logger.info("sentry: reporting errors of %s", service_name)
    return True
