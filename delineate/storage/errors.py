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


def convert(exc: Exception, action: str, bucket: str) -> StorageError:
    """The project's exception for ``exc``, raised by a boto3 call during ``action`` on ``bucket``."""
    if isinstance(exc, _NETWORK_ERRORS):
        return SourceUnavailable(f"object store unreachable during {action}: {exc}")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _PERMANENT_CODES:
            text = _PERMANENT_CODES[code].format(bucket=bucket)
            return StorageMisconfigured(f"{action} failed: {text}")
        if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
            return SourceUnavailable(f"object store error during {action}: {code}")
        return StorageError(f"{action} failed: {code or exc}")
    if isinstance(exc, BotoCoreError):
        return SourceUnavailable(f"object store error during {action}: {exc}")
    return StorageError(f"{action} failed: {exc}")
