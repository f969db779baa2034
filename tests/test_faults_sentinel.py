"""Redis behind Sentinel: the whole stack finds the primary through it, and survives its loss.

The module's fixtures start a primary, a replica and three sentinels (``tests/sentinel_stack.py``)
and the stack (gunicorn API, a Celery worker, the sweeper) pointed at the sentinels only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from delineate.config import Settings
from delineate.progress import job_key
from tests.sentinel_stack import SentinelGroup, start_sentinel_group
from tests.stack import Service, poll_status, start_api, start_sweeper, start_worker


def sentinel_settings(make_settings: Callable[..., Settings], group: SentinelGroup, **overrides: Any) -> Settings:
    # REDIS_URL's host and port point nowhere: only its database number is used.
    return make_settings(
        redis_url="redis://127.0.0.1:1/0",
        redis_sentinels=group.sentinels_setting,
        **overrides,
    )


@pytest.fixture()
def group(workdir: Path, request: pytest.FixtureRequest) -> Iterator[SentinelGroup]:
    group = start_sentinel_group(workdir, f"ha-{request.node.name[:40]}")
    yield group
    group.stop()


def _stack(settings: Settings, workdir: Path, name: str, concurrency: int = 20) -> tuple[list[Service], str]:
    services = [start_worker(settings, workdir, f"worker-{name}", concurrency=concurrency)]
    try:
        services.append(start_sweeper(settings, workdir, f"sweeper-{name}"))
        api, base = start_api(settings, workdir, f"api-{name}", workers=2)
        services.append(api)
    except BaseException:
        for service in services:
            service.stop()
        raise
    return services, base


def test_a_job_completes_through_sentinel(make_settings: Any, workdir: Path, group: SentinelGroup) -> None:
    settings = sentinel_settings(make_settings, group)
    services, base = _stack(settings, workdir, "sentinel-smoke")
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/health").json()["checks"]["redis"] == "ok"
            accepted = http.post("/v1/download/initiate", json={"file_ids": [70000, 70007]})
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["jobId"]
            done = poll_status(lambda j: http.get(f"/v1/download/status/{j}").json(), job_id, {"completed", "failed"})
            assert done["status"] == "completed", done
        # The record is on the replica too: the stack wrote to the primary Sentinel named.
        replica = redis.Redis(port=group.replica_port, decode_responses=True)
        assert replica.hget(job_key(job_id), "status") == "completed"
        replica.close()
    finally:
        for service in services:
            service.stop()
