"""Hostile requests against a real gunicorn: every refusal is a 4xx JSON error, never a 5xx,
an HTML page, a hang or a header echoed back.

Raw sockets where httpx would refuse to send the request (control characters, a bad
chunked body), httpx elsewhere; a property-based test (Hypothesis) throws a few thousand
generated query strings, headers and bodies at the server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delineate.api.edge.security import REQUEST_ID, SECURITY_HEADERS
from tests.support.stack import start_api

KEY = "hostile-key-0123456789"


@pytest.fixture(scope="module")
def base(make_settings: Any, workdir: Path) -> Iterator[str]:
    hostile_settings = make_settings(
        api_keys=f"hostile:{KEY}",
        download_delay_enabled=False,
        max_active_jobs_per_key=1_000_000,  # no worker here: jobs stay queued
    )
    service, url = start_api(hostile_settings, workdir, "api-hostile", workers=1)
    yield url
    service.stop()


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as client:
        yield client


def raw_request(
    base: str, data: bytes, timeout: float = 5.0, half_close: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is (then end the sending side when ``half_close``); return the
    status, headers and body of the answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
            if _ and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int, error: str) -> dict[str, Any]:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/json"), headers
    parsed = json.loads(body)
    assert parsed["error"] == error and parsed["message"]
    assert parsed["requestId"] == headers["x-request-id"]
    return parsed  # type: ignore[no-any-return]


def request_bytes(target: str, *headers: str, body: bytes = b"", method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {KEY}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- refused by gunicorn before the app: answered in JSON ------------------------------------------


def test_gunicorn_refusals_carry_the_security_headers(base: str) -> None:
    status, headers, _ = raw_request(base, request_bytes("/" + "a" * 5000))
    assert status == 414
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value


def test_request_line_over_4_kib_is_414_json(base: str) -> None:
    target = "/v1/downloads?cursor=" + "A" * 5000
    assert_json_error(*raw_request(base, request_bytes(target)), 414, "uri_too_long")
    long_job_id = "/v1/download/status/" + "a" * 8000
    assert_json_error(*raw_request(base, request_bytes(long_job_id)), 414, "uri_too_long")


@pytest.mark.parametrize("name", ["X-Request-ID", "Authorization", "X-Forwarded-For"])
def test_header_over_8_kib_is_431_json(base: str, name: str) -> None:
    data = request_bytes("/v1/downloads", f"{name}: {'x' * 9000}")
    assert_json_error(*raw_request(base, data), 431, "headers_too_large")


def test_too_many_headers_is_431_json(base: str) -> None:
    data = request_bytes("/v1/downloads", *(f"X-Filler-{n}: {n}" for n in range(150)))
    assert_json_error(*raw_request(base, data), 431, "headers_too_large")


@pytest.mark.parametrize("value", ["abc\x01def", "a\x7fb", "a\x00b", "x\x1b[31m"])
def test_control_character_in_a_header_is_400_json_and_never_echoed(base: str, value: str) -> None:
    status, headers, body = raw_request(base, request_bytes("/v1/downloads", f"X-Request-ID: {value}"))
    assert_json_error(status, headers, body, 400, "bad_request")
    assert value.encode("latin-1") not in body and REQUEST_ID.fullmatch(headers["x-request-id"])


def test_malformed_request_lines_are_400_json(base: str) -> None:
    for data in (b"GET\r\n\r\n", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n"):
        assert_json_error(*raw_request(base, data), 400, "bad_request")


CHECK = "POST /v1/download/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (CHECK + "Content-Length: 17\r\nContent-Length: 5\r\n\r\n{}", 400, "bad_request"),  # smuggling
        (CHECK + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
        (CHECK + "Content-Length: -1\r\n\r\n", 400, "bad_request"),
        (CHECK + "Content-Length: abc\r\n\r\n", 400, "bad_request"),
        (CHECK + "Content-Length: 99999999999999999999\r\n\r\n", 413, "payload_too_large"),
        (CHECK + "Expect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417, "expectation_failed"),
        ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "bad_request"),
        ("GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", 400, "bad_request"),
        ("GET / HTTP/1.1\nHost: x\n\n", 400, "bad_request"),
        ("GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"),
        ("FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
    ],
    ids=["two-lengths", "length-and-chunked", "negative-length", "alpha-length", "huge-length", "expect",
         "space-before-colon", "no-colon", "bare-lf", "raw-bytes-in-target", "h2-preface", "unknown-method"],
)  # fmt: skip
def test_framing_attacks_are_refused_in_json(base: str, data: str, status: int, error: str) -> None:
    raw = data.replace("Host: x\r\n", f"Host: x\r\nAuthorization: Bearer {KEY}\r\n", 1).encode("latin-1")
    assert_json_error(*raw_request(base, raw), status, error)


def test_bad_transfer_codings_are_400_json(base: str) -> None:
    gzip = request_bytes("/v1/download/check", "Transfer-Encoding: gzip", method="POST")
    assert_json_error(*raw_request(base, gzip), 400, "bad_request")
    bad_chunk = (
        request_bytes(
            "/v1/download/check", "Content-Type: application/json", "Transfer-Encoding: chunked", method="POST"
        )
        + b"zz\r\n{}\r\n0\r\n\r\n"
    )
    status, headers, body = raw_request(base, bad_chunk)
    assert_json_error(status, headers, body, 400, "bad_request")


def test_chunked_body_cut_off_mid_chunk_is_400_json(base: str) -> None:
    cut = (
        request_bytes(
            "/v1/download/check", "Content-Type: application/json", "Transfer-Encoding: chunked", method="POST"
        )
        + b'40\r\n{"file_id": 70000'  # a 64-byte chunk announced, 17 bytes sent, then the end
    )
    assert_json_error(*raw_request(base, cut, half_close=True), 400, "bad_request")


def test_a_body_cut_short_of_its_content_length_is_400_json(base: str) -> None:
    body = b'{"file_ids": [70000]}'  # valid JSON, but 100 bytes were declared
    lines = ["POST /v1/download/initiate HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {KEY}"]
    lines += ["Content-Type: application/json", "Content-Length: 100"]
    cut = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    parsed = assert_json_error(*raw_request(base, cut, half_close=True), 400, "invalid_request")
    assert "Content-Length" in parsed["message"]


# -- refused by the app -----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["²", "\u0661\u0660", "1_0", " 10", "+10", "-1", "0", "101", "9" * 400, "1e2", ""])
def test_limit_takes_ascii_digits_only(http: httpx.Client, limit: str) -> None:
    response = http.get("/v1/downloads", params={"limit": limit})
    body = assert_json_error(response.status_code, dict(response.headers), response.content, 400, "invalid_request")
    assert body["details"][0]["path"] == "query limit"


@pytest.mark.parametrize(
    "params",
    [
        {"status": "queued," * 50},
        {"status": "\x00"},
        {"cursor": "A" * 300},
        {"cursor": "\u0663:abc"},
        {"cursor": "%ff%fe"},
    ],
)
def test_other_query_parameters_are_bounded(http: httpx.Client, params: dict[str, str]) -> None:
    response = http.get("/v1/downloads", params=params)
    assert_json_error(response.status_code, dict(response.headers), response.content, 400, "invalid_request")


DEEP = [
    b"[" * 65_000,
    b'{"file_ids":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
    b'{"file_ids":' + b"[" * 20 + b"70000" + b"]" * 20 + b"}",
    b'{"file_ids":[70000],"callback_url":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
]


@pytest.mark.parametrize("path", ["/v1/download/initiate", "/v1/download/estimate", "/v1/download/check"])
@pytest.mark.parametrize("body", DEEP, ids=["64k-of-brackets", "30000-deep", "20-deep", "deep-objects"])
def test_deeply_nested_json_is_400(http: httpx.Client, path: str, body: bytes) -> None:
    response = http.post(path, content=body, headers={"Content-Type": "application/json"})
    parsed = assert_json_error(response.status_code, dict(response.headers), response.content, 400, "invalid_request")
    assert "deeper than" in parsed["message"]


def test_brackets_inside_strings_do_not_count_as_nesting(http: httpx.Client) -> None:
    body = b'{"file_id": 70000, "x": "' + b"[" * 100 + b'"}'
    response = http.post("/v1/download/check", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "unknown field" in response.text  # got past the depth check


@pytest.mark.parametrize(
    "number", [b"1" * 5000, b"1e999999", b"-1e400", b"123456789012345678901234567890", b"70000.0", b"7e4"]
)
def test_huge_or_odd_numbers_are_400(http: httpx.Client, number: bytes) -> None:
    for path, body in (("/v1/download/check", b'{"file_id":%s}'), ("/v1/download/initiate", b'{"file_ids":[%s]}')):
        response = http.post(path, content=body % number, headers={"Content-Type": "application/json"})
        assert_json_error(response.status_code, dict(response.headers), response.content, 400, "invalid_request")


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json; charset=latin-1"},
        {"Content-Type": "application/json; charset=utf-16"},
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        {"Content-Type": "application/json", "Content-Encoding": "br, identity"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "\u00e9/json"},
    ],
)
def test_odd_content_types_and_encodings_are_415(http: httpx.Client, headers: dict[str, str]) -> None:
    sent = {k: v.encode("latin-1") for k, v in headers.items()}
    response = http.post("/v1/download/check", content=b'{"file_id":70000}', headers=sent)
    assert_json_error(response.status_code, dict(response.headers), response.content, 415, "unsupported_media_type")


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b'{"file_id": "\xed\xa0\x80"}', b"\x00", b'"\\ud800"'])
def test_invalid_utf8_bodies_are_400(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v1/download/check", content=body, headers={"Content-Type": "application/json"})
    assert_json_error(response.status_code, dict(response.headers), response.content, 400, "invalid_request")


def test_request_id_is_echoed_only_when_well_formed(http: httpx.Client) -> None:
    assert http.get("/", headers={"X-Request-ID": "abc.DEF_1:2-3"}).headers["x-request-id"] == "abc.DEF_1:2-3"
    for sent in ("a" * 129, "a b", "<script>", "id\u00e9", "", "a,b"):
        got = http.get("/", headers={"X-Request-ID": sent.encode("utf-8")}).headers["x-request-id"]
        assert got != sent and REQUEST_ID.fullmatch(got)


# -- property-based: no 5xx, whatever arrives -------------------------------------------------------

EXAMPLES = 1000
"""Generated requests per property (three properties): 3,000 in all, about 10 s here."""

PATHS = [
    "/v1/downloads",
    "/v1/downloads/summary",
    "/v1/download/status/{}",
    "/v1/download/{}",
    "/v1/download/stream/{}",  # no such job: 404 at once, whatever Last-Event-ID says
    "/v1/download/initiate",
    "/v1/download/estimate",
    "/v1/download/check",
    "/",
    "/health",
]
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
ascii_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
header_value = st.text(st.characters(min_codepoint=0x00, max_codepoint=0xFF, exclude_characters="\r\n"), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
bodies = (
    st.builds(
        lambda ids, extra: {"file_ids": ids, **extra},
        st.lists(st.integers(-(2**70), 2**70) | st.floats() | text | st.booleans(), max_size=5),
        st.dictionaries(st.sampled_from(["callback_url", "file_id", "x"]), json_values, max_size=2),
    )
    | st.dictionaries(text, json_values, max_size=3)
    | json_values
)


def no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert {"error", "message", "requestId"} <= set(body)
        assert body["requestId"] == response.headers["x-request-id"]
    assert REQUEST_ID.fullmatch(response.headers["x-request-id"])


def _path(template: str, segment: str) -> str:
    return template.format(quote(segment, safe="") or "x") if "{}" in template else template


HEADER_NAMES = [
    "X-Request-ID", "Idempotency-Key", "Authorization", "X-API-Key", "Origin", "Content-Type",
    "Accept", "X-Forwarded-For", "Content-Encoding", "Last-Event-ID", "Range", "If-None-Match",
]  # fmt: skip

HEADER_NAMES = [
    "X-Request-ID", "Idempotency-Key", "Authorization", "X-API-Key", "Origin", "Content-Type",
    "Accept", "X-Forwarded-For", "Content-Encoding", "Last-Event-ID", "Range", "If-None-Match",
]  # fmt: skip

quick = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@quick
@given(template=st.sampled_from(PATHS), segment=text, params=st.dictionaries(text, text, max_size=4))
def test_generated_paths_and_query_strings_never_get_a_5xx(
    http: httpx.Client, template: str, segment: str, params: dict[str, str]
) -> None:
    no_server_error(http.get(_path(template, segment), params=params))


@quick
@given(
    template=st.sampled_from(PATHS),
    headers=st.dictionaries(
        st.sampled_from(HEADER_NAMES),
        header_value,
        max_size=4,
    ),
    method=st.sampled_from(["GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH"]),
)
def test_generated_headers_never_get_a_5xx(base: str, template: str, headers: dict[str, str], method: str) -> None:
    # Raw bytes on the wire (httpx would refuse control characters): latin-1 as gunicorn reads them.
    path = _path(template, "0f0e0d0c-0b0a-4908-8706-050403020100")
    lines = [f"{name}: {value}" for name, value in headers.items()]
    status, got, body = raw_request(base, request_bytes(path, *lines, "Connection: close", method=method))
    assert status < 500, (method, path, headers, body[:300])
    if status >= 400 and method != "HEAD":
        parsed = json.loads(body)
        assert {"error", "message", "requestId"} <= set(parsed) and parsed["requestId"] == got["x-request-id"]
    assert REQUEST_ID.fullmatch(got["x-request-id"])
    echoed = "\n".join(v for k, v in got.items() if k != "x-request-id")
    for value in headers.values():  # nothing the client sent comes back as a header
        if len(value.strip()) > 12 and not value.strip().isdigit():
            assert value.strip() not in echoed


@quick
@given(
    path=st.sampled_from(["/v1/download/initiate", "/v1/download/estimate", "/v1/download/check"]),
    body=bodies | st.binary(max_size=200).map(lambda raw: raw),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/json", ""]),
)
def test_generated_bodies_never_get_a_5xx(http: httpx.Client, path: str, body: Any, content_type: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    no_server_error(http.post(path, content=raw, headers=headers))
