"""Webhooks against hostile receivers and hostile names: refused inward aims, one deadline,
a capped read, no redirects, and Standard Webhooks headers a receiver verifies with the
reference library (``standardwebhooks``).

Receivers are real HTTP servers on 127.0.0.1, so each test lists that literal address with
its port, as an operator would have to.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from delineate.config import ConfigError, load_settings
from delineate.jobs import webhook_http, webhooks
from delineate.jobs.webhook_http import CallbackPolicy
from tests.support.receivers import WebhookReceiver as Receiver

STATUS = {"jobId": "0f0e0d0c-0b0a-4908-8706-050403020100", "status": "completed", "progress": 100}


@pytest.fixture()
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(answer: Callable[[BaseHTTPRequestHandler], None] | None = None) -> Receiver:
        made.append(Receiver(answer=answer))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


# -- which hosts and ports -----------------------------------------------------------------------


def test_a_bare_host_allows_ports_80_and_443_only() -> None:
    policy = CallbackPolicy(["hooks.example.com", "Localhost:9000", "[::1]:8443", "10.1.2.3"])
    assert policy.allows("hooks.example.com", 80) and policy.allows("hooks.example.com", 443)
    for port in (22, 5555, 6379, 3000, 8080):  # Flower, Redis, the API itself: never by a bare name
        assert not policy.allows("hooks.example.com", port)
    assert policy.allows("localhost", 9000) and not policy.allows("localhost", 80)
    assert policy.allows("::1", 8443) and not policy.allows("::1", 443)
    assert policy.allows("10.1.2.3", 443) and not policy.allows("10.1.2.3", 8080)


@pytest.mark.parametrize("entry", ["host:http", "host:0", "host:70000", ":80", "[::1]x", "a/b", "user@host"])
def test_malformed_allowed_host_entries_stop_start_up(entry: str) -> None:
    with pytest.raises(ConfigError, match="CALLBACK_ALLOWED_HOSTS"):
        load_settings(environ={"CALLBACK_ALLOWED_HOSTS": entry}, dotenv_path=None)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",  # metadata
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
        "64:ff9b::a00:1", "2001:db8::1", "ff02::1",
    ],
)  # fmt: skip
def test_inward_addresses_are_refused_unless_a_url_names_them_listed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not webhook_http.is_public(ip)  # a name resolving to it is refused
    listed = f"[{address}]:8080" if ":" in address else f"{address}:8080"
    policy = CallbackPolicy([listed])  # the operator's explicit choice: that literal, that port
    assert policy.allows(address, 8080) and policy.resolve(address, 8080, 1.0) == [ip]
    assert not policy.allows(address, 8081) and not policy.allows(address, 80)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert webhook_http.is_public(ipaddress.ip_address(address))


def test_a_listed_name_that_resolves_inward_is_refused(receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory()
    attempt = webhooks.post(
        f"http://localhost:{receiver.port}/hook", STATUS, "s", allowed_hosts=(f"localhost:{receiver.port}",)
    )
    assert not attempt.delivered and not attempt.retryable and "not a public address" in (attempt.error or "")
    assert receiver.received == []


def test_the_connection_goes_to_the_checked_address(
    receiver_factory: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the first answer is checked, a second lookup would point elsewhere.
    (The receiver is on 127.0.0.1, taken for a public address here: a name never reaches
    an inward one, listed or not.)"""
    receiver = receiver_factory()
    lookups: list[str] = []
    real = socket.getaddrinfo
    monkeypatch.setattr(webhook_http, "is_public", lambda address: str(address) == "127.0.0.1")

    def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host[0].isdigit():  # an address literal (the pinned connect): no lookup
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "10.255.255.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    allowed = (f"rebind.test:{receiver.port}",)
    attempt = webhooks.post(f"http://rebind.test:{receiver.port}/hook", STATUS, "s", allowed_hosts=allowed)
    assert attempt.delivered, attempt.error
    assert lookups == ["rebind.test"]  # one lookup, and the request went to its answer
    assert receiver.received[0][0]["host"] == f"rebind.test:{receiver.port}"  # the name still in Host


def test_without_an_app_or_allowlist_no_private_address_is_called(receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory()
    attempt = webhooks.post(receiver.url, STATUS, "s")
    assert not attempt.delivered and webhook_http.NOT_LISTED in (attempt.error or "")
    assert receiver.received == []


# -- hostile receivers -----------------------------------------------------------------------------


def test_one_deadline_for_the_whole_delivery() -> None:
    """A receiver that drips one byte of its answer every 0.2 s never holds a worker past it."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    began = time.monotonic()
    try:
        with pytest.raises(webhook_http.TRANSPORT_ERRORS):
            webhook_http.send(
                f"http://127.0.0.1:{port}/", b"{}", [], CallbackPolicy([f"127.0.0.1:{port}"]), deadline_seconds=1.0
            )
    finally:
        stop.set()
        server.close()
    assert time.monotonic() - began < 1.6


def test_the_answer_body_is_read_up_to_a_cap(receiver_factory: Callable[..., Receiver]) -> None:
    sent: list[int] = []

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(100 * 1024 * 1024))
        handler.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(1600):
                handler.wfile.write(chunk)
                sent.append(len(chunk))
        except OSError:
            pass

    receiver = receiver_factory(endless)
    began = time.monotonic()
    answer = webhook_http.send(receiver.url, b"{}", [], CallbackPolicy([f"127.0.0.1:{receiver.port}"]))
    assert answer.status == 200 and time.monotonic() - began < 3
    time.sleep(0.2)
    assert sum(sent) < 20 * 1024 * 1024  # the connection was dropped, not drained


def test_redirects_are_never_followed(receiver_factory: Callable[..., Receiver]) -> None:
    target = receiver_factory()

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("Location", target.url)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    source = receiver_factory(redirect)
    allowed = (f"127.0.0.1:{source.port}", f"127.0.0.1:{target.port}")
    attempt = webhooks.post(source.url, STATUS, "s", allowed_hosts=allowed)
    assert not attempt.delivered and not attempt.retryable and "redirects are not followed" in (attempt.error or "")
    assert len(source.received) == 1 and target.received == []


# -- Standard Webhooks ---------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["plain-text-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
def test_deliveries_verify_with_the_standardwebhooks_library(
    receiver_factory: Callable[..., Receiver], secret: str
) -> None:
    receiver = receiver_factory()
    attempt = webhooks.post(receiver.url, STATUS, secret, allowed_hosts=(f"127.0.0.1:{receiver.port}",))
    assert attempt.delivered, attempt.error
    headers, body = receiver.received[0]
    # The reference receiver: Webhook("whsec_...") decodes the key; a plain secret is its bytes.
    verifier = Webhook(secret) if secret.startswith("whsec_") else Webhook(secret.encode())
    assert verifier.verify(body, headers) == json.loads(body)
    assert headers["webhook-id"] == STATUS["jobId"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert webhooks.verify(body, headers["x-delineate-signature"], secret)  # the older header still there
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"another key").verify(body, headers)


def test_a_replayed_delivery_is_refused_by_the_receiver() -> None:
    body = json.dumps(STATUS).encode()
    old = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
    headers = dict(webhooks.signed_headers(body, "k", "msg-1", "completed", old))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(b"k").verify(body, headers)
    fresh = dict(webhooks.signed_headers(body, "k", "msg-1", "completed", int(time.time())))
    assert Webhook(b"k").verify(body, fresh) == STATUS


def test_a_whsec_secret_must_carry_a_base64_key() -> None:
    with pytest.raises(ConfigError, match="base64"):
        load_settings(environ={"CALLBACK_SECRET": "whsec_"}, dotenv_path=None)
    assert load_settings(environ={"CALLBACK_SECRET": "whsec_c2VjcmV0"}, dotenv_path=None).callback_secret
