"""The direct S3 signer signs exactly as botocore does (pure logic: no store involved)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from delineate.storage.direct import SigV4, _error_code


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("HEAD", "http://127.0.0.1:8333/downloads/downloads/70001.zip", b""),
        ("GET", "http://s3.example:9000/base/bucket/downloads/a%20b~c.zip", b""),
        ("PUT", "https://s3.example/downloads/bundles/0f8e.zip", b"PK\x03\x04 some zip bytes"),
    ],
)
def test_signature_matches_botocore(method: str, url: str, body: bytes) -> None:
    request = AWSRequest(method=method, url=url, data=body)
    payload = hashlib.sha256(body).hexdigest()
    request.headers["X-Amz-Content-SHA256"] = payload  # botocore signs the body hash it is given
    request.context["payload_signing_enabled"] = True
    S3SigV4Auth(Credentials("AKID", "secret/key+x"), "s3", "eu-west-3").add_auth(request)
    stamp = request.headers["X-Amz-Date"]
    now = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    _, _, rest = url.partition("://")
    host, _, path = rest.partition("/")

    ours = SigV4("AKID", "secret/key+x", "eu-west-3").headers(method, "/" + path, host, payload, now)

    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == stamp


def test_signing_key_follows_the_day() -> None:
    signer = SigV4("AKID", "secret", "us-east-1")
    first = signer.headers("GET", "/b/k", "h", "x", datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC))
    second = signer.headers("GET", "/b/k", "h", "x", datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC))
    assert "20261201/us-east-1" in first["Authorization"]
    assert "20261202/us-east-1" in second["Authorization"]


def test_error_code_is_read_from_the_error_document() -> None:
    body = b'<?xml version="1.0"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>'
    assert _error_code(body) == "NoSuchBucket"
    assert _error_code(b"") == ""
    assert _error_code(None) == ""
