"""The audit line of every presigned link handed out, whichever way it leaves: a status
read (Flask's view or the fast lane), a download's redirect, the synchronous ``/start``, an
SSE event or a webhook delivery. One JSON log line each, on the logger ``delineate.audit``:
owner, jobId, requestId, client, expiresAt and ``via``; never the link itself.

A process hands the same link out again for a tenth of its life (``presign_reused``), so a
poller would get one line per poll: the same link handed the same way to the same owner
and client is written once per process (the first request's id). A new link, another
client or another way out is a new line. That keeps an audit line at about 1 µs instead
of 70 µs of JSON logging on every poll of a completed job."""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta

audit = logging.getLogger("delineate.audit")

NO_STORE = "no-store"
"""Cache-Control of every answer that carries a presigned link."""


@functools.lru_cache(maxsize=1024)
def link_expires_at(url: str) -> str | None:
    """When a SigV4 presigned link expires (ISO-8601, UTC), read from its own query string
    (``X-Amz-Date`` + ``X-Amz-Expires``): exact for a link reused by ``presign_reused``
    too. Cached: a reused link is the same string, read by every poll. None: not SigV4."""
    date_at, expires_at = url.find("X-Amz-Date="), url.find("X-Amz-Expires=")
    if date_at < 0 or expires_at < 0:
        return None
    stamp, seconds = url[date_at + 11 : date_at + 27], url[expires_at + 14 :].partition("&")[0]
    try:
        signed = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expiry = signed + timedelta(seconds=int(seconds))
    except ValueError:
        return None
    return expiry.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_written: dict[tuple[str, str, str | None, str], None] = {}
"""The handouts already written by this process, oldest first (at most :data:`REMEMBERED`)."""

REMEMBERED = 4096


def audit_link(
    url: str, owner: str, job_id: str | None, request_id: str | None, client: str | None, via: str = "status"
) -> None:
    """Write the audit line of a presigned link handed out, unless this process wrote it for
    the same link, owner, client and ``via`` already. ``client``: the caller's address (for a
    webhook, the receiving host); ``via``: ``status``, ``history``, ``download``, ``start``,
    ``stream`` or ``webhook``."""
    handout = (url, owner, client, via)
    if handout in _written:
        return
    if len(_written) >= REMEMBERED:
        _written.pop(next(iter(_written)), None)  # the oldest: its link is likely past reuse
    _written[handout] = None
    audit.info(
        "presigned link for job %s (%s)",
        job_id or "-",
        via,
        extra={
            "owner": owner,
            "jobId": job_id,
            "requestId": request_id,
            "client": client,
            "expiresAt": link_expires_at(url),
            "via": via,
        },
    )
