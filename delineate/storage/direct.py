"""The worker's hot S3 requests, signed here and sent with urllib3.

A bundle job makes a HEAD per file, a GET per file and one PUT; through the boto3
client each cost 1-3 ms of CPU on this machine (event hooks, endpoint rules, checksum
and response parsing), more than the bytes they move for files of a few hundred KB.
``DirectS3`` makes just those three requests, path-style, with the SigV4 signature
computed by ``SigV4`` below (about 30 µs; botocore's signer alone takes ~0.4 ms), with
the credentials boto3 itself resolved (static keys, or temporary ones with their session
token: a role, an instance profile, SSO; refreshed as boto3 refreshes them). The answers
are mapped like the client's: 404 missing, 403 denied, 5xx, 408, 429, timeouts and
connection errors transient (tried ``attempts`` times in all, as botocore's standard mode
does). With tracing on, each request is a CLIENT span named as botocore's instrumentation
names it. ``DirectS3.presign`` signs the API's download links the same way (a page of
history presigns 20 of them). Everything else (buckets, multipart uploads, deletes), and
every request with FAST_PATHS false, stays with boto3 (``delineate/storage/client.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote, urlsplit

import urllib3

from delineate.errors import SourceUnavailable, StorageError
from delineate.storage.errors import check_etag, from_answer
from delineate.telemetry.tracing import tracing_ready

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SIGNED_HEADERS = "host;x-amz-content-sha256;x-amz-date"
SIGNED_WITH_TOKEN = "host;x-amz-content-sha256;x-amz-date;x-amz-security-token"  # noqa: S105 - header names
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


class Credentials(Protocol):
    """What a signature needs: botocore's ``ReadOnlyCredentials`` (a snapshot that cannot
    change while one request is signed)."""

    access_key: str
    secret_key: str
    token: str | None


class SigV4:
    """AWS Signature Version 4 for S3 header authentication, with no query string and the
    signed headers host, x-amz-content-sha256, x-amz-date (and x-amz-security-token with
    temporary credentials). Checked against botocore's ``S3SigV4Auth`` in
    ``tests/unit/test_s3_direct.py``."""

    def __init__(self, region: str, service: str = "s3") -> None:
        self._region = region
        self._service = service
        self._day_key: tuple[str, str, bytes] | None = None  # (day, secret, key): changes once a day

    def _signing_key(self, day: str, secret: str) -> bytes:
        if self._day_key is None or self._day_key[:2] != (day, secret):
            key = ("AWS4" + secret).encode()
            for part in (day, self._region, self._service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._day_key = (day, secret, key)
        return self._day_key[2]

    def headers(
        self,
        method: str,
        path: str,
        host: str,
        payload_sha256: str,
        credentials: Credentials,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """The headers that sign a request for ``path`` (already URI-encoded) on ``host``."""
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        token = credentials.token
        signed = SIGNED_WITH_TOKEN if token else SIGNED_HEADERS
        canonical = (
            f"{method}\n{path}\n\n"
            f"host:{host}\nx-amz-content-sha256:{payload_sha256}\nx-amz-date:{stamp}\n"
            + (f"x-amz-security-token:{token}\n" if token else "")
            + f"\n{signed}\n{payload_sha256}"
        )
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = self._signing_key(day, credentials.secret_key)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {
            "Host": host,
            "X-Amz-Date": stamp,
            "X-Amz-Content-SHA256": payload_sha256,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers

    def presigned_query(
        self,
        path: str,
        host: str,
        params: dict[str, str],
        expires_seconds: int,
        credentials: Credentials,
        now: datetime | None = None,
    ) -> str:
        """The query string of a presigned GET of ``path`` (already URI-encoded) on ``host``:
        ``params``, then the ``X-Amz-*`` ones and the signature (query-string authentication,
        signed header host, unsigned payload, as botocore's ``generate_presigned_url``)."""
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        query = {
            **params,
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{credentials.access_key}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires_seconds),
            "X-Amz-SignedHeaders": "host",
        }
        if credentials.token:
            query["X-Amz-Security-Token"] = credentials.token
        encoded = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        canonical = f"GET\n{path}\n{encoded}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day, credentials.secret_key), to_sign.encode(), hashlib.sha256)
        return f"{encoded}&X-Amz-Signature={signature.hexdigest()}"


class DirectS3:
    """HEAD, GET and PUT of one bucket's objects, path-style."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        credentials: Callable[[], Credentials],
        region: str,
        timeout_seconds: float,
        connect_seconds: float,
        attempts: int,
    ) -> None:
        parts = urlsplit(endpoint)
        self.bucket = bucket
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc  # what the request's Host header carries, port and all
        self._prefix = f"{parts.path.rstrip('/')}/{quote(bucket)}/"
        self._credentials = credentials  # boto3's, frozen per request (they may be refreshed)
        self._signer = SigV4(region)
        self._region = region
        self._attempts = max(1, attempts)
        self._pool = urllib3.PoolManager(
            maxsize=64,
            timeout=urllib3.Timeout(connect=connect_seconds, read=timeout_seconds),
            retries=False,
        )

    def presign(self, key: str, params: dict[str, str], expires_seconds: int) -> str:
        """A presigned GET link of ``key`` on this endpoint (about 30 µs; botocore's ~0.4 ms)."""
        path = self._prefix + quote(key, safe="/~")
        query = self._signer.presigned_query(path, self._host, params, expires_seconds, self._credentials())
        return f"{self._origin}{path}?{query}"

    # -- the three requests -----------------------------------------------------------

    def head(self, key: str) -> tuple[int, str] | None:
        """The object's size and ETag, or None when the store answers 404 (the caller tells a
        missing key from a missing bucket: a HEAD's answer has no body to say which)."""
        with self._span("HeadObject", key):
            response = self._send("HEAD", key)
        if response.status == 200:
            return int(response.headers.get("Content-Length", 0)), response.headers.get("ETag", "")
        if response.status == 404:
            return None
        raise self._refusal("HEAD", key, response)

    def get(self, key: str, chunk_size: int, etag: str = "") -> Iterator[bytes]:
        """The object's bytes as they arrive; an answer cut short raises SourceUnavailable.

        :raise FileNotFoundError: no such key.
        :raise SourceChanged: ``etag`` given, and the object's is another.
        """
        with self._span("GetObject", key):
            yield from self._get(key, chunk_size, etag)

    def _get(self, key: str, chunk_size: int, etag: str) -> Iterator[bytes]:
        response = self._send("GET", key, stream=True)
        finished = False
        try:
            if response.status != 200:
                self._missing_or_refused(key, response)
                raise FileNotFoundError(key)
            check_etag(key, etag, response.headers.get("ETag", ""))
            try:
                yield from response.stream(chunk_size, decode_content=False)
            except urllib3.exceptions.HTTPError as exc:  # cut off, or too slow: try again later
                raise SourceUnavailable(f"object store failed during GET {key}: {exc}") from None
            finished = True
        finally:
            if not finished:
                response.close()  # unread bytes would poison the pooled connection
            response.release_conn()

    def get_small(self, key: str, limit: int, chunk_size: int) -> tuple[int, str, list[bytes] | None] | None:
        """One GET that is also the check: the object's size and ETag, with its bytes when it has
        at most ``limit`` of them (a larger one's answer is closed unread); None when the
        key does not exist (a GET's error document names a missing bucket, unlike a HEAD).

        :raise SourceUnavailable: the answer was cut short, or the store did not answer.
        """
        with self._span("GetObject", key):
            return self._get_small(key, limit, chunk_size)

    def _get_small(self, key: str, limit: int, chunk_size: int) -> tuple[int, str, list[bytes] | None] | None:
        response = self._send("GET", key, stream=True)
        finished = False
        try:
            if response.status != 200:
                self._missing_or_refused(key, response)
                finished = True  # (its error document was read)
                return None
            size, etag = int(response.headers.get("Content-Length", 0)), response.headers.get("ETag", "")
            if size > limit:
                return size, etag, None  # (closed below: reading it would cost what a later GET does)
            try:
                chunks = list(response.stream(chunk_size, decode_content=False))
            except urllib3.exceptions.HTTPError as exc:
                raise SourceUnavailable(f"object store failed during GET {key}: {exc}") from None
            if sum(map(len, chunks)) != size:
                raise SourceUnavailable(f"object store sent a short answer to GET {key}")
            finished = True
            return size, etag, chunks
        finally:
            if not finished:
                response.close()
            response.release_conn()

    def put(self, key: str, body: bytes | list[bytes], content_type: str | None = None) -> None:
        """Write ``body``: bytes, or a list of chunks sent one after another (never
        joined: a bundle's pieces go out as they are, with no copy of the whole)."""
        chunks = [body] if isinstance(body, bytes) else body
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        headers = {"Content-Length": str(sum(map(len, chunks)))}
        if content_type:
            headers["Content-Type"] = content_type
        with self._span("PutObject", key):
            response = self._send("PUT", key, body=chunks, payload_sha256=digest.hexdigest(), headers=headers)
        if response.status != 200:
            raise self._refusal("PUT", key, response)

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _span(self, operation: str, key: str) -> Iterator[None]:
        """With tracing on, the request as a CLIENT span named and described as botocore's
        instrumentation does (``S3.GetObject``...), so a trace shows the same S3 calls
        whichever path made them; without, nothing."""
        if not tracing_ready():
            yield
            return
        from opentelemetry import trace

        attributes = {
            "rpc.system": "aws-api",
            "rpc.service": "S3",
            "rpc.method": operation,
            "aws.region": self._region,
            "aws.s3.bucket": self.bucket,
            "aws.s3.key": key,
        }
        tracer = trace.get_tracer("delineate.storage")
        with tracer.start_as_current_span(f"S3.{operation}", kind=trace.SpanKind.CLIENT, attributes=attributes):
            yield

    def _send(
        self,
        method: str,
        key: str,
        *,
        body: list[bytes] | None = None,
        payload_sha256: str = EMPTY_SHA256,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """The store's answer, once it is not a transient failure (those are retried)."""
        path = self._prefix + quote(key, safe="/~")
        for attempt in range(1, self._attempts + 1):
            signed = self._signer.headers(method, path, self._host, payload_sha256, self._credentials())
            if headers:
                signed.update(headers)
            try:
                response = self._pool.request(
                    method,
                    self._origin + path,
                    body=body,
                    headers=signed,
                    preload_content=not stream,
                    redirect=False,
                )
            except urllib3.exceptions.HTTPError as exc:
                if attempt == self._attempts:
                    raise SourceUnavailable(f"object store unreachable during {method} {key}: {exc}") from None
            else:
                status = response.status
                if status < 500 and status not in (408, 429):
                    return response
                response.drain_conn()
                if attempt == self._attempts:
                    raise SourceUnavailable(f"object store error during {method} {key}: {status}")
            time.sleep(random.uniform(0, 0.1 * 2**attempt))  # the standard mode's jittered backoff
        raise SourceUnavailable(f"object store unreachable during {method} {key}")  # not reached

    def _missing_or_refused(self, key: str, response: urllib3.BaseHTTPResponse) -> None:
        """A GET's answer other than 200 that says the key does not exist; else raise.

        :raise StorageError: any other answer (a missing bucket among them).
        """
        body = response.read()
        if response.status != 404 or _error_code(body) == "NoSuchBucket":
            raise self._refusal("GET", key, response, body)

    def _refusal(
        self, method: str, key: str, response: urllib3.BaseHTTPResponse, body: bytes | None = None
    ) -> StorageError:
        code = _error_code(response.data if body is None else body) or str(response.status)
        return from_answer(code, response.status, f"{method} {key}", self.bucket)


def _error_code(body: bytes | None) -> str:
    """The ``<Code>`` of an S3 error document ('' when there is none)."""
    found = _ERROR_CODE.search(body or b"")
    return found.group(1).decode(errors="replace") if found else ""
