"""Webhooks: which callback URLs are accepted, how a delivery is signed and sent.

A job created with a ``callback_url`` gets one POST when it reaches a terminal state:
the status JSON, signed ``X-Delineate-Signature: sha256=<hex HMAC-SHA256 of the exact
body with CALLBACK_SECRET>``, with ``X-Delineate-Event: <status>`` and the Standard
Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), so a
receiver can verify with the ``standardwebhooks`` library and refuse replays. The Celery
task ``delineate.deliver_webhook`` (``celery_app/tasks.py``) makes one attempt and stores
the outcome in the job's ``callback`` field. The schedule lives in Redis, not in Celery
retries: the job script puts a job that ends with a callback URL in the ``sweep:webhooks``
index, the first attempt is sent at once, and a 5xx, 429 or connection error schedules
the next one (exponential backoff with jitter, capped) for WEBHOOK_RETRY_WINDOW_SECONDS
after the job ended; the sweeper sends what is due. So retries survive worker restarts,
a lost message costs one claim period (four sweep intervals), and each attempt
carries its number, so a duplicate message for an attempt already made does nothing.
Where a delivery may go, and how long it may take, is :mod:`delineate.jobs.webhook_http`'s
concern; redirects are never followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from delineate.broker.queue import DELIVER_WEBHOOK, send_task
from delineate.config import Settings
from delineate.errors import InvalidRequest
from delineate.jobs import retry, webhook_http
from delineate.jobs.webhook_http import DEFAULT_PORTS, CallbackPolicy
from delineate.models import Job
from delineate.store import JobStore, errorlog
from delineate.telemetry.job_metrics import record_webhook_delivery
from delineate.telemetry.tracing import current_trace_id

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = webhook_http.DELIVERY_DEADLINE_SECONDS
"""Time limit of one whole delivery attempt, in seconds."""

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
    host resolves is checked again at each delivery (:mod:`delineate.jobs.webhook_http`).

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


def backoff_seconds(retries: int, settings: Settings, rng: random.Random | None = None) -> float:
    """Wait before retry ``retries`` + 1: WEBHOOK_RETRY_BASE_SECONDS doubled each time up
    to WEBHOOK_RETRY_MAX_DELAY_SECONDS, with equal jitter (between half and all of it), so
    the senders of a receiver that comes back do not all hit it at once. With the
    defaults (15 s, 600 s): 7.5-15, 15-30, 30-60, ... then 300-600 s each."""
    return retry.backoff_seconds(
        retries, settings.webhook_retry_base_seconds, rng, cap=settings.webhook_retry_max_delay_seconds
    )


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: delivered, or an error and whether retrying may help."""

    delivered: bool
    error: str | None = None
    retryable: bool = False


def post(url: str, status: dict[str, Any], secret: str, *, allowed_hosts: tuple[str, ...] | None = None) -> Attempt:
    """POST the signed status once, by the rules of :mod:`delineate.jobs.webhook_http`.

    Never follows redirects, never raises for HTTP. ``allowed_hosts`` is
    CALLBACK_ALLOWED_HOSTS; left out, no host is allowed.
    """
    allowed_hosts = allowed_hosts or ()
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


def _ended_at(completed_at: str | None, fallback: float) -> float:
    try:
        return datetime.fromisoformat(completed_at.replace("Z", "+00:00")).timestamp() if completed_at else fallback
    except ValueError:
        return fallback


def deliver(store: JobStore, settings: Settings, job_id: str, attempt: int | None = None) -> Attempt | None:
    """Make the next delivery attempt for a terminal job, and schedule the one after.

    ``attempt`` (1-based) is the attempt the caller was sent for: when the job's record
    shows it was already made, nothing happens (a duplicate message). Records
    ``callback: {status, attempts, lastError}``: ``delivered``, ``retrying`` (the next
    attempt is scheduled) or ``failed``. Returns None when there is nothing to send (no
    callback URL, job gone or not terminal, delivery already over, a duplicate).
    """
    job = store.get(job_id)
    if job is None or not job.callback_url or not job.status.terminal:
        return None
    state = job.callback or pending_callback()
    if state.get("status") in ("delivered", "failed"):
        store.set_callback(job_id, state, None)  # (ends a schedule left behind)
        return None
    number = int(state.get("attempts") or 0) + 1
    if attempt is not None and attempt != number:
        logger.info("job %s: webhook attempt %d already made; skipping a duplicate", job_id, attempt)
        return None
    outcome = post(
        job.callback_url, store.status(job), settings.callback_secret, allowed_hosts=settings.callback_allowed_hosts
    )
    now = time.time()
    within = now - _ended_at(job.completed_at, now) < settings.webhook_retry_window_seconds
    will_retry = not outcome.delivered and outcome.retryable and within
    next_at = now + backoff_seconds(number - 1, settings) if will_retry else None
    status = "delivered" if outcome.delivered else "retrying" if will_retry else "failed"
    store.set_callback(job_id, {"status": status, "attempts": number, "lastError": outcome.error}, next_at)
    record_webhook_delivery(status, store.redis)
    if not outcome.delivered:
        message = f"Webhook attempt {number} {status}: {outcome.error}"
        errorlog.write(
            store.redis, job.owner, errorlog.entry("webhook", message, jobId=job_id, traceId=current_trace_id())
        )
    log = logger.info if outcome.delivered else logger.warning
    log("job %s: webhook attempt %d %s (%s)", job_id, number, status, outcome.error or "ok")
    return Attempt(outcome.delivered, outcome.error, will_retry)


def pending_callback() -> dict[str, Any]:
    return {"status": "pending", "attempts": 0, "lastError": None}


def send_first_delivery(store: JobStore, celery: Any) -> None:
    """Send the first delivery attempt whenever a write makes a job with a callback URL
    terminal. (The job script has scheduled it too: if this send is lost, the sweeper
    sends it after four sweep intervals.)"""

    def on_terminal(job: Job) -> None:
        if job.callback_url:
            send_task(celery, DELIVER_WEBHOOK, [job.job_id, 1])

    store.terminal_hooks.append(on_terminal)
