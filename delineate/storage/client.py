"""The boto3 client behind :class:`Storage`, and the methods the project calls on it
(multipart uploads in :mod:`delineate.storage.multipart`, the worker's hot requests in
:mod:`delineate.storage.direct`)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from delineate.config import Settings
from delineate.errors import StorageError, StorageMisconfigured
from delineate.storage.direct import DirectS3
from delineate.storage.errors import check_etag, convert
from delineate.storage.multipart import Multipart

READ_CHUNK_BYTES = 256 * 1024
"""Bytes read from a source object at a time while bundling."""

PRESIGN_REUSE_SHARE = 0.1
"""A presigned link is handed out again for this share of its lifetime (so any link a
status read returns still has at least 90 % of PRESIGNED_URL_EXPIRY_SECONDS to live)."""

PRESIGN_CACHE_ENTRIES = 10_000
"""Links kept per process for reuse; the oldest go first."""

CONNECT_TIMEOUT_SECONDS = 2.0
"""How long a request to the object store may take to connect, in seconds (at most: a
shorter ``timeout_seconds`` caps it)."""

READ_TIMEOUT_SECONDS = 5.0
"""How long a request waits for the store's next bytes before that try counts as failed, in
seconds (botocore's default is 60; this was 10): with ATTEMPTS, a stalled store holds one of
the worker's calls about 15 s at most, well within a job's lease (JOB_LEASE_SECONDS, 30)."""

ATTEMPTS = 3
"""Tries of one request in all, the first included, on boto3's path (its standard retry
mode, jittered backoff from 50 ms) and the direct requests' alike (it was 3 on boto3's, 2
on the direct path); past them the call raises ``SourceUnavailable`` and the task retries
the job by the retry policy (``jobs/retry.py``). A read cut off mid-body is not tried
again here: the task retries the job."""

BUCKET_CONFIRMED_SECONDS = 5.0
"""A HEAD's 404 cannot tell a missing key from a missing bucket, so the bucket is asked;
once it answered, 404s within this many seconds are missing keys without asking again (an
estimate of 1,000 mostly absent ids made a bucket request for each: most of its time).
``/health`` always asks."""


def _timestamp(value: str) -> datetime:
    """botocore's timestamp parser, quicker for the forms S3 sends.

    Every HEAD carries Last-Modified, and botocore parses it with dateutil: about a
    fifth of a HEAD's CPU. S3 sends RFC 7231 dates in headers and ISO 8601 in bodies,
    both of which the standard library reads; anything else goes to botocore's parser.
    """
    try:
        if value[:1].isdigit():
            parsed = datetime.fromisoformat(value)
        else:
            parsed = email.utils.parsedate_to_datetime(value)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        return botocore.utils.parse_timestamp(value)  # type: ignore[no-any-return]


def _botocore_session() -> botocore.session.Session:
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
    return session


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""  # as the store sends it, quotes and all ("" when it sends none)


class Storage(Multipart):
    """The object store, as the rest of the project needs it."""

    def __init__(
        self, settings: Settings, *, timeout_seconds: float = READ_TIMEOUT_SECONDS, attempts: int = ATTEMPTS
    ) -> None:
        """``timeout_seconds``: each try's read timeout (its connect timeout is at most
        CONNECT_TIMEOUT_SECONDS); ``attempts``: tries per request in all, on both paths."""
        self.bucket = settings.s3_bucket_name
        self._settings = settings
        config = Config(
            region_name=settings.s3_region,
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.s3_force_path_style else "auto"},
            connect_timeout=min(timeout_seconds, CONNECT_TIMEOUT_SECONDS),
            read_timeout=timeout_seconds,
            # total_max_attempts counts the first try (botocore's "max_attempts" does not, so
            # it made one try more than the direct requests with the same number).
            retries={"total_max_attempts": attempts, "mode": "standard"},
            max_pool_connections=64,
            parameter_validation=False,  # every call's parameters are built here, not by users
        )
        # Keys from the settings; left empty, boto3 finds them itself (its environment
        # variables, a web identity token, an instance profile, SSO), temporary ones included.
        session = boto3.session.Session(
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            region_name=settings.s3_region,
            botocore_session=_botocore_session(),
        )
        self._session = session
        self._client = session.client("s3", endpoint_url=settings.s3_endpoint, config=config)
        # Presigning is local arithmetic; a second client signs for the public endpoint.
        if settings.s3_public_endpoint != settings.s3_endpoint:
            self._public = session.client("s3", endpoint_url=settings.s3_public_endpoint, config=config)
        else:
            self._public = self._client
        self._presigned: dict[tuple[str, str], tuple[float, str]] = {}
        # A job's HEADs, GETs and small PUT, without botocore's client machinery (see
        # delineate/storage/direct.py), signed with the credentials boto3 resolved; only
        # with FAST_PATHS, path-style addressing and credentials to sign with. The download
        # links are signed the same way, on the public endpoint.
        credentials = session.get_credentials()
        self._direct: DirectS3 | None = None
        self._links: DirectS3 | None = None
        if settings.fast_paths and settings.s3_force_path_style and credentials is not None:
            self._direct, self._links = (
                DirectS3(
                    endpoint=endpoint,
                    bucket=settings.s3_bucket_name,
                    credentials=credentials.get_frozen_credentials,
                    region=settings.s3_region,
                    timeout_seconds=timeout_seconds,
                    connect_seconds=min(timeout_seconds, CONNECT_TIMEOUT_SECONDS),
                    attempts=attempts,
                )
                for endpoint in (settings.s3_endpoint, settings.s3_public_endpoint)
            )
        self._reuse_seconds = settings.presigned_url_expiry_seconds * PRESIGN_REUSE_SHARE
        self._bucket_confirmed_at = float("-inf")

    def _lean(self) -> DirectS3 | None:
        """The direct requests (None: boto3 for everything)."""
        return self._direct

    # -- reads ----------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        """Size of ``key``, or None when it does not exist.

        :raise SourceUnavailable: the store did not answer.
        :raise StorageMisconfigured: bucket missing or access denied.
        """
        if (direct := self._lean()) is not None:
            found = direct.head(key)
            if found is None:
                self._confirm_bucket()  # a HEAD cannot tell a missing bucket from a missing key
                return None
            return ObjectInfo(key=key, size=found[0], etag=found[1])
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                self._confirm_bucket()  # a HEAD cannot tell a missing bucket from a missing key
                return None
            raise convert(exc, f"HEAD {key}", self.bucket) from None
        except (BotoCoreError, OSError) as exc:
            raise convert(exc, f"HEAD {key}", self.bucket) from None
        return ObjectInfo(key=key, size=int(response["ContentLength"]), etag=response.get("ETag", ""))

    def read_small(self, key: str, limit: int) -> tuple[ObjectInfo, list[bytes] | None] | None:
        """Check ``key`` with a GET instead of a HEAD: its size, and its bytes when it has
        at most ``limit`` of them (else None in their place: stream it later with
        :meth:`iter_object`); None when it does not exist. One request where a HEAD and
        a GET would be two.

        :raise SourceUnavailable: the store did not answer, or cut its answer short.
        :raise StorageMisconfigured: bucket missing or access denied.
        """
        if (direct := self._lean()) is not None:
            found = direct.get_small(key, limit, READ_CHUNK_BYTES)
            return None if found is None else (ObjectInfo(key=key, size=found[0], etag=found[1]), found[2])
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            info = ObjectInfo(key=key, size=int(response["ContentLength"]), etag=response.get("ETag", ""))
            body = response["Body"]
            try:
                if info.size > limit:
                    return info, None
                chunks = list(body.iter_chunks(READ_CHUNK_BYTES))  # (botocore checks the length)
            finally:
                body.close()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                return None
            raise convert(exc, f"GET {key}", self.bucket) from None
        except (BotoCoreError, OSError) as exc:
            raise convert(exc, f"GET {key}", self.bucket) from None
        return info, chunks

    def iter_object(self, key: str, chunk_size: int = READ_CHUNK_BYTES, etag: str = "") -> Iterator[bytes]:
        """Stream an object's bytes without holding it in memory.

        :raise FileNotFoundError: the object vanished since it was checked.
        :raise SourceChanged: ``etag`` given, and the object's is another (nothing yielded).
        """
        if (direct := self._lean()) is not None:
            yield from direct.get(key, chunk_size, etag)
            return
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                check_etag(key, etag, response.get("ETag", ""))
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                raise FileNotFoundError(key) from None
            raise convert(exc, f"GET {key}", self.bucket) from None
        except (BotoCoreError, OSError) as exc:
            raise convert(exc, f"GET {key}", self.bucket) from None

    def list_between(self, first: str, last: str, limit: int) -> dict[str, ObjectInfo] | None:
        """Every object whose key sorts from ``first`` to ``last`` (both included), with its
        size and ETag, by listing (1,000 keys a request, where a HEAD tells one); None when
        more than ``limit`` keys lie there (ask for each instead).

        :raise SourceUnavailable: the store did not answer.
        :raise StorageMisconfigured: bucket missing or access denied.
        """
        # StartAfter is exclusive: start after `first` less its last character, which sorts before it.
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "StartAfter": first[:-1], "MaxKeys": min(limit + 1, 1000)}
        found: dict[str, ObjectInfo] = {}
        seen = 0
        try:
            while True:
                page = self._client.list_objects_v2(**kwargs)
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key > last:
                        return found
                    seen += 1
                    if seen > limit:
                        return None
                    if key >= first:
                        found[key] = ObjectInfo(key=key, size=int(item["Size"]), etag=item.get("ETag", ""))
                if not page.get("IsTruncated"):
                    return found
                kwargs["ContinuationToken"] = page["NextContinuationToken"]
        except (BotoCoreError, ClientError, OSError) as exc:
            raise convert(exc, "LIST sources", self.bucket) from None

    def list_sizes(self, prefix: str, start_after: str, max_keys: int = 1000) -> tuple[dict[str, int], bool]:
        """The keys under ``prefix`` after ``start_after`` in key order, at most ``max_keys``,
        with their sizes; and whether more follow. One request where a HEAD per key would
        be up to ``max_keys``.

        :raise SourceUnavailable: the store did not answer.
        :raise StorageMisconfigured: bucket missing, or listing not allowed (s3:ListBucket).
        """
        try:
            response = self._client.list_objects_v2(
                Bucket=self.bucket, Prefix=prefix, StartAfter=start_after, MaxKeys=max_keys
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise convert(exc, f"LIST {prefix}", self.bucket) from None
        sizes = {str(item["Key"]): int(item["Size"]) for item in response.get("Contents", ())}
        return sizes, bool(response.get("IsTruncated"))

    def _confirm_bucket(self) -> None:
        """:meth:`check_bucket`, unless the bucket answered in the last BUCKET_CONFIRMED_SECONDS."""
        if time.monotonic() - self._bucket_confirmed_at < BUCKET_CONFIRMED_SECONDS:
            return
        self.check_bucket()
        self._bucket_confirmed_at = time.monotonic()

    def check_bucket(self) -> None:
        """:raise StorageError: the bucket cannot be used."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise StorageMisconfigured(f"the bucket {self.bucket!r} does not exist") from None
            raise convert(exc, "HEAD bucket", self.bucket) from None
        except (BotoCoreError, OSError) as exc:
            raise convert(exc, "HEAD bucket", self.bucket) from None

    # -- writes ---------------------------------------------------------------

    def ensure_bucket(self) -> bool:
        """Create the bucket if missing. Returns True when it was created."""
        try:
            self.check_bucket()
            return False
        except StorageMisconfigured:
            pass
        try:
            self._client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            }:
                return False
            raise convert(exc, "create bucket", self.bucket) from None
        except (BotoCoreError, OSError) as exc:
            raise convert(exc, "create bucket", self.bucket) from None
        return True

    def put(self, key: str, data: bytes | list[bytes], content_type: str | None = None) -> None:
        """Write ``data`` (bytes, or a list of chunks) to ``key`` in one request."""
        if (direct := self._lean()) is not None:
            direct.put(key, data, content_type)
            return
        extra = {"ContentType": content_type} if content_type else {}
        body = data if isinstance(data, bytes) else b"".join(data)
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise convert(exc, f"PUT {key}", self.bucket) from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise convert(exc, f"DELETE {key}", self.bucket) from None

    def delete_many(self, keys: list[str]) -> None:
        """Delete up to 1000 keys in one request; missing keys are no error.

        :raise StorageError: the store refused or did not answer (nothing is retried here:
            the sweeper calls again next time).
        """
        if not keys:
            return
        try:
            response = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[:1000]], "Quiet": True}
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise convert(exc, f"DELETE {len(keys)} objects", self.bucket) from None
        errors = [e for e in response.get("Errors", []) if e.get("Code") not in {"NoSuchKey", "404"}]
        if errors:
            raise StorageError(f"DELETE {len(keys)} objects failed for {len(errors)}: {errors[0].get('Code')}")

    # -- links ----------------------------------------------------------------

    def presign_reused(self, key: str, download_name: str) -> str:
        """Like :meth:`presign`, but a link made in the last PRESIGN_REUSE_SHARE of its
        lifetime is returned again: SigV4 signing in botocore costs about as much as the
        rest of a status read, and pollers read a completed job's status many times."""
        now = time.monotonic()
        cache_key = (key, download_name)
        hit = self._presigned.get(cache_key)
        if hit is not None and now - hit[0] < self._reuse_seconds:
            return hit[1]
        url = self.presign(key, download_name)
        if len(self._presigned) >= PRESIGN_CACHE_ENTRIES:
            try:
                self._presigned.pop(next(iter(self._presigned)), None)
            except (StopIteration, RuntimeError):  # emptied or changed by another thread
                pass
        self._presigned[cache_key] = (now, url)
        return url

    def presign(self, key: str, download_name: str) -> str:
        """A GET link on the public endpoint, valid for PRESIGNED_URL_EXPIRY_SECONDS."""
        disposition = f'attachment; filename="{download_name}"'
        if self._links is not None:
            expires = self._settings.presigned_url_expiry_seconds
            return self._links.presign(key, {"response-content-disposition": disposition}, expires)
        return str(
            self._public.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentDisposition": disposition,
                },
                ExpiresIn=self._settings.presigned_url_expiry_seconds,
            )
        )
