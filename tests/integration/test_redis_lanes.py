"""The hot path's Redis lanes against a real redis-server: replies, errors, scripts,
a Redis that hangs (SIGSTOP) and one that restarts.

``DirectRedis`` (threads: the Celery worker, the test client) runs here; the gevent
lane (``PipelinedRedis``, the API's gunicorn workers) runs in a process of its own that
gevent has patched (``tests/support/lane_probe.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from delineate.redis_io import lane_for
from delineate.redis_io.direct import DirectRedis
from tests.support.stack import ROOT, Service, start_redis


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[tuple[Service, int]]:
    service, port = start_redis(tmp_path)
    yield service, port
    if service.process is not None and service.running():
        os.kill(service.pid, signal.SIGCONT)
    service.stop()


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True, socket_timeout=timeout)


def test_threads_get_the_direct_lane(own_redis: tuple[Service, int]) -> None:
    assert isinstance(lane_for(_client(own_redis[1])), DirectRedis)


def test_direct_lane_replies_errors_and_scripts(own_redis: tuple[Service, int]) -> None:
    client = _client(own_redis[1])
    lane = DirectRedis.for_client(client)
    assert lane.execute(("SET", "a", "1"), ("INCR", "a"), ("GET", "a")) == ["OK", 2, "2"]
    client.set("text", "x")
    with pytest.raises(redis.ResponseError):
        lane.execute(("INCR", "text"), ("GET", "a"))
    assert lane.execute(("INCR", "text"), ("GET", "a"), raise_on_error=False)[1] == "2"
    assert lane.command("GET", "a") == "2"  # the connection came back clean
    script = lane.script("return tonumber(ARGV[1]) + 1")
    assert script(args=[1]) == 2
    client.script_flush()
    assert script(args=[2]) == 3  # EVAL again after Redis forgot it


def test_direct_lane_under_threads_stays_within_its_connections(own_redis: tuple[Service, int]) -> None:
    lane = DirectRedis(_client(own_redis[1]).connection_pool, max_connections=5)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(200):
                assert lane.command("ECHO", f"{threading.get_ident()}-{i}") == f"{threading.get_ident()}-{i}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert lane._open <= 5
    assert int(_client(own_redis[1]).info("clients")["connected_clients"]) <= 6


def test_direct_lane_times_out_on_a_hung_redis(own_redis: tuple[Service, int]) -> None:
    service, port = own_redis
    lane = DirectRedis.for_client(_client(port, timeout=1.0))
    lane.command("PING")
    os.kill(service.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            lane.command("PING")
        assert time.monotonic() - began < 1.5
    finally:
        os.kill(service.pid, signal.SIGCONT)
    assert lane.command("PING") == "PONG"


def test_direct_lane_survives_a_restart(own_redis: tuple[Service, int], tmp_path: Path) -> None:
    service, port = own_redis
    lane = DirectRedis.for_client(_client(port))
    lane.command("PING")
    service.stop()
    with pytest.raises(redis.ConnectionError):
        lane.command("PING")
    service.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            assert lane.command("PING") == "PONG"
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _probe(port: int, scenario: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.lane_probe", str(port), scenario],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_gevent_lane_keeps_every_callers_replies_apart(own_redis: tuple[Service, int]) -> None:
    with _probe(own_redis[1], "concurrent") as probe:
        out, _ = probe.communicate(timeout=60)
    seen = json.loads(out.splitlines()[-1])
    assert seen["lane"] == "PipelinedRedis"
    assert seen["own_replies"] == 300 and seen["counter"] == 300
    assert seen["error"] == "ResponseError" and seen["after_error"] == "after"
    assert seen["script"] == "x" and seen["script_after_flush"] == "y"
    assert seen["hash"] == {"a": "1"}


def test_gevent_lane_times_out_on_a_hung_redis(own_redis: tuple[Service, int]) -> None:
    service, port = own_redis
    with _probe(port, "stopped") as probe:
        assert probe.stdout is not None and probe.stdin is not None
        assert json.loads(probe.stdout.readline())["ready"]
        os.kill(service.pid, signal.SIGSTOP)
        try:
            probe.stdin.write("go\n")
            probe.stdin.flush()
            seen = json.loads(probe.stdout.readline())
            probe.wait(10)
        finally:
            os.kill(service.pid, signal.SIGCONT)
    assert seen["error"] == "TimeoutError"
    assert seen["seconds"] < 1.5


def test_gevent_lane_survives_a_restart(own_redis: tuple[Service, int]) -> None:
    service, port = own_redis
    with _probe(port, "restart") as probe:
        assert probe.stdout is not None and probe.stdin is not None
        assert json.loads(probe.stdout.readline())["ready"]
        service.stop()
        service.start()
        time.sleep(0.5)
        probe.stdin.write("go\n")
        probe.stdin.flush()
        seen = json.loads(probe.stdout.readline())
        probe.wait(10)
    # The stale connection is found out and the call sent again on a new one.
    assert seen["results"] == ["PONG", "PONG", "PONG"]
