"""The job store's runner writes, against the real Redis: a write carries the lease, a
runner that lost it cannot write, the terminal write releases it, and each write says
whether anyone listens to the job's events."""

from __future__ import annotations

import time

import pytest
from flask import Flask

from delineate.ids import new_uuid
from delineate.models import Job, JobState, Phase
from delineate.store import JobStore, LeaseLost
from delineate.store.keys import events_channel, lease_key


@pytest.fixture()
def store(app: Flask) -> JobStore:
    store: JobStore = app.extensions["delineate"].store
    return store


def _queued(store: JobStore) -> str:
    job = Job(job_id=new_uuid(), status=JobState.QUEUED, file_ids=[70000, 70007])
    store.create(job)
    return job.job_id


def test_a_runner_write_takes_and_renews_the_lease(store: JobStore) -> None:
    job_id = _queued(store)
    store.write(job_id, lease=("runner-a", 30), status=JobState.PROCESSING, phase=Phase.CHECKING)
    assert store.redis.get(lease_key(job_id)) == "runner-a"
    assert 25 < store.redis.ttl(lease_key(job_id)) <= 30


def test_a_runner_that_lost_the_lease_cannot_write(store: JobStore) -> None:
    job_id = _queued(store)
    ours, _ = store.lease_and_get(job_id, "runner-b", 30)
    assert ours
    before = store.get(job_id)
    with pytest.raises(LeaseLost):
        store.write(job_id, lease=("runner-a", 30), progress=50)
    after = store.get(job_id)
    assert before is not None and after is not None and after.version == before.version  # nothing written
    store.write(job_id, progress=10)  # a writer without a lease (the API, the sweeper) still may


def test_the_terminal_write_releases_the_lease(store: JobStore) -> None:
    job_id = _queued(store)
    store.write(job_id, lease=("runner-a", 30), status=JobState.PROCESSING)
    store.write(job_id, lease=("runner-a", 30), status=JobState.FAILED, phase=Phase.DONE, error="x")
    assert store.redis.exists(lease_key(job_id)) == 0


def test_a_write_reports_who_listens(store: JobStore) -> None:
    job_id = _queued(store)
    assert store.write(job_id, progress=1).listeners == 0
    pubsub = store.redis.pubsub()
    pubsub.subscribe(events_channel(job_id))
    deadline = time.monotonic() + 5
    while pubsub.get_message(timeout=0.1) is None and time.monotonic() < deadline:
        pass  # the subscribe confirmation
    try:
        assert store.write(job_id, progress=2).listeners == 1
    finally:
        pubsub.close()
