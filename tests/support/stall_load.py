"""Load for the stall tests: several callers per route, each answer timed, and the numbers the
tests assert on (p99 and max over a stall, the time back to 2xx after it)."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

Call = Callable[[httpx.Client], httpx.Response]
"""One request of a route, made with the caller's own client."""


@dataclass(frozen=True)
class Answer:
    route: str
    began: float  # time.monotonic()
    seconds: float
    status: int  # 0: no HTTP answer at all (a transport error, in ``text``)
    headers: dict[str, str]
    text: str

    @property
    def ended(self) -> float:
        return self.began + self.seconds

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.text)


def _read_text(response: httpx.Response) -> str:
    try:
        return response.text
    except httpx.ResponseNotRead:  # a stream left after its first event
        return ""


class RouteLoad:
    """``callers`` threads per route, each calling its route in a loop (``pause`` seconds
    between calls, one keep-alive client per thread) until :meth:`stop`. ``callers`` and
    ``pause`` may differ by route (``per_route``)."""

    def __init__(
        self,
        base: str,
        calls: dict[str, Call],
        callers: int = 3,
        pause: float = 0.05,
        per_route: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        self.base = base
        self.calls = calls
        self.shape = {route: (per_route or {}).get(route, (callers, pause)) for route in calls}
        self.answers: list[Answer] = []  # (list.append is atomic: no lock)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._caller, args=(route,), name=f"load-{route}-{n}", daemon=True)
            for route in calls
            for n in range(self.shape[route][0])
        ]

    def start(self) -> RouteLoad:
        for thread in self._threads:
            thread.start()
        return self

    def warm(self, timeout: float = 20.0) -> None:
        """Wait until every route has answered 2xx (a new process's first requests build its
        clients), then a moment more so that each has answered a few times."""
        deadline = time.monotonic() + timeout
        while {a.route for a in list(self.answers) if a.ok} != set(self.calls):
            assert time.monotonic() < deadline, f"not every route answered 2xx within {timeout:.0f} s"
            time.sleep(0.05)
        time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _caller(self, route: str) -> None:
        call, pause = self.calls[route], self.shape[route][1]
        with httpx.Client(base_url=self.base, timeout=10) as http:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    response = call(http)
                    answer = Answer(
                        route,
                        began,
                        time.monotonic() - began,
                        response.status_code,
                        dict(response.headers),
                        _read_text(response),
                    )
                except httpx.HTTPError as exc:
                    answer = Answer(route, began, time.monotonic() - began, 0, {}, repr(exc))
                self.answers.append(answer)
                self._stop.wait(pause)

    def began_within(self, start: float, end: float) -> dict[str, list[Answer]]:
        """Each route's answers to the calls made in [start, end)."""
        found: dict[str, list[Answer]] = {route: [] for route in self.calls}
        for answer in list(self.answers):
            if start <= answer.began < end:
                found[answer.route].append(answer)
        return found


def percentile(values: Iterable[float], share: float) -> float:
    """The nearest-rank percentile (``share`` 0.99: p99); with fewer than 100 values, p99 is the max."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def recovery_seconds(answers: list[Answer], resumed_at: float) -> float:
    """How long after ``resumed_at`` the last answer other than 2xx came (0: none came)."""
    late = [a.ended - resumed_at for a in answers if a.ended > resumed_at and not a.ok]
    return max(late, default=0.0)


def report(title: str, stalled: dict[str, list[Answer]], recovered: dict[str, float]) -> str:
    """One line per route: answers over the stall, their p50/p99/max, the recovery time."""
    lines = [title]
    for route, answers in stalled.items():
        seconds = [a.seconds for a in answers]
        statuses = sorted({a.status for a in answers})
        lines.append(
            f"  {route:<9} n={len(seconds):<4} p50={percentile(seconds, 0.5) * 1000:5.0f} ms"
            f"  p99={percentile(seconds, 0.99) * 1000:5.0f} ms  max={max(seconds) * 1000:5.0f} ms"
            f"  statuses={statuses}  back in {recovered[route]:.2f} s"
        )
    return "\n".join(lines)


P99_WITHIN_SECONDS = 1.0
"""Every route's p99 over a stall (design.md, "Failure behaviour")."""
MAX_WITHIN_SECONDS = 1.5
"""No single answer over a stall slower than this (the chaos run's bound)."""
RECOVER_WITHIN_SECONDS = 2.0
"""Every route 2xx again within this long of SIGCONT."""


def assert_stall_answers(
    load: RouteLoad,
    title: str,
    stalled_at: float,
    resumed_at: float,
    expect: Callable[[Answer], None],
    least: int = 4,
) -> None:
    """Print each route's numbers over the stall; then assert them: answers before it 2xx,
    at least ``least`` calls per route during it, p99 and max under their bounds, ``expect``
    true of every answer that came before SIGCONT, and every route back to 2xx in time."""
    before = load.began_within(0, stalled_at)
    stalled = load.began_within(stalled_at, resumed_at)
    after = load.began_within(resumed_at, float("inf"))
    recovered = {route: recovery_seconds(answers, resumed_at) for route, answers in after.items()}
    for route, answers in stalled.items():
        assert len(answers) >= least, (route, len(answers))
    print(report(title, stalled, recovered))
    for route, answers in before.items():
        settled = [a for a in answers if a.ended < stalled_at]
        assert settled and all(a.ok for a in settled), (route, [(a.status, a.text[:100]) for a in settled if not a.ok])
    for route, answers in stalled.items():
        seconds = [a.seconds for a in answers]
        assert percentile(seconds, 0.99) < P99_WITHIN_SECONDS, (route, sorted(seconds)[-5:])
        assert max(seconds) < MAX_WITHIN_SECONDS, (route, max(seconds))
        for answer in answers:
            if answer.ended < resumed_at:  # (one that began late may already see the dependency back)
                expect(answer)
    for route, answers in after.items():
        assert any(a.ok for a in answers), route
        assert recovered[route] < RECOVER_WITHIN_SECONDS, (route, recovered[route])


def stall(pid: int, seconds: float, midway: Callable[[], None] | None = None) -> tuple[float, float]:
    """SIGSTOP ``pid`` for ``seconds`` (calling ``midway`` a third of the way in), then SIGCONT;
    returns when it was stopped and when it was resumed (``time.monotonic()``). Still stopped
    when this raises: the caller's ``finally`` sends SIGCONT."""
    os.kill(pid, signal.SIGSTOP)
    stalled_at = time.monotonic()
    if midway is not None:
        time.sleep(seconds / 3)
        midway()
    time.sleep(max(0.0, stalled_at + seconds - time.monotonic()))
    os.kill(pid, signal.SIGCONT)
    return stalled_at, time.monotonic()
