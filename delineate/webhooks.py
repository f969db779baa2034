"""Webhooks: which callback URLs are accepted, how a delivery is signed and sent.

A job created with a ``callback_url`` gets one POST when it reaches a terminal state:
the status JSON, signed ``X-Delineate-Signature: sha256=<hex HMAC-SHA256 of the exact
body with CALLBACK_SECRET>``, with ``X-Delineate-Event: <status>`` and the Standard
Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), so a
receiver can verify with the ``standardwebhooks`` library and refuse replays. The Celery task
``delineate.deliver_webhook`` (``celery_app/tasks.py``) sends it and retries 5xx answers
and connection errors with exponential backoff; the outcome is stored in the job's
``callback`` field. Where a delivery may go, and how long it may take, is
:mod:`delineate.webhook_http`'s concern; redirects are never followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, has_app_context

from delineate import metrics, webhook_http
from delineate.config import Settings
from delineate.errors import InvalidRequest
from delineate.models import Job
from delineate.progress import JobStore
from delineate.webhook_http import DEFAULT_PORTS, CallbackPolicy

logger = logging.getLogger(__name__)

DELIVER_WEBHOOK = "delineate.deliver_webhook"

TIMEOUT_SECONDS = webhook_http.DELIVERY_DEADLINE_SECONDS
"""Time limit of one whole delivery attempt, in seconds."""

MAX_RETRIES = 6
"""Retries after the first attempt (so at most 7 POSTs), on 5xx and connection errors."""

BACKOFF_BASE_SECONDS = 1.0
"""First retry waits about this long, in seconds; each next one twice as long."""

SIGNATURE_HEADER = "X-Delineate-Signature"
EVENT_HEADER = "X-Delineate-Event"
WHSEC_PREFIX = "whsec_"


def enabled(settings: Settings) -> bool:
    return bool(settings.callback_allowed_hosts and settings.callback_secret)


def check_callback_url(url: str, settings: Settings) -> str:
    """The URL if a webhook may be sent to it.

    Allowed: http or https, a host listed in CALLBACK_ALLOWED_HOSTS (compared literally,
    so ``localhost`` is not ``127.0.0.1``) with its port (an entry ``host`` allows ports
    80 and 443 only; ``host:port`` that port), no credentials, no fragment. Where the
    host resolves is checked again at each delivery (:mod:`delineate.webhook_http`).

    :raise InvalidRequest: webhooks are off, or the URL breaks one of the rules.
    """

    def refuse(message: str) -> InvalidRequest:
        return InvalidRequest(
            f"callback_url is not accepted: {message}.",
            details=[{"path": "$.callback_url", "message": message}],
        )

    if not enabled(settings):
        raise refuse("webhooks are not enabled on this server")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise refuse("it contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("it is not a valid URL") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise refuse("only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise refuse("it must not carry credentials")
    if parts.fragment:
        raise refuse("it must not have a fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise refuse("it has no host")
    if not CallbackPolicy(settings.callback_allowed_hosts).allows(host, port or DEFAULT_PORTS[parts.scheme]):
        shown = f"{host}:{port}" if port else host
        raise refuse(f"host {shown[:100]!r} (with its port) is not in CALLBACK_ALLOWED_HOSTS")
    return url


def sign(body: bytes, secret: str) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str, secret: str) -> bool:
    """What a receiver does (see README): recompute and compare in constant time."""
    return hmac.compare_digest(sign(body, secret), header)


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks signing key: base64 after ``whsec_``, else the secret's bytes."""
    if secret.startswith(WHSEC_PREFIX):
        # Padding added as the reference library does (b64decode ignores extra padding).
        return base64.b64decode(secret[len(WHSEC_PREFIX) :] + "==")
    return secret.encode()


def standard_signature(msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (webhook-signature)."""
    digest = hmac.new(standard_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(body: bytes, secret: str, msg_id: str, event: str, timestamp: int) -> list[tuple[str, str]]:
    """Every header of a delivery: ours and the Standard Webhooks ones.

    ``webhook-id`` is the job id, the same on every attempt, so a receiver can drop a
    repeat; ``webhook-timestamp`` is the attempt's time, so it can refuse old replays.
    """
    return [
        ("Content-Type", "application/json"),
        ("User-Agent", "delineate-webhook/1"),
        (SIGNATURE_HEADER, sign(body, secret)),
        (EVENT_HEADER, event),
        ("webhook-id", msg_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", standard_signature(msg_id, timestamp, body, secret)),
    ]


def backoff_seconds(retries: int) -> float:
    """Wait before retry ``retries`` + 1: 1, 2, 4, 8, 16, 32 s."""
    return float(BACKOFF_BASE_SECONDS * 2**retries)


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: delivered, or an error and whether retrying may help."""

    delivered: bool
    error: str | None = None
    retryable: bool = False


def post(url: str, status: dict[str, Any], secret: str, *, allowed_hosts: tuple[str, ...] | None = None) -> Attempt:
    """POST the signed status once, by the rules of :mod:`delineate.webhook_http`.

    Never follows redirects, never raises for HTTP. ``allowed_hosts`` is
    CALLBACK_ALLOWED_HOSTS; left out, it is the current app's (tasks run in its
    context), and outside an app no host is allowed.
    """
    if allowed_hosts is None:
        allowed_hosts = current_app.extensions["delineate"].settings.callback_allowed_hosts if has_app_context() else ()
    body = json.dumps(status, separators=(",", ":")).encode()
    headers = signed_headers(body, secret, str(status.get("jobId", "")), str(status["status"]), int(time.time()))
    try:
        answer = webhook_http.send(url, body, headers, CallbackPolicy(allowed_hosts), TIMEOUT_SECONDS)
    except webhook_http.Refused as exc:
        return Attempt(False, f"refused: {exc}")
    except webhook_http.TRANSPORT_ERRORS as exc:
        return Attempt(False, f"{type(exc).__name__}: {exc}".rstrip(": "), retryable=True)
    code = answer.status
    if 200 <= code < 300:
        return Attempt(True)
    if 300 <= code < 400:
        return Attempt(False, f"HTTP {code}: redirects are not followed")
    return Attempt(False, f"HTTP {code}", retryable=code >= 500 or code == 429)


def deliver(store: JobStore, settings: Settings, job_id: str, attempt_number: int) -> Attempt | None:
    """Make delivery attempt ``attempt_number`` (1-based) for a terminal job.

    Records ``callback: {status, attempts, lastError}`` on the job: ``delivered``,
    ``retrying`` (the caller will retry) or ``failed``. Returns None when there is
    nothing to send (no callback URL, job gone or not terminal).
    """
    job = store.get(job_id)
    if job is None or not job.callback_url or not job.status.terminal:
        return None
    outcome = post(job.callback_url, store.status(job), settings.callback_secret)
    will_retry = not outcome.delivered and outcome.retryable and attempt_number <= MAX_RETRIES
    state = "delivered" if outcome.delivered else "retrying" if will_retry else "failed"
    store.set_callback(job_id, {"status": state, "attempts": attempt_number, "lastError": outcome.error})
    metrics.record_webhook_delivery(state, store.redis)
    log = logger.info if outcome.delivered else logger.warning
    log("job %s: webhook attempt %d %s (%s)", job_id, attempt_number, state, outcome.error or "ok")
    return Attempt(outcome.delivered, outcome.error, will_retry)


def pending_callback() -> dict[str, Any]:
    return {"status": "pending", "attempts": 0, "lastError": None}


def init_app(app: Flask) -> None:
    """Enqueue a delivery whenever a write makes a job with a callback URL terminal."""
    store: JobStore = app.extensions["delineate"].store
    celery = app.extensions["celery"]

    def on_terminal(job: Job) -> None:
        if job.callback_url:
            celery.send_task(DELIVER_WEBHOOK, args=[job.job_id])

    store.terminal_hooks.append(on_terminal)
