"""Shared bundles: which bundle each set of file ids last got, and which jobs use it.

A mixin of :class:`~delineate.store.jobstore.JobStore` (``jobs/reuse.py`` decides when a
job reuses a bundle). Two kinds of key (:mod:`delineate.store.keys`):

- ``reuse:{ids digest}``: the latest bundle built for that id set (:class:`BundleRecord`),
  written after its builder completed; TTL JOB_TTL_SECONDS. A hint only: a job that finds
  it still checks its sources' ETags, and the claim checks that the bundle is alive.
- ``bundle-refs:{builder}``: the jobs completed with that bundle, made by the first reuse.

A job joins a bundle's users in the very write that completes it (``update.lua`` with
``lua/reuse.lua``'s claim), so no job ever points at a bundle that is not counted; a bundle
is deleted only once none of its users is completed, unrevoked and unexpired
(:meth:`Bundles.release_expired` for the janitor, :meth:`Bundles.release_revoked` for
revocation, ``lua/release_bundles.lua``). Both run the check and the deletion of
``bundle-refs`` as one script, and the caller deletes the object after it: a claim can
never land between the last user leaving and the deletion. A caller that dies before the
object's deletion leaves it to the next sweep, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
import redis

from delineate.redis_io.base import DirectScript, Lane
from delineate.store.keys import EXPIRY_KEY, bundle_refs_key, reuse_key
from delineate.store.scripts import source


class BundleGone(Exception):
    """The shared bundle a job was to complete with is gone or going: build another."""


@dataclass(frozen=True)
class BundleRecord:
    """The latest bundle built for one id set."""

    sources: str  # digest of the ids and their sources' ETags (jobs/reuse.py)
    builder: str  # the job that built it (bundles/{builder}.zip)
    result: dict[str, Any]  # its builder's result fields, as a job completed with it writes them

    def to_json(self) -> bytes:
        return orjson.dumps({"sources": self.sources, "builder": self.builder, "result": self.result})


class Bundles:
    """The job store's shared bundles (``redis``, ``direct`` and ``ttl_seconds`` are the store's)."""

    redis: redis.Redis
    direct: Lane
    ttl_seconds: int

    def bundle_record(self, ids_digest: str) -> BundleRecord | None:
        raw = self.direct.command("GET", reuse_key(ids_digest))
        if not raw:
            return None
        data = orjson.loads(raw)
        return BundleRecord(data["sources"], data["builder"], data["result"])

    def register_bundle(self, ids_digest: str, record: BundleRecord) -> None:
        """Make ``record`` the bundle of its id set (the latest wins: an earlier one keeps its
        users and goes with them)."""
        self.direct.command("SET", reuse_key(ids_digest), record.to_json(), "EX", self.ttl_seconds)

    @staticmethod
    def claim_key(builder: str) -> str:
        """The key a completing write names to join the users of ``builder``'s bundle."""
        return bundle_refs_key(builder)

    @cached_property
    def _release_bundles(self) -> DirectScript:
        return self.direct.script(source("release_bundles"))

    def release_expired(self, job_ids: list[str]) -> list[str]:
        """Of these jobs whose hash expired, the ones whose bundle other jobs still use: each
        is put back in ``sweep:expiry`` for a later look and must not be forgotten now."""
        if not job_ids:
            return []
        _, kept = self._release_bundles(keys=[EXPIRY_KEY], args=["expired", *job_ids])
        return [str(j) for j in kept]

    def release_revoked(self, job_ids: list[str]) -> list[str]:
        """These revoked jobs stop using their bundle (their own, or the one they reused).
        Returns the job ids whose ``bundles/{id}.zip`` no job uses any more: delete them."""
        if not job_ids:
            return []
        bundles, _ = self._release_bundles(keys=[EXPIRY_KEY], args=["revoked", *job_ids])
        return list(dict.fromkeys(str(j) for j in bundles))
