"""Secrets never leave the process: not in a repr, not in a Sentry event, not in a log line.

The end-to-end test runs gunicorn and a Celery worker with a real sentry-sdk DSN pointing at
a local ingest (tests/support/receivers.py), makes the API and the worker each report an error, and
searches every event for every configured secret.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from delineate.config import Settings, load_settings
from delineate.telemetry.logs import logging_config, register_secrets
from delineate.telemetry.sentry import FILTERED, scrubber
from tests.support.receivers import SentryReceiver
from tests.support.stack import Service, send_unreadable_job, start_api, start_worker, wait_for


def _secret_settings(**extra: Any) -> dict[str, Any]:
    return {
        "api_keys": f"tester:key-{secrets.token_hex(8)}",
        "callback_secret": "cb-" + secrets.token_hex(8),
        "callback_allowed_hosts": ("hooks.example.com",),
        "flower_basic_auth": "admin:fl-" + secrets.token_hex(6),
        **extra,
    }


def _secrets_of(settings: Settings) -> set[str]:
    found = {settings.callback_secret, settings.flower_basic_auth.partition(":")[2], *settings.api_keys}
    found.add(settings.s3_secret_access_key)
    if settings.sentry_dsn:
        found |= {settings.sentry_dsn, httpx.URL(settings.sentry_dsn).username}
    return found


# -- reprs ------------------------------------------------------------------------------------------


def test_settings_repr_and_str_redact_every_secret() -> None:
    settings = load_settings(
        overrides={
            **_secret_settings(sentry_dsn="http://pub-" + secrets.token_hex(6) + "@127.0.0.1:9/1"),
            "redis_url": "redis://user:pw-" + secrets.token_hex(6) + "@127.0.0.1:6379/0",
        },
        dotenv_path=None,
        environ={},
    )
    hidden = _secrets_of(settings) | {settings.redis_url.split(":")[2].split("@")[0]}
    for text in (repr(settings), str(settings), f"{settings}", repr({"nested": [settings]})):
        assert "[redacted]" in text and "tester" in text  # the key's owner name stays visible
        leaked = [s for s in hidden if s in text]
        assert not leaked, leaked
    assert settings.secret_values() >= hidden - {""}


def test_objects_that_hold_settings_redact_too(settings: Settings) -> None:
    from delineate.jobs.run import DownloadRun
    from delineate.services import build_services

    svc = build_services(settings.replace(callback_secret="cb-" + secrets.token_hex(8)))
    run = DownloadRun("job", svc.store, svc.storage, svc.settings, "holder")
    assert svc.settings.callback_secret not in repr(run) and svc.settings.s3_secret_access_key not in repr(run)


# -- before_send and logs, alone ------------------------------------------------------------------


def test_scrubber_removes_configured_secrets_from_every_part_of_an_event() -> None:
    settings = load_settings(overrides=_secret_settings(), dotenv_path=None, environ={})
    key = next(iter(settings.api_keys))
    event = {
        "message": f"boom with {settings.callback_secret}",
        "exception": {"values": [{"value": f"bad key {key}", "stacktrace": {"frames": [{"vars": {"k": key}}]}}]},
        "breadcrumbs": {"values": [{"message": f"flower {settings.flower_basic_auth}"}]},
        "extra": {key: "as a dict key"},
    }
    text = json.dumps(scrubber(settings)(event, {}))
    assert FILTERED in text
    assert not [s for s in _secrets_of(settings) if s in text]


def test_log_lines_and_tracebacks_carry_no_secret() -> None:
    settings = load_settings(overrides=_secret_settings(), dotenv_path=None, environ={})
    key = next(iter(settings.api_keys))
    config = logging_config()
    stream = io.StringIO()
    config["handlers"]["stdout"]["stream"] = stream
    config["loggers"] = {"hostile.secrets": {"level": "INFO", "handlers": ["stdout"], "propagate": False}}
    config["root"] = {"level": "WARNING", "handlers": []}
    logging.config.dictConfig(config)
    register_secrets(settings.secret_values())
    try:
        log = logging.getLogger("hostile.secrets")
        log.info("using key %s and %s", key, settings.callback_secret)
        try:
            raise ValueError(f"bad flower auth {settings.flower_basic_auth}")
        except ValueError:
            log.exception("failed")
    finally:
        register_secrets(frozenset())
        from delineate.telemetry.logs import configure_logging

        configure_logging("WARNING")
    text = stream.getvalue()
    assert "using key" in text and "ValueError" in text and FILTERED in text
    assert not [s for s in _secrets_of(settings) if s in text]


# -- end to end: events from the API and the worker ------------------------------------------------


@dataclass
class SecretStack:
    settings: Settings
    base: str
    api: Service
    worker: Service
    sentry: SentryReceiver


@pytest.fixture(scope="module")
def stack(make_settings: Callable[..., Settings], workdir: Path) -> Iterator[SecretStack]:
    sentry = SentryReceiver().start()
    dsn = f"http://pub{secrets.token_hex(8)}@127.0.0.1:{sentry.port}/1"
    settings = make_settings(**_secret_settings(sentry_dsn=dsn, sentry_test_route=True))
    started: list[Service] = []
    try:
        started.append(start_worker(settings, workdir, "worker-secrets", concurrency=1))
        api, base = start_api(settings, workdir, "api-secrets", workers=1)
        started.append(api)
        yield SecretStack(settings, base, api, started[0], sentry)
    finally:
        for service in started:
            service.stop()
        sentry.stop()


def _event_payloads(sentry: SentryReceiver) -> list[str]:
    """Every envelope without its header line (which names the DSN by design)."""
    return ["\n".join(text.split("\n")[1:]) for text in sentry.raw_texts()]


def test_api_and_worker_error_events_carry_no_secret(stack: SecretStack) -> None:
    key = next(iter(stack.settings.api_keys))
    request_id = "rid-secrets-" + secrets.token_hex(4)
    response = httpx.post(
        f"{stack.base}/v1/download/check?sentry_test=true",
        json={"file_id": 70000},
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 500

    # A worker-side failure: a record the task cannot read (locals full of settings and clients).
    job_id = send_unreadable_job(stack.settings)

    def both() -> bool:
        tags = [e.get("tags", {}) for e in stack.sentry.events()]
        return any(t.get("request_id") == request_id for t in tags) and any(t.get("job_id") == job_id for t in tags)

    wait_for(both, 30, "the API's and the worker's Sentry events")
    payloads = _event_payloads(stack.sentry)
    hidden = _secrets_of(stack.settings)
    leaked = [s for s in hidden if any(s in text for text in payloads)]
    assert not leaked, f"secrets reached Sentry: {leaked}"
    for event in stack.sentry.events():
        for value in event.get("exception", {}).get("values", []):
            for frame in (value.get("stacktrace") or {}).get("frames", []):
                assert "vars" not in frame, "frame locals were sent"
    # The processes' own log lines: none either.
    wait_for(lambda: "raised unexpected" in stack.worker.log(), 10, "the worker's log line of the failure")
    logs = stack.api.log() + stack.worker.log()
    assert request_id in logs
    leaked = [s for s in hidden if s in logs]
    assert not leaked, f"secrets in the logs: {leaked}"
