"""Session fixtures: a real redis-server, SeaweedFS, Celery worker and gunicorn, on free ports.

Tests that need a service stopped or killed start their own (see ``tests/support/stack.py``)
on their own Redis database, so the shared ones stay healthy for everyone else.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from delineate import create_app
from delineate.config import Settings, load_settings
from delineate.dev.seed import SAMPLE_IDS, seed
from delineate.storage import Storage
from tests.support.stack import Service, start_api, start_redis, start_seaweed, start_worker

_db_numbers = itertools.count(2)  # db 0 and 1 belong to the shared stack


TIMED_FAULTS = {
    "test_chaos",
    "test_redis_stall",
    "test_s3_stall",
    "test_load",
    "test_liveness",
    "test_livez",
    "test_sentinel",
}
"""Fault tests that measure latencies or deadlines under a fault: marked serial, so they never
share the two cores with another test (the other fault tests run on two processes)."""

KINDS = ("unit", "integration", "http", "faults", "deploy")
"""The test folders, each a marker of the same name (as Warehouse marks by folder)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast-paths",
        choices=("true", "false"),
        default="true",
        help="FAST_PATHS of every stack the tests start (false: the libraries alone, the reference path)",
    )


def pytest_configure(config: pytest.Config) -> None:
    global FAST_PATHS
    FAST_PATHS = config.getoption("--fast-paths") == "true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        kind = next((part for part in reversed(parts) if part in KINDS), None)
        if kind is not None:
            item.add_marker(getattr(pytest.mark, kind))
        if Path(str(item.fspath)).stem in TIMED_FAULTS:
            item.add_marker(pytest.mark.serial)


FAST_PATHS = True
"""What ``--fast-paths`` asked for (every settings object below carries it)."""


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[int]:
    service, port = start_redis(workdir)
    yield port
    service.stop()


@pytest.fixture(scope="session")
def seaweed(workdir: Path, redis_server: int) -> Iterator[SeaweedHandle]:
    settings = load_settings(environ={}, dotenv_path=None)
    handle = SeaweedHandle(workdir, settings)
    handle.start()
    storage = Storage(_base_settings(redis_server, handle.port))
    handle.wait_ready(storage)
    seed(storage, SAMPLE_IDS)
    yield handle
    handle.stop()


class SeaweedHandle:
    """The shared SeaweedFS; a fault test may stop and restart it on the same ports."""

    def __init__(self, workdir: Path, settings: Settings) -> None:
        self.workdir = workdir
        self.settings = settings
        self.port = 0
        self.service: Service | None = None

    def start(self) -> None:
        self.service, self.port = start_seaweed(self.settings, self.workdir, self.port or None)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()

    def wait_ready(self, storage: Storage, timeout: float = 30.0) -> None:
        from delineate.dev.localstack import wait_until

        def ready() -> bool:
            try:
                storage.ensure_bucket()
                return True
            except Exception:
                return False

        wait_until(ready, timeout, "the S3 bucket", interval=0.2)


def _base_settings(redis_port: int, s3_port: int, db: int = 0, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "fast_paths": FAST_PATHS,
        "redis_url": f"redis://127.0.0.1:{redis_port}/{db}",
        "s3_endpoint": f"http://127.0.0.1:{s3_port}",
        # The simulated origin delay: long enough to watch, short enough to wait for.
        "download_delay_min_ms": 300,
        "download_delay_max_ms": 600,
        "job_lease_seconds": 5,
        "visibility_timeout_seconds": 60,
        "unacked_restore_interval_seconds": 1,
        # Tests poll fast from one address; the rate-limit tests set their own limit.
        "rate_limit_max_requests": 1_000_000,
        # Each test sees its own bundle (bundles/{its jobId}.zip, its manifest) although many ask
        # the same ids; tests/integration/test_reuse.py turns reuse on for its own stack.
        "bundle_reuse": False,
    }
    values.update(overrides)
    return load_settings(environ={}, overrides=values, dotenv_path=None)


@pytest.fixture(scope="session")
def settings(redis_server: int, seaweed: SeaweedHandle) -> Settings:
    """Settings of the shared stack (Redis db 0)."""
    return _base_settings(redis_server, seaweed.port)


@pytest.fixture(scope="session")
def make_settings(redis_server: int, seaweed: SeaweedHandle) -> Callable[..., Settings]:
    """Settings on a fresh Redis database, for tests that run their own workers."""

    def make(**overrides: object) -> Settings:
        return _base_settings(redis_server, seaweed.port, db=next(_db_numbers), **overrides)

    return make


@pytest.fixture(scope="session")
def worker(settings: Settings, workdir: Path) -> Iterator[Service]:
    service = start_worker(settings, workdir, "worker-shared")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def api_server(settings: Settings, workdir: Path, worker: Service) -> Iterator[str]:
    service, base = start_api(settings, workdir, "api-shared", workers=2)
    yield base
    service.stop()


@pytest.fixture()
def app(settings: Settings) -> Flask:
    """A new app per test (flaskr's pattern), on the shared stack."""
    return create_app(settings)


@pytest.fixture()
def client(app: Flask, worker: Service) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def storage(settings: Settings) -> Storage:
    return Storage(settings)
