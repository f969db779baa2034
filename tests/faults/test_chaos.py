"""A short chaos run (``make chaos`` for 60 s): random faults under load, every invariant
kept (bench/chaos/run.py). The full-length runs and their summaries are in ARCHITECTURE.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos.run import run_chaos

pytestmark = pytest.mark.faults

SEED = 124  # its first minute holds six kinds of fault, a hang and a killed sweeper among them
SECONDS = 60.0


@pytest.mark.timeout(480)
def test_a_short_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    verdict, line = run_chaos(SEED, SECONDS, tmp_path)
    print(line)
    assert verdict.accepted >= 100, line  # the load really ran
    assert verdict.passed, "\n".join([*verdict.problems, line])
