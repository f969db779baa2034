"""The invariants a chaos run must keep, checked on what the load saw (pure: no I/O here).

- every accepted job reached exactly one terminal state, and it is ``completed`` (all the
  ids the load asks for exist);
- no observer ever saw a job's ``version`` go backwards;
- every SSE stream (across its reconnects) ended with exactly one terminal event, equal to
  the final status;
- every job with a callback was delivered at least once, under one ``webhook-id``;
- during a fault an answer is 2xx/4xx or a JSON 503 with ``Retry-After``; outside one, 2xx/4xx;
  no answer takes longer than SLOW_SECONDS; a request goes unanswered (its connection cut)
  only when the API worker holding it was killed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.schedule import (
    FAILOVER,
    KILL_API_WORKER,
    RESTART_REDIS,
    STOP_REDIS,
    STOP_S3,
)

SLOW_SECONDS = 1.5

GRACE_SECONDS: dict[str, float] = {
    STOP_REDIS: 2.0,
    RESTART_REDIS: 2.0,
    FAILOVER: 2.0,
    STOP_S3: 2.0,
    KILL_API_WORKER: 1.0,
}
"""How long after a fault ends its 503s are still excused (the API is back within 2 s of the
dependency). A fault of a kind not listed here (a job worker, the sweeper, the webhook
receiver) excuses no 503 at all: the API does not depend on them."""

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Answer:
    started: float
    """Seconds since the load began."""
    seconds: float
    route: str
    status: int
    """0: no answer (the connection failed or timed out)."""
    proper_503: bool = False
    """A 503 whose body is the JSON error (or /health's own JSON) and that has ``Retry-After``."""


@dataclass(frozen=True)
class Window:
    """A fault as it was carried out: from its start until it was over."""

    kind: str
    start: float
    end: float


@dataclass
class JobSeen:
    job_id: str
    tenant: str
    file_ids: list[int]
    follow: str
    """``poll`` or ``sse``."""
    callback: bool
    versions: list[int] = field(default_factory=list)
    terminal_events: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    """The status read once the run drained (None: never read back)."""
    verified: bool | None = None
    """The result downloaded and checked against its manifest (None: not tried)."""


@dataclass
class Deliveries:
    """The webhook receiver's record: job id -> the ``webhook-id`` of each delivery received
    with a valid signature; and how many arrived with a bad one."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    bad_signatures: int = 0


@dataclass
class Verdict:
    accepted: int = 0
    completed: int = 0
    lost: int = 0
    stuck: int = 0
    bundles_verified: int = 0
    streams: int = 0
    streams_ok: int = 0
    callbacks: int = 0
    callbacks_delivered: int = 0
    answers: int = 0
    during_faults_503: int = 0
    other_5xx: int = 0
    resets: int = 0
    slow: int = 0
    slowest: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def excused(answer: Answer, windows: list[Window], kinds: frozenset[str] | None = None) -> bool:
    """True when ``answer`` overlaps a fault (plus its grace) of one of ``kinds``."""
    ended = answer.started + answer.seconds
    for w in windows:
        if w.kind not in GRACE_SECONDS or (kinds is not None and w.kind not in kinds):
            continue
        if answer.started <= w.end + GRACE_SECONDS[w.kind] and ended >= w.start:
            return True
    return False


def check_answers(answers: list[Answer], windows: list[Window], verdict: Verdict) -> None:
    verdict.answers = len(answers)
    examples: Counter[str] = Counter()

    def problem(kind: str, text: str) -> None:
        examples[kind] += 1
        if examples[kind] <= 3:  # a few of each, not thousands
            verdict.problems.append(text)

    for a in answers:
        verdict.slowest = max(verdict.slowest, a.seconds)
        where = f"{a.route} at {a.started:.1f} s"
        if a.seconds > SLOW_SECONDS:
            verdict.slow += 1
            problem("slow", f"slow answer: {where} took {a.seconds:.2f} s (status {a.status})")
        if a.status == 0:
            verdict.resets += 1
            if not excused(a, windows, frozenset({KILL_API_WORKER})):
                problem("reset", f"no answer: {where}, and no API worker was killed then")
        elif a.status == 503:
            if not excused(a, windows):
                verdict.other_5xx += 1
                problem("503", f"503 outside any fault: {where}")
            elif not a.proper_503:
                verdict.other_5xx += 1
                problem("bad 503", f"503 without a JSON error body or Retry-After: {where}")
            else:
                verdict.during_faults_503 += 1
        elif a.status >= 500:
            verdict.other_5xx += 1
            problem("5xx", f"{a.status}: {where}")


def check_jobs(jobs: list[JobSeen], deliveries: Deliveries, verdict: Verdict) -> None:
    verdict.accepted = len(jobs)
    for job in jobs:
        name = f"job {job.job_id} ({job.tenant})"
        final = job.final
        if final is None:
            verdict.lost += 1
            verdict.problems.append(f"lost: {name} could not be read back")
            continue
        state = final.get("status")
        if state not in TERMINAL:
            verdict.stuck += 1
            verdict.problems.append(f"stuck: {name} still {state} after the drain")
        elif state != "completed":
            verdict.problems.append(f"{name} ended {state}: {final.get('error')}")
        else:
            verdict.completed += 1
        if any(later < earlier for earlier, later in zip(job.versions, job.versions[1:], strict=False)):
            verdict.problems.append(f"{name}: version went backwards: {job.versions}")
        if job.verified:
            verdict.bundles_verified += 1
        elif state == "completed":
            verdict.problems.append(f"{name}: its result did not verify")
        if job.follow == "sse":
            verdict.streams += 1
            if _stream_ok(job):
                verdict.streams_ok += 1
            else:
                events = [e.get("status") for e in job.terminal_events]
                verdict.problems.append(f"{name}: its stream saw terminal events {events}, final {state}")
        if job.callback:
            verdict.callbacks += 1
            ids = deliveries.ids.get(job.job_id, [])
            if ids and len(set(ids)) == 1:
                verdict.callbacks_delivered += 1
            else:
                verdict.problems.append(f"{name}: webhook deliveries {ids or 'none'}")
    if deliveries.bad_signatures:
        verdict.problems.append(f"{deliveries.bad_signatures} webhook deliveries failed their signature check")


def _stream_ok(job: JobSeen) -> bool:
    if len(job.terminal_events) != 1 or job.final is None:
        return False
    seen = job.terminal_events[0]
    return all(seen.get(k) == job.final.get(k) for k in ("status", "completedAt", "size", "error"))


def summary_line(seed: int, seconds: float, faults: dict[str, int], verdict: Verdict, extra: str = "") -> str:
    """The one line a run ends with (and the note quotes)."""
    kinds = " ".join(f"{k}={n}" for k, n in faults.items()) or "none"
    v = verdict
    return (
        f"chaos seed={seed} seconds={seconds:g} faults[{kinds}] accepted={v.accepted} completed={v.completed} "
        f"lost={v.lost} stuck={v.stuck} bundles_verified={v.bundles_verified}/{v.completed} "
        f"streams_ok={v.streams_ok}/{v.streams} webhooks={v.callbacks_delivered}/{v.callbacks} "
        f"answers={v.answers} 503s={v.during_faults_503} other_5xx={v.other_5xx} resets={v.resets} "
        f"slow={v.slow} slowest={v.slowest:.2f}s{extra} -> {'PASS' if v.passed else 'FAIL'}"
    )
