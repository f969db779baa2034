"""The rest of the tenants' security review (issue 24, item 5), against real Redis and gunicorn:

- the ``method`` label of the request metrics takes a fixed set of values (an odd method is
  ``other``, never a new series), and the access line keeps the method cut short;
- a tenant's SSE streams are capped over every API process (its ``max_streams``), shared in
  Redis, and a stream that ends, or whose process dies, gives its slot back;
- ``/v1/stats`` with API keys shows the caller's own numbers only;
- gunicorn listens on BIND (IPv6 in brackets).
"""

from __future__ import annotations

import runpy
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from delineate import create_app
from delineate.api.metrics import HTTP_LATENCY, HTTP_REQUESTS, METRIC_METHODS, REQUEST_METRICS, RequestObserver
from delineate.api.sse import STALE_HEARTBEATS, TenantStreams
from delineate.broker.queue import CELERY_QUEUE
from delineate.config import Settings
from delineate.models import Job, JobState, Phase
from delineate.services import build_services
from delineate.store import JobStore
from delineate.store.keys import streams_key
from tests.support.stack import ROOT, Service, completed_job, free_port, start_api, wait_for

ALICE_KEY, BOB_KEY = "alice-key-review-0001", "bob-key-review-0002"
ALICE, BOB = {"X-API-Key": ALICE_KEY}, {"X-API-Key": BOB_KEY}
ALICE_STREAMS = 2
HEARTBEAT_SECONDS = 1


def tenants_file(tmp_path: Path) -> str:
    path = tmp_path / "tenants.toml"
    path.write_text(
        f"""
[tenants.alice]
keys = ["{ALICE_KEY}"]
max_streams = {ALICE_STREAMS}

[tenants.bob]
keys = ["{BOB_KEY}"]
"""
    )
    return str(path)


def park(store: JobStore, owner: str, state: JobState = JobState.QUEUED) -> str:
    """A job of ``owner`` that no worker runs (none is started here), left in ``state``."""
    job = Job(job_id=str(uuid.uuid4()), status=JobState.QUEUED, file_ids=[70000, 70007], owner=owner)
    store.create(job)
    if state is JobState.PROCESSING:
        store.update(job.job_id, status=JobState.PROCESSING, phase=Phase.CHECKING, attempts=1)
    return job.job_id


# -- the method label --------------------------------------------------------------------------


def method_series() -> set[tuple[str, str, str]]:
    """Every (method, route, status) the request counter and histogram have a series for."""
    REQUEST_METRICS.flush()
    series = set()
    for metric in (HTTP_REQUESTS, HTTP_LATENCY):
        for family in metric.collect():
            for sample in family.samples:
                if "method" in sample.labels:
                    series.add((sample.labels["method"], sample.labels["route"], sample.labels["status"]))
    return series


def test_an_odd_method_is_counted_as_other_and_makes_no_series_of_its_own(
    make_settings: Callable[..., Settings],
) -> None:
    client = create_app(make_settings()).test_client()
    assert client.get("/v1/downloads").status_code == 200  # a route and status seen before the odd ones
    before = method_series()
    answers = {method: client.open("/v1/downloads", method=method).status_code for method in ("PURGEX", "PURGEY")}
    assert set(answers.values()) == {405}, answers
    after = method_series()
    assert {m for m, _, _ in after} <= METRIC_METHODS | {"other"}
    assert not any(m.startswith("PURGE") for m, _, _ in after)
    new = after - before
    assert new <= {("other", "unmatched", "405")}, new  # two odd methods: at most one new series
    scraped = client.get("/metrics").get_data(as_text=True)
    assert 'method="other"' in scraped and "PURGE" not in scraped
    # A third odd method, now that `other` exists: nothing new at all.
    settled = method_series()  # (with the scrape's own GET)
    assert client.open("/v1/downloads", method="MKCALENDAR").status_code == 405
    assert method_series() == settled


def test_the_access_line_keeps_the_method_cut_to_16_characters() -> None:
    written: list[tuple[Any, ...]] = []
    observer = RequestObserver()
    observer.access = type("Access", (), {"write": lambda self, *args: written.append(args)})()
    observer.record("X" * 4000, "unmatched", "/odd", 405, 0.001, "req-1", None)
    observer.record("GET", "/v1/downloads", "/v1/downloads", 200, 0.001, "req-2", None)
    assert [args[0] for args in written] == ["X" * 16, "GET"]
    assert ("other", "unmatched", "405") in method_series()


# -- SSE: each tenant's streams, over every API process ----------------------------------------


@dataclass
class Stream:
    response: httpx.Response
    lines: Iterator[str]  # the body's lines, from where the test stopped reading

    @property
    def status_code(self) -> int:
        return self.response.status_code

    def close(self) -> None:
        self.response.close()


@dataclass
class TwoApis:
    settings: Settings
    bases: list[str]
    apis: list[Service]
    store: JobStore
    redis: redis.Redis
    clients: list[httpx.Client] = field(default_factory=list)

    def open(self, base: str, job_id: str, headers: dict[str, str]) -> Stream:
        """A stream, left open (its `connected` event read) or answered with an error."""
        client = httpx.Client(timeout=httpx.Timeout(10.0))
        self.clients.append(client)
        request = client.build_request("GET", f"{base}/v1/download/stream/{job_id}", headers=headers)
        response = client.send(request, stream=True)
        stream = Stream(response, response.iter_lines())
        if response.status_code == 200:
            assert next(stream.lines) == "event: connected"
        else:
            response.read()
        return stream

    def held(self, owner: str) -> int:
        """The owner's streams as every API process counts them (stale entries left out)."""
        oldest = time.time() - HEARTBEAT_SECONDS * STALE_HEARTBEATS
        return int(self.redis.zcount(streams_key(owner), oldest, "+inf"))


@pytest.fixture(scope="module")
def two_apis(
    make_settings: Callable[..., Settings], workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwoApis]:
    """Two gunicorn API processes (one worker each) on one Redis, with tenants alice (at most
    ALICE_STREAMS streams) and bob (the default), a heartbeat a second, and no worker."""
    settings = make_settings(tenants_file=tenants_file(tmp_path_factory.mktemp("tenants")))
    started = [
        start_api(settings, workdir, f"api-review-{n}", workers=1, SSE_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS))
        for n in (1, 2)
    ]
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    stack = TwoApis(settings, [b for _, b in started], [s for s, _ in started], build_services(settings).store, client)
    yield stack
    for http in stack.clients:
        http.close()
    for api in stack.apis:
        api.stop()
    client.close()


def test_a_tenant_past_its_streams_over_two_processes_gets_503_while_another_streams(two_apis: TwoApis) -> None:
    s = two_apis
    first, second = s.bases
    jobs = [park(s.store, "alice") for _ in range(3)]
    one = s.open(first, jobs[0], ALICE)
    two = s.open(second, jobs[1], ALICE)
    assert (one.status_code, two.status_code) == (200, 200)
    assert s.held("alice") == ALICE_STREAMS
    # Each process holds one of alice's streams, far below SSE_MAX_STREAMS: only the shared
    # count can refuse the third, on either process.
    for base in (first, second):
        refused = s.open(base, jobs[2], ALICE).response
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        body = refused.json()
        assert body["error"] == "service_unavailable" and f"maximum of {ALICE_STREAMS} open streams" in body["message"]
        assert body["requestId"] == refused.headers["X-Request-ID"]
    # Another tenant is not affected.
    bob = s.open(first, park(s.store, "bob"), BOB)
    assert bob.status_code == 200
    assert s.held("bob") == 1 and s.held("alice") == ALICE_STREAMS
    # A stream that ends gives its slot back (the server sees the client go within a second).
    one.close()
    wait_for(lambda: s.held("alice") == ALICE_STREAMS - 1, 5, "alice's first stream to be released")
    again = s.open(second, jobs[2], ALICE)
    assert again.status_code == 200
    for response in (two, again, bob):
        response.close()
    wait_for(lambda: s.held("alice") == 0 and s.held("bob") == 0, 5, "every stream released")


def test_a_stream_that_reaches_its_end_releases_its_slot(two_apis: TwoApis) -> None:
    s = two_apis
    job_id = completed_job(s.store, owner="alice")  # terminal: connected, completed, closed
    for _ in range(ALICE_STREAMS + 1):  # more streams than the cap, one after the other
        response = s.open(s.bases[0], job_id, ALICE)
        assert response.status_code == 200
        lines = [line for line in response.lines if line.startswith("event:")]
        assert lines == ["event: completed"]
        response.close()
    wait_for(lambda: s.held("alice") == 0, 5, "the finished streams' slots")


def test_heartbeats_keep_a_slot_and_a_dead_process_gives_it_back(two_apis: TwoApis, workdir: Path) -> None:
    s = two_apis
    first, second = s.bases
    jobs = [park(s.store, "alice") for _ in range(3)]
    kept = s.open(first, jobs[0], ALICE)
    assert kept.status_code == 200
    doomed = s.open(second, jobs[1], ALICE)
    assert doomed.status_code == 200
    # Past the stale window, heartbeats have kept both entries fresh: still full.
    time.sleep(HEARTBEAT_SECONDS * (STALE_HEARTBEATS + 1))
    assert s.held("alice") == ALICE_STREAMS
    assert s.open(first, jobs[2], ALICE).status_code == 503
    # The second process dies with its stream open: nothing removes the entry, but nothing
    # refreshes it either, so it stops counting after STALE_HEARTBEATS heartbeats.
    s.apis[1].kill()
    doomed.close()

    def reopened() -> bool:
        response = s.open(first, jobs[2], ALICE)
        ok = response.status_code == 200
        response.close()
        return ok

    wait_for(reopened, HEARTBEAT_SECONDS * (STALE_HEARTBEATS + 3), "the dead process's slot", interval=0.3)
    kept.close()
    # The second process again, for any test after this one.
    s.apis[1], s.bases[1] = start_api(
        s.settings, workdir, "api-review-2b", workers=1, SSE_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS)
    )


def test_the_tenant_count_survives_a_redis_that_does_not_answer() -> None:
    """At stream start an unreachable Redis is an error the view turns into 503; a heartbeat
    or a release that cannot reach it is only logged."""
    streams = TenantStreams(redis.Redis(port=free_port(), socket_connect_timeout=0.5), HEARTBEAT_SECONDS)
    with pytest.raises(redis.ConnectionError):
        streams.acquire("alice", 1)
    streams.refresh("alice", "some-stream")
    streams.release("alice", "some-stream")


# -- /v1/stats, per tenant ---------------------------------------------------------------------


def test_stats_with_keys_show_the_callers_own_jobs_only(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(api_keys={ALICE_KEY: "alice", BOB_KEY: "bob"}))
    client = app.test_client()
    store = app.extensions["delineate"].store
    for _ in range(3):
        park(store, "alice")
    park(store, "alice", JobState.PROCESSING)
    completed_job(store, owner="alice")
    park(store, "bob")
    for _ in range(2):
        completed_job(store, owner="bob")
    cancelled = park(store, "bob")
    store.update(cancelled, status=JobState.CANCELLED)
    alice, bob = client.get("/v1/stats", headers=ALICE), client.get("/v1/stats", headers=BOB)
    assert alice.status_code == bob.status_code == 200
    assert alice.get_json() == {
        "queueDepth": 3,
        "jobsInProgress": 1,
        "jobsFinished": {"completed": 1, "failed": 0, "cancelled": 0},
    }
    assert bob.get_json() == {
        "queueDepth": 1,
        "jobsInProgress": 0,
        "jobsFinished": {"completed": 2, "failed": 0, "cancelled": 1},
    }
    assert client.get("/v1/stats").status_code == 401  # no key, no numbers


def test_stats_in_open_mode_stay_the_whole_services(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    app = create_app(settings)
    client = app.test_client()
    store = app.extensions["delineate"].store
    park(store, "")
    broker = redis.Redis.from_url(settings.redis_url)
    broker.lpush(CELERY_QUEUE, "a message waiting", "another")  # the service's queue, whoever's
    try:
        body = client.get("/v1/stats").get_json()
    finally:
        broker.delete(CELERY_QUEUE)
        broker.close()
    assert body["queueDepth"] == 2  # the broker's queue, not a tenant's queued jobs
    assert set(body) == {"queueDepth", "jobsInProgress", "jobsFinished"}


# -- BIND ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "expected"),
    [(None, "127.0.0.1:3100"), ("0.0.0.0", "0.0.0.0:3100"), ("::1", "[::1]:3100"), ("[::]", "[::]:3100")],
)
def test_gunicorn_listens_on_bind(
    bind: str | None, expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # the config sets it; restored after
    monkeypatch.setenv("PORT", "3100")
    if bind is None:
        monkeypatch.delenv("BIND", raising=False)
    else:
        monkeypatch.setenv("BIND", bind)
    config = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    assert config["bind"] == expected
