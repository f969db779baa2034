"""The chaos run's pure parts: its seeded schedule and its invariant checks (bench/chaos)."""

from __future__ import annotations

import pytest

from bench.chaos.check import (
    Answer,
    Deliveries,
    JobSeen,
    Verdict,
    Window,
    check_answers,
    check_jobs,
    summary_line,
)
from bench.chaos.schedule import (
    DURATION,
    FAILOVER,
    KILL_API_WORKER,
    KINDS,
    STOP_REDIS,
    TARGET,
    counts,
    make_schedule,
)

pytestmark = pytest.mark.unit


def test_a_seed_replays_the_same_schedule_and_another_seed_does_not() -> None:
    assert make_schedule(7, 300) == make_schedule(7, 300)
    assert make_schedule(7, 300) != make_schedule(8, 300)


def test_a_schedule_keeps_its_bounds_and_never_overlaps_one_target() -> None:
    for seed in range(50):
        faults = make_schedule(seed, 300)
        assert 15 <= len(faults) <= 60
        assert {f.kind for f in faults} <= set(KINDS)
        busy: dict[str, float] = {}
        for fault in faults:
            assert 5 <= fault.at < 295
            low, high = DURATION.get(fault.kind, (0.0, 0.0))
            assert low <= fault.seconds <= high
            assert fault.at >= busy.get(fault.target, 0.0) - 1e-9, (seed, fault)
            busy[fault.target] = fault.at + max(fault.seconds, 3.0) + 0.5
    # over many seeds every kind comes up, and faults of different targets overlap
    every = [f for seed in range(20) for f in make_schedule(seed, 300)]
    assert set(counts(every)) == set(KINDS)
    assert any(
        b.at < a.at + a.seconds and TARGET[a.kind] != TARGET[b.kind]
        for seed in range(20)
        for a, b in zip(make_schedule(seed, 300), make_schedule(seed, 300)[1:], strict=False)
    )


def test_answers_are_judged_against_the_fault_windows() -> None:
    windows = [Window(STOP_REDIS, 10.0, 14.0), Window(KILL_API_WORKER, 30.0, 30.0)]
    answers = [
        Answer(11.0, 0.8, "status", 503, proper_503=True),  # during the stall: fine
        Answer(15.5, 0.1, "status", 503, proper_503=True),  # within the 2 s of grace: fine
        Answer(20.0, 0.1, "status", 503, proper_503=True),  # outside any fault
        Answer(12.0, 0.2, "status", 503, proper_503=False),  # a 503 without the JSON error
        Answer(30.2, 0.1, "initiate", 0),  # a cut connection when a worker was killed: fine
        Answer(40.0, 0.1, "initiate", 0),  # a cut connection for no reason
        Answer(41.0, 1.6, "status", 200),  # too slow
        Answer(42.0, 0.1, "status", 500),
    ]
    verdict = Verdict()
    check_answers(answers, windows, verdict)
    assert (verdict.during_faults_503, verdict.other_5xx, verdict.resets, verdict.slow) == (2, 3, 2, 1)
    assert len(verdict.problems) == 5 and not verdict.passed


def test_jobs_are_judged_whole() -> None:
    final = {"status": "completed", "completedAt": "t", "size": 3, "error": None, "version": 9}
    good = JobSeen("a", "acme", [70000], "sse", True, [1, 2, 9], [dict(final)], final, True)
    backwards = JobSeen("b", "acme", [70000], "poll", False, [1, 5, 4], [], final, True)
    two_ends = JobSeen("c", "acme", [70000], "sse", False, [1, 9], [final, final], final, True)
    stuck = JobSeen("d", "acme", [70000], "poll", True, [1], [], {"status": "processing"}, None)
    lost = JobSeen("e", "acme", [70000], "poll", False, [1], [], None, None)
    deliveries = Deliveries(ids={"a": ["a", "a"], "d": ["d", "x"]})
    verdict = Verdict()
    check_jobs([good, backwards, two_ends, stuck, lost], deliveries, verdict)
    assert (verdict.accepted, verdict.completed, verdict.lost, verdict.stuck) == (5, 3, 1, 1)
    assert (verdict.streams, verdict.streams_ok, verdict.callbacks, verdict.callbacks_delivered) == (2, 1, 2, 1)
    assert verdict.bundles_verified == 3
    text = "\n".join(verdict.problems)
    for expected in ("lost: job e", "stuck: job d", "backwards", "terminal events", "webhook deliveries"):
        assert expected in text
    line = summary_line(1, 60, {"stop-redis": 2}, verdict)
    assert line.startswith("chaos seed=1 seconds=60 faults[stop-redis=2] accepted=5 completed=3 lost=1 stuck=1")
    assert line.endswith("-> FAIL")


def test_failovers_come_only_with_sentinel() -> None:
    plain = [f.kind for seed in range(20) for f in make_schedule(seed, 300)]
    ha = [f.kind for seed in range(20) for f in make_schedule(seed, 300, ha=True)]
    assert FAILOVER not in plain and FAILOVER in ha
