"""Pure logic of issue 3: the SSE wire format, event coalescing, callback URLs, signatures."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from delineate.api.sse import ServerSentEvent, comment
from delineate.config import load_settings
from delineate.config.tenants import Tenant, load_tenants
from delineate.errors import InvalidRequest
from delineate.jobs.throttle import PublishThrottle
from delineate.jobs.webhooks import backoff_seconds, check_callback_url, sign, verify
from delineate.models import Job, JobState, Phase


def test_event_wire_format() -> None:
    event = ServerSentEvent('{"a":1}', event="progress", id=7)
    assert str(event) == 'event: progress\nid: 7\ndata: {"a":1}\n\n'


def test_event_multiline_data_and_retry() -> None:
    event = ServerSentEvent("one\ntwo", retry_ms=3000)
    assert str(event) == "retry: 3000\ndata: one\ndata: two\n\n"
    assert str(ServerSentEvent("")) == "data: \n\n"


def test_comment_is_ignored_by_clients() -> None:
    assert comment("heartbeat") == ": heartbeat\n\n"
    assert comment("a\nb") == ": a\n: b\n\n"


def test_event_from_a_flask_sse_message() -> None:
    raw = json.dumps({"data": {"status": "completed", "version": 9}, "type": "completed", "id": 9})
    event = ServerSentEvent.from_message(raw)
    assert event.event == "completed" and event.version == 9 and event.terminal
    assert json.loads(event.data) == {"status": "completed", "version": 9}
    assert str(event) == 'event: completed\nid: 9\ndata: {"status":"completed","version":9}\n\n'
    with pytest.raises(ValueError):
        ServerSentEvent.from_message('"just a string"')


def test_event_from_status_uses_the_version_as_id() -> None:
    event = ServerSentEvent.from_status("connected", {"status": "queued", "version": 3})
    assert str(event) == 'event: connected\nid: 3\ndata: {"status":"queued","version":3}\n\n'
    assert not event.terminal


def _job(status: JobState = JobState.PROCESSING, phase: Phase = Phase.CHECKING) -> Job:
    return Job(job_id="j", status=status, file_ids=[70000], phase=phase)


def test_throttle_publishes_at_most_every_interval_but_always_phase_and_terminal() -> None:
    now = [0.0]
    throttle = PublishThrottle(interval_seconds=0.1, clock=lambda: now[0])
    published = []
    # 1000 writes 1 ms apart in one phase: ~10 per 100 ms → about 11 events, not 1000.
    for _ in range(1000):
        published.append(throttle.should_publish(_job()))
        now[0] += 0.001
    assert 9 <= sum(published) <= 12
    assert throttle.should_publish(_job(phase=Phase.BUNDLING))  # phase change: at once
    assert throttle.should_publish(_job(JobState.COMPLETED, Phase.DONE))  # terminal: at once
    assert throttle.should_publish(_job(JobState.FAILED, Phase.DONE))


def _tenant(hosts: str = "127.0.0.1:8080,hooks.example.com", secret: str = "s3cret") -> Tenant:
    """The open mode's one tenant, its hosts and secret from the settings."""
    settings = load_settings(environ={"CALLBACK_ALLOWED_HOSTS": hosts, "CALLBACK_SECRET": secret}, dotenv_path=None)
    return load_tenants(settings).tenant("")


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("https://hooks.example.com/x?y=1", "https://hooks.example.com/x?y=1"),
        ("https://HOOKS.example.com/x", "https://hooks.example.com/x"),
        ("http://hooks.example.com:80/x", "http://hooks.example.com/x"),
        ("https://hooks.example.com:443/x", "https://hooks.example.com/x"),
        ("http://127.0.0.1:8080/é", "http://127.0.0.1:8080/%C3%A9"),  # as the HTTP client sends it
        ("http://127.0.0.1:8080/a?q=ü&r=%41", "http://127.0.0.1:8080/a?q=%C3%BC&r=%41"),
        ("http://127.0.0.1:8080/x/<{}>", "http://127.0.0.1:8080/x/%3C%7B%7D%3E"),
    ],
)
def test_callback_url_allowed_as_it_will_be_sent(url: str, sent: str) -> None:
    assert check_callback_url(url, _tenant()) == sent


def test_an_internationalised_host_is_idna_encoded() -> None:
    tenant = _tenant(hosts="bücher.example")  # a listed name matches in either spelling
    assert check_callback_url("https://Bücher.example/h", tenant) == "https://xn--bcher-kva.example/h"
    assert check_callback_url("https://xn--bcher-kva.example/h", tenant) == "https://xn--bcher-kva.example/h"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:8080/hook", "callback hosts"),  # literal: not 127.0.0.1
        ("http://127.0.0.2/hook", "callback hosts"),
        ("http://127.0.0.1/hook", "callback hosts"),  # listed with port 8080 only
        ("http://hooks.example.com:8080/x", "callback hosts"),  # a bare host: 80 and 443
        ("https://hooks.example.com:6379/x", "callback hosts"),
        ("http://hooks.example.com.evil.test/", "callback hosts"),
        ("ftp://127.0.0.1/hook", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("http://user:pass@127.0.0.1/hook", "credentials"),
        ("http://user@127.0.0.1/hook", "credentials"),
        ("http://evil.test@127.0.0.1/hook", "credentials"),
        ("http:///hook", "no host"),
        ("http://127.0.0.1:99999/", "not a valid URL"),
        ("http://[::1]x/", "not a valid URL"),
        ("http://127.0.0.1/a b", "whitespace"),
        ("http://127.0.0.1/a\x7f", "control characters"),
        ("http://127.0.0.1/\x85", "control characters"),  # C1 controls too
        ("http://hooks.exa mple.com/", "whitespace"),  # a space in the host
        ("http://127.0.0.1/#frag", "fragment"),
        ("http://xn--zz.example/", "not valid punycode"),
        ("http://ab\u200b.example/", "not a valid internationalised name"),  # a zero-width space
        ("http://hooks..example.com/", "not a valid host name"),
        ("http://%68ooks.example.com/", "not a valid host name"),
    ],
)
def test_callback_url_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_callback_url(url, _tenant())
    assert reason in info.value.message
    assert info.value.details[0]["path"] == "$.callback_url"


def test_callback_host_entry_may_name_a_port() -> None:
    tenant = _tenant(hosts="127.0.0.1:9000")
    assert check_callback_url("http://127.0.0.1:9000/h", tenant)
    with pytest.raises(InvalidRequest):
        check_callback_url("http://127.0.0.1:9001/h", tenant)


def test_webhooks_off_without_hosts_or_secret() -> None:
    for tenant in (_tenant(hosts=""), _tenant(secret="")):
        with pytest.raises(InvalidRequest, match="not enabled"):
            check_callback_url("http://127.0.0.1:8080/hook", tenant)


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = b'{"jobId":"j","status":"completed"}'
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == expected
    assert verify(body, expected, "s3cret")
    assert not verify(body + b" ", expected, "s3cret")
    assert not verify(body, expected, "other")


def test_webhook_backoff_doubles() -> None:
    settings = load_settings(environ={}, dotenv_path=None)
    delays = [backoff_seconds(n, settings) for n in range(40)]
    assert all(15 * 2**n / 2 <= d <= 15 * 2**n for n, d in enumerate(delays[:5]))
    assert all(300 <= d <= 600 for d in delays[6:])  # capped at WEBHOOK_RETRY_MAX_DELAY_SECONDS
    elapsed, n = 0.0, 0
    while elapsed < settings.webhook_retry_window_seconds:
        elapsed, n = elapsed + backoff_seconds(n, settings), n + 1
    assert elapsed >= 3600 and n < 40  # retried for over an hour, without a storm of attempts
