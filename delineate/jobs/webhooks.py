"""Webhooks: which callback URLs are accepted, how a delivery is signed and sent.

A job created with a ``callback_url`` gets one POST when it reaches a terminal state:
the status JSON plus ``"owner"`` (the tenant owning the job, ``""`` in open mode), signed
with the OWNING tenant's ``webhook_secret`` (default CALLBACK_SECRET):
``X-Delineate-Signature: sha256=<hex HMAC-SHA256 of the exact body>``, with
``X-Delineate-Event: <status>`` and the Standard Webhooks headers (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), so a receiver can verify with the
``standardwebhooks`` library and refuse replays. A delivery goes only to that tenant's
``callback_hosts`` (default CALLBACK_ALLOWED_HOSTS), checked when the job is created and
again at each attempt. A receiver shared by tenants tells them apart by ``owner``, and
cannot be fooled by one tenant about another: each signs with its own secret.

The Celery task ``delineate.deliver_webhook`` (``celery_app/tasks.py``) makes one attempt
and stores the outcome in the job's ``callback`` field. The schedule lives in Redis, not
in Celery retries: the job script puts a job that ends with a callback URL in the
``sweep:webhooks`` index, the first attempt is sent at once, and a failed attempt that may
succeed later (a 5xx, 429, connection error, or any unexpected error while building or
sending the request) schedules the next one (exponential backoff with jitter, capped)
for WEBHOOK_RETRY_WINDOW_SECONDS after the job ended; the sweeper sends what is due. So
retries survive worker restarts, a lost message costs one claim period (four sweep
intervals), and each attempt carries its number, so a duplicate message for an attempt
already made does nothing. A completed job that is revoked gets one more delivery, event
``revoked`` (:func:`send_revoked`). Where a delivery may go, and how long it may take, is
:mod:`delineate.jobs.webhook_http`'s concern; redirects are never followed.
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
from delineate.config.tenants import Tenant, Tenants
from delineate.errors import InvalidRequest
from delineate.jobs import retry, webhook_http
from delineate.jobs.webhook_http import DEFAULT_PORTS, NOT_LISTED, BadURL, CallbackPolicy
from delineate.models import Job
from delineate.store import JobStore, errorlog, revocation_hooks
from delineate.store.revocation_hooks import ACTIVE, OVER
from delineate.telemetry.audit import audit_link
from delineate.telemetry.job_metrics import record_webhook_delivery
from delineate.telemetry.tracing import current_trace_id

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = webhook_http.DELIVERY_DEADLINE_SECONDS
"""Time limit of one whole delivery attempt, in seconds."""

SIGNATURE_HEADER = "X-Delineate-Signature"
EVENT_HEADER = "X-Delineate-Event"
WHSEC_PREFIX = "whsec_"


REVOKED = "revoked"
"""The event of the delivery a revoked job gets (:func:`send_revoked`)."""


def enabled(tenant: Tenant) -> bool:
    """Webhooks are on for ``tenant`` when it has a secret and at least one callback host."""
    return bool(tenant.callback_hosts and tenant.webhook_secret)


def check_callback_url(url: str, tenant: Tenant) -> str:
    """The URL to store and call, normalised as it will be sent, if ``tenant`` may have a
    webhook sent to it.

    Normalised (:func:`~delineate.jobs.webhook_http.normalise_url`): the host lower case and
    IDNA-encoded, the path and query percent-encoded as the HTTP client sends them
    (``http://127.0.0.1:4500/é`` is ``http://127.0.0.1:4500/%C3%A9``). Allowed: http or
    https, a host among the tenant's callback hosts (compared literally, so ``localhost``
    is not ``127.0.0.1``) with its port (an entry ``host`` allows ports 80 and 443 only;
    ``host:port`` that port), no credentials, no fragment. Where the host resolves is
    checked again at each delivery (:mod:`delineate.jobs.webhook_http`).

    :raise InvalidRequest: webhooks are off for the tenant, the URL cannot be normalised
        (bad IDNA, control characters, ...), or it breaks one of the rules.
    """

    def refuse(message: str) -> InvalidRequest:
        return InvalidRequest(
            f"callback_url is not accepted: {message}.",
            details=[{"path": "$.callback_url", "message": message}],
        )

    if not enabled(tenant):
        raise refuse("webhooks are not enabled " + ("for this API key" if tenant.name else "on this server"))
    try:
        sent = webhook_http.normalise_url(url)
    except BadURL as exc:
        raise refuse(str(exc)) from None
    parts = urlsplit(sent)
    host, port = parts.hostname or "", parts.port
    if not CallbackPolicy(tenant.callback_hosts).allows(host, port or DEFAULT_PORTS[parts.scheme]):
        shown = f"{host}:{port}" if port else host
        raise refuse(f"host {shown[:100]!r} (with its port) {NOT_LISTED}")
    return sent


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


def post(
    url: str,
    status: dict[str, Any],
    secret: str,
    *,
    allowed_hosts: tuple[str, ...] | None = None,
    event: str | None = None,
    msg_id: str | None = None,
) -> Attempt:
    """POST the signed status once, by the rules of :mod:`delineate.jobs.webhook_http`.

    ``event`` (``X-Delineate-Event``) defaults to the status, ``msg_id`` (``webhook-id``) to
    the job id. Never follows redirects, never raises: a refusal is a failed attempt not
    worth repeating, a network error or any unexpected error (building the body, the
    headers or the request) one that is. ``allowed_hosts`` is the tenant's callback hosts;
    left out, no host is allowed.
    """
    try:
        body = json.dumps(status, separators=(",", ":")).encode()
        msg_id = msg_id or str(status.get("jobId", ""))
        headers = signed_headers(body, secret, msg_id, event or str(status["status"]), int(time.time()))
        answer = webhook_http.send(url, body, headers, CallbackPolicy(allowed_hosts or ()), TIMEOUT_SECONDS)
    except webhook_http.Refused as exc:
        return Attempt(False, f"refused: {exc}")
    except webhook_http.TRANSPORT_ERRORS as exc:
        return Attempt(False, _error_text(exc), retryable=True)
    except Exception as exc:  # any failure is a failed attempt, retried by the schedule (no traceback each sweep)
        logger.debug("webhook to %s: unexpected error", url[:200], exc_info=True)
        return Attempt(False, _error_text(exc), retryable=True)
    code = answer.status
    if 200 <= code < 300:
        return Attempt(True)
    if 300 <= code < 400:
        return Attempt(False, f"HTTP {code}: redirects are not followed")
    return Attempt(False, f"HTTP {code}", retryable=code >= 500 or code == 429)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")[:500]


def _ended_at(completed_at: str | None, fallback: float) -> float:
    try:
        return datetime.fromisoformat(completed_at.replace("Z", "+00:00")).timestamp() if completed_at else fallback
    except ValueError:
        return fallback


def deliver(
    store: JobStore,
    settings: Settings,
    tenants: Tenants,
    job_id: str,
    attempt: int | None = None,
    event: str | None = None,
) -> Attempt | None:
    """Make the next delivery attempt for a terminal job, and schedule the one after.

    ``attempt`` (1-based) is the attempt the caller was sent for: when the job's record
    shows it was already made, nothing happens (a duplicate message). Records
    ``callback: {status, attempts, lastError}``: ``delivered``, ``retrying`` (the next
    attempt is scheduled) or ``failed``. ``tenants`` are the tenants in force: the job's
    owner gives the secret and the hosts. ``event`` ``"revoked"``: the revoked job's
    delivery (:func:`send_revoked`); without it, a job whose own delivery is over but
    whose ``revoked`` one is due (the sweeper's message) gets that one. Returns None when
    there is nothing to send (no callback URL, job gone or not terminal, delivery already
    over, a duplicate). Never raises for the delivery itself (only for Redis).
    """
    job, revoked = revocation_hooks.read(store, job_id)
    if job is None or not job.callback_url or not job.status.terminal:
        return None
    state = job.callback or pending_callback()
    over = state.get("status") in OVER
    revoked_due = over and revoked is not None and revoked.get("status") in ACTIVE
    if event == REVOKED or revoked_due:  # (one waiting behind the job's own delivery: not yet)
        if not revoked_due or revoked is None:
            return None
        return _deliver_revoked(store, settings, tenants, job, revoked, attempt if event == REVOKED else None)
    if over:
        store.set_callback(job_id, state, None)  # (ends a schedule left behind)
        return None
    number = int(state.get("attempts") or 0) + 1
    if attempt is not None and attempt != number:
        logger.info("job %s: webhook attempt %d already made; skipping a duplicate", job_id, attempt)
        return None
    outcome = _attempt(store, tenants, job, job.status.value, job_id)
    now = time.time()
    within = now - _ended_at(job.completed_at, now) < settings.webhook_retry_window_seconds
    will_retry = not outcome.delivered and outcome.retryable and within
    next_at = now + backoff_seconds(number - 1, settings) if will_retry else None
    status = "delivered" if outcome.delivered else "retrying" if will_retry else "failed"
    store.set_callback(job_id, {"status": status, "attempts": number, "lastError": outcome.error}, next_at)
    if not will_retry and (revocation_hooks.state(store, job_id) or {}).get("status") in ACTIVE:
        revocation_hooks.schedule_now(store, job_id)  # revoked meanwhile: its delivery is next
    _report(store, job, number, status, outcome, job.status.value)
    return Attempt(outcome.delivered, outcome.error, will_retry)


def _deliver_revoked(
    store: JobStore, settings: Settings, tenants: Tenants, job: Job, state: dict[str, Any], attempt: int | None
) -> Attempt | None:
    number = int(state.get("attempts") or 0) + 1
    if attempt is not None and attempt != number:
        logger.info("job %s: revoked webhook attempt %d already made; skipping", job.job_id, attempt)
        return None
    outcome = _attempt(store, tenants, job, REVOKED, f"{job.job_id}:{REVOKED}")
    now = time.time()
    within = now - float(state.get("since") or now) < settings.webhook_retry_window_seconds
    will_retry = not outcome.delivered and outcome.retryable and within
    next_at = now + backoff_seconds(number - 1, settings) if will_retry else None
    status = "delivered" if outcome.delivered else "retrying" if will_retry else "failed"
    record = {**state, "status": status, "attempts": number, "lastError": outcome.error}
    revocation_hooks.set_outcome(store, job.job_id, record, next_at)
    _report(store, job, number, status, outcome, REVOKED)
    return Attempt(outcome.delivered, outcome.error, will_retry)


def _tenant(tenants: Tenants, owner: str) -> Tenant | None:
    """The job owner's tenant; None when it is gone (with keys, never another's secret)."""
    found = tenants.tenants.get(owner)
    return found if found is not None or tenants.keyed else tenants.tenant(owner)


def _attempt(store: JobStore, tenants: Tenants, job: Job, event: str, msg_id: str) -> Attempt:
    """One attempt: the status plus the owner, signed with the owner's secret, sent to the
    owner's hosts only."""
    tenant = _tenant(tenants, job.owner)
    if tenant is None:
        return Attempt(False, f"refused: the tenant {job.owner!r} no longer exists")
    if not enabled(tenant):
        return Attempt(False, "refused: webhooks are not enabled for the job's tenant")
    try:
        status = {**store.status(job), "owner": job.owner}
    except Exception as exc:  # noqa: BLE001 - a status that cannot be built now (a link to sign) may be later
        return Attempt(False, _error_text(exc), retryable=True)
    if status.get("downloadUrl"):
        receiver = urlsplit(job.callback_url).hostname if job.callback_url else None
        audit_link(status["downloadUrl"], job.owner, job.job_id, msg_id, receiver, via="webhook")
    return post(
        job.callback_url,
        status,
        tenant.webhook_secret,
        allowed_hosts=tenant.callback_hosts,
        event=event,
        msg_id=msg_id,
    )


def _report(store: JobStore, job: Job, number: int, status: str, outcome: Attempt, event: str) -> None:
    """Count the attempt, log it, and put a failure in the owner's error log."""
    record_webhook_delivery(status, store.redis)
    if not outcome.delivered:
        which = "Webhook (revoked)" if event == REVOKED else "Webhook"
        message = f"{which} attempt {number} {status}: {outcome.error}"
        errorlog.write(
            store.redis, job.owner, errorlog.entry("webhook", message, jobId=job.job_id, traceId=current_trace_id())
        )
    log = logger.info if outcome.delivered else logger.warning
    log("job %s: webhook (%s) attempt %d %s (%s)", job.job_id, event, number, status, outcome.error or "ok")


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


def send_revoked(celery: Any, job_id: str) -> None:
    """Send the first attempt of a revoked job's one ``revoked`` delivery: its status (with
    ``revokedAt``) and owner, ``X-Delineate-Event: revoked``, signed like every delivery,
    ``webhook-id`` ``{jobId}:revoked`` (not the job's own delivery's id, so a receiver
    dropping repeats by id keeps it).

    ``revoke.lua`` records the delivery in the revoking step (the hash field
    ``revokedCallback``, :mod:`delineate.store.revocation_hooks`) and schedules it in
    ``sweep:webhooks``, which carries one event at a time:

    - the job's own delivery is over: the entry is set a claim period ahead (the fallback:
      the sweeper sends it if this message is never sent) and the revoking request calls
      this function;
    - it is still pending or retrying: the ``revoked`` delivery waits, and the attempt that
      ends the job's own delivery makes the entry due at once.

    A failed attempt worth repeating schedules the next on the same backoff, for
    WEBHOOK_RETRY_WINDOW_SECONDS after the revocation. The sweeper sends a due entry as it
    always does (``deliver_webhook(job_id, n)``, ``n`` from the job's own ``callback``):
    :func:`deliver` sees that delivery over and the ``revoked`` one due, and makes the
    latter's attempt (its number is not checked on that path; the sweeper's claim keeps
    messages apart).
    """
    send_task(celery, DELIVER_WEBHOOK, [job_id, 1, REVOKED])
