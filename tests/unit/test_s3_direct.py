"""The direct S3 signer signs exactly as botocore does, with static keys and with temporary
ones (a session token), and the direct requests use the credentials boto3 resolved (pure
logic: no store involved)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials

from delineate.config import load_settings
from delineate.storage import Storage
from delineate.storage.direct import DirectS3, SigV4, _error_code

TOKEN = "FwoGZXIvYXdzEBYaDH+temporary/session+token=="


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("HEAD", "http://127.0.0.1:8333/downloads/downloads/70001.zip", b""),
        ("GET", "http://s3.example:9000/base/bucket/downloads/a%20b~c.zip", b""),
        ("PUT", "https://s3.example/downloads/bundles/0f8e.zip", b"PK\x03\x04 some zip bytes"),
    ],
)
@pytest.mark.parametrize("token", [None, TOKEN], ids=["static keys", "temporary credentials"])
def test_signature_matches_botocore(method: str, url: str, body: bytes, token: str | None) -> None:
    request = AWSRequest(method=method, url=url, data=body)
    payload = hashlib.sha256(body).hexdigest()
    request.headers["X-Amz-Content-SHA256"] = payload  # botocore signs the body hash it is given
    request.context["payload_signing_enabled"] = True
    S3SigV4Auth(Credentials("AKID", "secret/key+x", token), "s3", "eu-west-3").add_auth(request)
    stamp = request.headers["X-Amz-Date"]
    now = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    _, _, rest = url.partition("://")
    host, _, path = rest.partition("/")

    credentials = ReadOnlyCredentials("AKID", "secret/key+x", token)
    ours = SigV4("eu-west-3").headers(method, "/" + path, host, payload, credentials, now)

    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == stamp
    assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8333", "https://s3.example"])
@pytest.mark.parametrize("token", [None, TOKEN], ids=["static keys", "temporary credentials"])
def test_presigned_links_match_botocore(endpoint: str, token: str | None) -> None:
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
    session = boto3.session.Session("AKID", "secret/key+x", token, region_name="eu-west-3")
    key, disposition = "bundles/a b~c+d.zip", 'attachment; filename="delineate-0f8e.zip"'
    params = {"Bucket": "downloads", "Key": key, "ResponseContentDisposition": disposition}
    theirs = urlsplit(session.client("s3", endpoint_url=endpoint, config=config).generate_presigned_url(
        "get_object", Params=params, ExpiresIn=900))  # fmt: skip
    expected = dict(parse_qsl(theirs.query))
    now = datetime.strptime(expected["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    credentials = ReadOnlyCredentials("AKID", "secret/key+x", token)

    ours = SigV4("eu-west-3").presigned_query(
        theirs.path, theirs.netloc, {"response-content-disposition": disposition}, 900, credentials, now
    )
    assert dict(parse_qsl(ours)) == expected
    link = DirectS3(endpoint=endpoint, bucket="downloads", credentials=lambda: credentials, region="eu-west-3",
                    timeout_seconds=1, connect_seconds=1, attempts=1).presign(key, {}, 900)  # fmt: skip
    assert urlsplit(link)[:3] == theirs[:3]


def test_signing_key_follows_the_day_and_the_secret() -> None:
    signer = SigV4("us-east-1")
    first = signer.headers(
        "GET", "/b/k", "h", "x", ReadOnlyCredentials("AKID", "s1", None), datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)
    )
    second = signer.headers(
        "GET", "/b/k", "h", "x", ReadOnlyCredentials("AKID", "s1", None), datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC)
    )
    rotated = signer.headers(
        "GET", "/b/k", "h", "x", ReadOnlyCredentials("AKID", "s2", None), datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC)
    )
    assert "20261201/us-east-1" in first["Authorization"]
    assert "20261202/us-east-1" in second["Authorization"]
    assert second["Authorization"] != rotated["Authorization"]  # refreshed credentials sign anew


def test_the_direct_requests_sign_with_what_boto3_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no keys in the settings, boto3's own chain finds them (here its environment
    variables, as a role or a web identity would put temporary ones), session token
    included; the direct requests sign with exactly those."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIATEMPORARY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "temporary-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    settings = load_settings(
        environ={}, overrides={"s3_access_key_id": "", "s3_secret_access_key": ""}, dotenv_path=None
    )
    storage = Storage(settings)
    direct = storage._lean()
    assert direct is not None
    frozen = direct._credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("ASIATEMPORARY", "temporary-secret", TOKEN)
    signed = direct._signer.headers("HEAD", "/downloads/k", "h", "x", frozen)
    assert signed["X-Amz-Security-Token"] == TOKEN
    assert "Credential=ASIATEMPORARY/" in signed["Authorization"]
    assert "x-amz-security-token" in signed["Authorization"]


def test_without_fast_paths_every_request_takes_boto3() -> None:
    settings = load_settings(environ={}, overrides={"FAST_PATHS": "false"}, dotenv_path=None)
    assert Storage(settings)._lean() is None


def test_error_code_is_read_from_the_error_document() -> None:
    body = b'<?xml version="1.0"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>'
    assert _error_code(body) == "NoSuchBucket"
    assert _error_code(b"") == ""
    assert _error_code(None) == ""
