"""API keys and job ownership.

When API_KEYS is set, every ``/v1`` route needs ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``; the key's name owns the jobs it creates, and another key's jobs
look like unknown ones (404), so a job id alone reveals nothing. With no keys the
service is open and every job has the owner ``""``.

Keys are compared with :func:`hmac.compare_digest` against every configured key, and
are never logged (only the owner's name is).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from flask import Request, current_app, g

from delineate.api.flask_app import services
from delineate.errors import JobNotFound, Unauthorized
from delineate.models import Job

PROTECTED_PREFIX = "/v1/"
"""Paths under this prefix need a key when keys are configured; the rest stay open."""


def presented_key(header: Callable[[str], str | None]) -> str | None:
    """The key a request presents, given a lookup of its headers by name."""
    scheme, _, value = (header("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return header("X-API-Key") or None


def _presented_key(req: Request) -> str | None:
    return presented_key(req.headers.get)


def owner_for(presented: str | None, keys: dict[str, str]) -> str | None:
    """The name owning ``presented``, or None; constant time in the key's content."""
    if not presented:
        return None
    found: str | None = None
    candidate = presented.encode()
    for key, name in keys.items():
        # No early exit: every configured key is compared, whatever matches.
        if hmac.compare_digest(candidate, key.encode()):
            found = name
    return found


def require_key(req: Request, owner: str | None) -> None:
    """Before each request: 401 on a protected path without a valid key."""
    if owner is not None or req.method == "OPTIONS":  # preflights carry no key
        return
    if req.path.startswith(PROTECTED_PREFIX):
        sent = _presented_key(req) is not None
        raise Unauthorized(
            "The API key is not valid."
            if sent
            else "An API key is required: send Authorization: Bearer KEY or X-API-Key: KEY.",
            headers={"WWW-Authenticate": 'Bearer realm="delineate"'},
        )


def current_owner() -> str:
    """The caller's owner name: the key's name, or ``""`` in open mode (or without a key)."""
    return g.get("owner") or ""


def load_owned_job(job_id: str) -> Job:
    """The job ``job_id`` (a canonical id) if the caller may see it.

    :raise JobNotFound: unknown, expired, or owned by another API key (the same 404,
        so a job id reveals nothing about other keys' jobs).
    """
    svc = services()
    command = svc.store.read_command(job_id)
    prefetched = g.pop("prefetched", None)  # read with the rate-limit hit (security.Edge)
    if prefetched is not None and tuple(prefetched[0]) == command:
        job = svc.store.job_from_reply(prefetched[1])
    else:
        job = svc.store.get(job_id)
    if job is None or not current_app.extensions["delineate_edge"].may_see(job.owner, current_owner()):
        raise JobNotFound(f"No job {job_id} (unknown, or expired after {svc.settings.job_ttl_seconds} s).")
    return job
