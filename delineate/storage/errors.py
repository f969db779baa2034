"""botocore's exceptions as the project's (:mod:`delineate.errors`): ``SourceUnavailable``
for what may pass, ``StorageMisconfigured`` for what never will, ``StorageError`` else."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from delineate.errors import SourceUnavailable, StorageError, StorageMisconfigured

ACCESS_DENIED = "access to the bucket {bucket!r} was denied (check S3 credentials)"
NO_SUCH_BUCKET = "the bucket {bucket!r} does not exist"

_TRANSIENT_CODES = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
}
_PERMANENT_CODES = {
    "NoSuchBucket": NO_SUCH_BUCKET,
    "AccessDenied": ACCESS_DENIED,
    "403": ACCESS_DENIED,
    "InvalidAccessKeyId": "the S3 access key is not known to the store",
    "SignatureDoesNotMatch": "the S3 secret key does not match the access key",
}
_NETWORK_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


def from_answer(code: str, status: int, action: str, bucket: str, fallback: str = "") -> StorageError:
    """The project's exception for the store's refusal ``code`` (its error document's
    ``<Code>``, or the status as text when there is none) with HTTP ``status``: one
    mapping for boto3's answers and the direct requests' alike."""
    if code in _PERMANENT_CODES:
        return StorageMisconfigured(f"{action} failed: {_PERMANENT_CODES[code].format(bucket=bucket)}")
    if code in _TRANSIENT_CODES or status >= 500:
        return SourceUnavailable(f"object store error during {action}: {code}")
    return StorageError(f"{action} failed: {code or fallback or status}")


def convert(exc: Exception, action: str, bucket: str) -> StorageError:
    """The project's exception for ``exc``, raised by a boto3 call during ``action`` on ``bucket``."""
    if isinstance(exc, _NETWORK_ERRORS):
        return SourceUnavailable(f"object store unreachable during {action}: {exc}")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return from_answer(code, status if isinstance(status, int) else 0, action, bucket, fallback=str(exc))
    if isinstance(exc, BotoCoreError):
        return SourceUnavailable(f"object store error during {action}: {exc}")
    return StorageError(f"{action} failed: {exc}")


class SourceChanged(ValueError):
    """An object read for a bundle is not the version its check saw (another ETag): the bundle
    would not be what its sources' ETags say (``jobs/reuse.py`` shares it by them)."""


def check_etag(key: str, expected: str, actual: str) -> None:
    """:raise SourceChanged: ``expected`` (when given) is not ``actual``."""
    if expected and actual != expected:
        raise SourceChanged(f"{key} changed since it was checked (ETag {actual}, expected {expected})")
