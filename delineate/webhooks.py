"""Webhooks: which callback URLs are accepted, how a delivery is signed and sent.

A job created with a ``callback_url`` gets one POST when it reaches a terminal state:
the status JSON, signed ``X-Delineate-Signature: sha256=<hex HMAC-SHA256 of the exact
body with CALLBACK_SECRET>``, with ``X-Delineate-Event: <status>``. The Celery task
``delineate.deliver_webhook`` (``celery_app/tasks.py``) sends it and retries 5xx answers
and connection errors with exponential backoff; the outcome is stored in the job's
``callback`` field. Redirects are never followed (a redirect could lead anywhere).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from flask import Flask

from delineate import metrics
from delineate.config import Settings
from delineate.errors import InvalidRequest
from delineate.models import Job
from delineate.progress import JobStore

logger = logging.getLogger(__name__)

DELIVER_WEBHOOK = "delineate.deliver_webhook"

TIMEOUT_SECONDS = 10.0
"""Time limit of one delivery attempt, in seconds."""

MAX_RETRIES = 6
"""Retries after the first attempt (so at most 7 POSTs), on 5xx and connection errors."""

BACKOFF_BASE_SECONDS = 1.0
"""First retry waits about this long, in seconds; each next one twice as long."""

SIGNATURE_HEADER = "X-Delineate-Signature"
EVENT_HEADER = "X-Delineate-Event"


def enabled(settings: Settings) -> bool:
    return bool(settings.callback_allowed_hosts and settings.callback_secret)


def check_callback_url(url: str, settings: Settings) -> str:
    """The URL if a webhook may be sent to it.

    Allowed: http or https, a host listed in CALLBACK_ALLOWED_HOSTS (compared literally,
    so ``localhost`` is not ``127.0.0.1``; an entry may also name ``host:port``), no
    credentials, no fragment.

    :raise InvalidRequest: webhooks are off, or the URL breaks one of the rules.
    """

    def refuse(message: str) -> InvalidRequest:
        return InvalidRequest(
            f"callback_url is not accepted: {message}.",
            details=[{"path": "$.callback_url", "message": message}],
        )

    if not enabled(settings):
        raise refuse("webhooks are not enabled on this server")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise refuse("it contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("it is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise refuse("only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise refuse("it must not carry credentials")
    if parts.fragment:
        raise refuse("it must not have a fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise refuse("it has no host")
    allowed = {entry.lower() for entry in settings.callback_allowed_hosts}
    if host not in allowed and (port is None or f"{host}:{port}" not in allowed):
        raise refuse(f"host {host!r} is not in CALLBACK_ALLOWED_HOSTS")
    return url


def sign(body: bytes, secret: str) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str, secret: str) -> bool:
    """What a receiver does (see README): recompute and compare in constant time."""
    return hmac.compare_digest(sign(body, secret), header)


def backoff_seconds(retries: int) -> float:
    """Wait before retry ``retries`` + 1: 1, 2, 4, 8, 16, 32 s."""
    return float(BACKOFF_BASE_SECONDS * 2**retries)


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: delivered, or an error and whether retrying may help."""

    delivered: bool
    error: str | None = None
    retryable: bool = False


def post(url: str, status: dict[str, Any], secret: str, client: httpx.Client | None = None) -> Attempt:
    """POST the signed status once. Never follows redirects, never raises for HTTP."""
    body = json.dumps(status, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "delineate-webhook/1",
        SIGNATURE_HEADER: sign(body, secret),
        EVENT_HEADER: str(status["status"]),
    }
    own = client is None
    client = client or httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False)
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TransportError as exc:
        return Attempt(False, f"{type(exc).__name__}: {exc}".rstrip(": "), retryable=True)
    finally:
        if own:
            client.close()
    code = response.status_code
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
