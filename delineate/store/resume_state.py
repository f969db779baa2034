"""The stored state of a job's bundle in progress (``resume:{jobId}``), so that the run
after a worker's death continues it (``delineate/jobs/resume.py``) instead of starting over.

One hash per job, apart from the job's own (status reads stay small), with the job's TTL:

- ``fingerprint``: what the bundle is made of (ids, sizes, ETags, timestamp, part plan);
  a run whose fingerprint differs starts afresh
- ``upload:{n}``: zip ``n``'s open multipart upload (``n`` 0 for a single zip, else the
  part's number), JSON ``{"id", "parts": [[number, etag]...], "size"}``
- ``entry:{n}:{i}``: its ``i``-th source entry, JSON ``[file_id, size, crc, offset, sha256]``
- ``done:{n}``: zip ``n`` is stored whole, JSON ``{"size", "sha256"}``

Each write is one MULTI (an upload's parts and the entries written before them go
together) and refreshes the TTL.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from delineate.store.keys import resume_key


class ResumeState:
    def __init__(self, client: redis.Redis, job_id: str, ttl_seconds: int) -> None:
        self.redis = client
        self.key = resume_key(job_id)
        self.ttl = ttl_seconds

    def load(self) -> dict[str, str]:
        raw: dict[Any, Any] = self.redis.hgetall(self.key)  # type: ignore[assignment]
        return {_text(k): _text(v) for k, v in raw.items()}

    def reset(self, fingerprint: str) -> None:
        """Forget every earlier run's state: the bundle is not the one it was writing."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, "fingerprint", fingerprint)
            pipe.expire(self.key, self.ttl)
            pipe.execute()

    def save(self, fields: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
        """Write ``fields`` (JSON-encoded) and delete ``drop``, together."""
        with self.redis.pipeline(transaction=True) as pipe:
            if fields:
                pipe.hset(self.key, mapping={name: json.dumps(value) for name, value in fields.items()})
            if drop:
                pipe.hdel(self.key, *drop)
            pipe.expire(self.key, self.ttl)
            pipe.execute()

    def delete(self) -> None:
        self.redis.delete(self.key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
