"""Fair limits: IPv6 callers counted per /64, a summary whose cost does not grow with the
history, and estimates that run their HEADs side by side within a budget and cost more
than one request."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient

from delineate import create_app
from delineate.api import sources
from delineate.api.blueprints import downloads
from delineate.api.fanout import PENDING, bounded_map, map_within
from delineate.dev.seed import SAMPLE_IDS
from delineate.models import JobState
from delineate.store.keys import count_key

ESTIMATE = "/v1/download/estimate"


def _client(settings: Any) -> FlaskClient:
    return create_app(settings).test_client()


# -- IPv6 per /64 ----------------------------------------------------------------------------------


def test_ipv6_callers_share_one_counter_per_64(make_settings: Any) -> None:
    client = _client(make_settings(rate_limit_max_requests=3))

    def get(address: str) -> int:
        return client.get("/", environ_base={"REMOTE_ADDR": address}).status_code

    same_64 = ["2001:db8:aa:bb::1", "2001:db8:aa:bb:ffff::2", "2001:db8:aa:bb:1:2:3:4"]
    assert [get(a) for a in same_64] == [200, 200, 200]
    assert get("2001:db8:aa:bb:dead:beef:0:1") == 429  # a fourth address in the same /64: no new bucket
    assert get("2001:db8:aa:bc::1") == 200  # the next /64 is another caller
    assert get("::ffff:192.0.2.1") == 200 and get("192.0.2.1") == 200  # mapped IPv4 is that IPv4
    assert get("192.0.2.1") == 200 and get("::ffff:192.0.2.1") == 429


def test_forwarded_addresses_behind_a_trusted_proxy_are_keyed_the_same_way(make_settings: Any) -> None:
    client = _client(make_settings(rate_limit_max_requests=2, trusted_proxy_hops=1))

    def get(forwarded: str) -> int:
        headers = {"X-Forwarded-For": forwarded}
        return client.get("/", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code

    assert get("2001:db8:1:2::5") == 200 and get("spoofed, 2001:db8:1:2::6") == 200  # the proxy's entry counts
    assert get("2001:db8:1:2:ffff::7") == 429
    for junk in ("", "not-an-address", "1.2.3.4.5", "[::1]:80", "x" * 500, "::ffff:999.1.1.1", "\u00e9"):
        assert get(junk) in (200, 429)  # junk is a key of its own (cut to 64 characters), never a 5xx


# -- summary from counters -------------------------------------------------------------------------


def test_summary_follows_every_state_change_and_expiry(make_settings: Any) -> None:
    settings = make_settings(job_ttl_seconds=3, api_keys={"k1": "ann"}, max_active_jobs_per_key=100)
    app = create_app(settings)
    client, store = app.test_client(), app.extensions["delineate"].store
    headers = {"X-API-Key": "k1"}
    ids = [
        client.post("/v1/download/initiate", json={"file_ids": [70000]}, headers=headers).get_json()["jobId"]
        for _ in range(4)
    ]
    store.update(ids[0], status=JobState.PROCESSING)
    store.update(ids[0], status=JobState.COMPLETED)
    store.update(ids[1], status=JobState.PROCESSING)
    store.update(ids[1], bytesDone=10)  # a progress write: same state, counted once
    store.update(ids[2], status=JobState.CANCELLED)
    summary = client.get("/v1/downloads/summary", headers=headers).get_json()
    assert summary == {"counts": {"queued": 1, "processing": 1, "completed": 1, "failed": 0, "cancelled": 1},
                       "total": 4}  # fmt: skip
    time.sleep(1.5)
    assert store.set_callback(ids[0], {"status": "delivered", "attempts": 1, "lastError": None})  # TTL refreshed
    store.update(ids[1], bytesDone=20)  # so does a progress write
    time.sleep(2.0)  # the other two records expire; the counters learn it from their scores
    assert store.get(ids[2]) is None and store.get(ids[3]) is None
    summary = client.get("/v1/downloads/summary", headers=headers).get_json()
    assert summary["counts"] == {"queued": 0, "processing": 1, "completed": 1, "failed": 0, "cancelled": 0}


def test_summary_cost_does_not_grow_with_the_history(make_settings: Any) -> None:
    settings = make_settings(api_keys={"k2": "bulk"})
    app = create_app(settings)
    client, redis = app.test_client(), app.extensions["delineate"].redis
    now = int(time.time())
    # 200,000 completed jobs in the owner's history, half of them long expired.
    pipe = redis.pipeline(transaction=False)
    for start in range(0, 200_000, 10_000):
        pipe.zadd(count_key("bulk", "completed"), {f"job-{n}": now + (3600 if n % 2 else -3600)
                                                   for n in range(start, start + 10_000)})  # fmt: skip
    pipe.execute()
    client.get("/v1/downloads/summary", headers={"X-API-Key": "k2"})  # warm up
    began = time.perf_counter()
    for _ in range(20):
        summary = client.get("/v1/downloads/summary", headers={"X-API-Key": "k2"}).get_json()
    per_call = (time.perf_counter() - began) / 20
    assert summary["counts"]["completed"] == 100_000 and summary["total"] == 100_000
    assert per_call < 0.05, f"{per_call * 1000:.1f} ms per summary"  # a scan of 200,000 would take far longer


# -- estimate: side by side, within a budget, at a cost ---------------------------------------------

THOUSAND = [*SAMPLE_IDS, *(90_000 + n for n in range(1000 - len(SAMPLE_IDS)))]


def test_a_thousand_ids_answer_within_2_s_under_gunicorn(api_server: str) -> None:
    timings = []
    with httpx.Client(base_url=api_server, timeout=30) as http:
        http.post(ESTIMATE, json={"file_ids": THOUSAND[:20]})  # warm connections
        for _ in range(3):  # the best of three: the machine is shared with other work
            began = time.monotonic()
            response = http.post(ESTIMATE, json={"file_ids": THOUSAND})
            timings.append(time.monotonic() - began)
            assert response.status_code == 200, response.text
            if timings[-1] < 2.0:
                break
    body = response.json()
    assert sorted(body["availableFileIds"]) == sorted(SAMPLE_IDS) and len(body["missingFileIds"]) == 1000 - len(
        SAMPLE_IDS
    )
    assert body["availableFileIds"] == [i for i in THOUSAND if i in set(SAMPLE_IDS)]  # the order as sent
    assert min(timings) < 2.0, f"1,000 ids took {', '.join(f'{t:.2f}' for t in timings)} s"


def test_an_estimate_counts_one_request_per_100_ids(make_settings: Any) -> None:
    client = _client(make_settings(rate_limit_max_requests=15))
    first = client.post(ESTIMATE, json={"file_ids": THOUSAND})
    assert first.status_code == 200 and first.headers["RateLimit-Remaining"] == "5"  # 10 of 15 used
    assert client.post(ESTIMATE, json={"file_ids": [70000] * 5}).headers["RateLimit-Remaining"] == "4"
    refused = client.post(ESTIMATE, json={"file_ids": THOUSAND})
    assert refused.status_code == 429 and refused.get_json()["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1


@pytest.mark.serial  # times an answer against its budget: not beside another test
def test_an_estimate_past_its_budget_names_what_it_did_not_check(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downloads, "ESTIMATE_BUDGET_SECONDS", 0.3)
    monkeypatch.setattr(sources, "LIST_MIN_IDS", 1_000_000)  # HEADs only (a LIST settles these at once)
    ids = [*THOUSAND, *(200_000 + n for n in range(9000))]  # 10,000: more than 0.3 s of HEADs
    began = time.monotonic()
    response = client.post(ESTIMATE, json={"file_ids": ids})
    # Answered at its budget, not after every HEAD (5-10 s for these ids here); 10,000 ids'
    # validation and bookkeeping took up to 2.0 s on this machine, alone.
    assert time.monotonic() - began < 4.0
    body = response.get_json()
    assert response.status_code == 200, body
    checked, unchecked = body["availableFileIds"] + body["missingFileIds"], body["uncheckedFileIds"]
    assert checked and unchecked, (len(checked), len(unchecked))
    assert sorted(checked + unchecked) == sorted(ids) and set(body["availableFileIds"]) <= set(SAMPLE_IDS)
    assert unchecked == [i for i in ids if i in set(unchecked)]  # in the order sent


@pytest.mark.serial  # times an answer against its budget: not beside another test
def test_an_estimate_the_store_never_answers_is_503_not_a_hang(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downloads, "ESTIMATE_BUDGET_SECONDS", 0.5)
    with socket.socket() as silent:  # a store that takes connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        client = _client(make_settings(s3_endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}"))
        began = time.monotonic()
        response = client.post(ESTIMATE, json={"file_ids": THOUSAND[:50]})
        took = time.monotonic() - began
    assert response.status_code == 503 and response.get_json()["error"] == "storage_unavailable"
    assert took < 1.5


def test_bounded_map_keeps_order_and_bounds_what_is_in_flight() -> None:
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def slow_square(n: int) -> int:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        time.sleep(0.005)
        with lock:
            in_flight[0] -= 1
        return n * n

    assert bounded_map(slow_square, list(range(100)), 8, 10) == [n * n for n in range(100)]
    assert in_flight[1] <= 8
    with pytest.raises(TimeoutError):
        bounded_map(lambda n: time.sleep(0.2), list(range(50)), 2, 0.1)
    with pytest.raises(ZeroDivisionError):
        bounded_map(lambda n: 1 // n, [3, 2, 1, 0], 2, 5)


def test_map_within_answers_by_its_budget_with_what_finished() -> None:
    def nap(n: int) -> int:
        time.sleep(1.0 if n >= 10 else 0.001)
        return n

    began = time.monotonic()
    results = map_within(nap, list(range(20)), 20, 0.3)
    assert time.monotonic() - began < 0.8  # not the 1 s the slow half takes
    assert results[:10] == list(range(10)) and all(r is PENDING for r in results[10:])
    assert map_within(nap, [1, 2, 3], 2, 5) == [1, 2, 3]
    assert map_within(nap, [], 2, 5) == []
    with pytest.raises(ZeroDivisionError):
        map_within(lambda n: 1 // n, [3, 2, 1, 0], 2, 5)
