"""Pure arithmetic of crash safety: bundling slots from a memory limit, the supervisor's CLI."""

from __future__ import annotations

from delineate.config import load_settings
from delineate.dev.supervise import main as supervise_main
from delineate.jobs.slots import DEFAULT_BUNDLE_CONCURRENCY, bundle_gate, bundle_slots

GIB = 1024**3


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    return load_settings(environ={}, overrides=overrides, dotenv_path=None)


def test_bundle_slots_come_from_the_pod_limit() -> None:
    assert bundle_slots(_settings(worker_memory_limit_bytes=GIB)) == 15  # deploy/k8s: 1 GiB
    assert bundle_slots(_settings(worker_memory_limit_bytes=2 * GIB)) == 34
    assert bundle_slots(_settings(worker_memory_limit_bytes=200 * 1024**2)) == 1  # never 0
    assert bundle_slots(_settings()) == DEFAULT_BUNDLE_CONCURRENCY
    assert bundle_slots(_settings(bundle_concurrency=3, worker_memory_limit_bytes=GIB)) == 3  # explicit wins


def test_bundle_gate_is_one_semaphore_per_process_and_size() -> None:
    settings = _settings(bundle_concurrency=2)
    gate = bundle_gate(settings)
    assert gate is bundle_gate(settings)
    assert gate.acquire(blocking=False) and gate.acquire(blocking=False)
    assert not gate.acquire(blocking=False)
    gate.release()
    gate.release()


def test_supervise_without_a_command_prints_its_usage() -> None:
    assert supervise_main([]) == 2
    assert supervise_main(["--"]) == 2
