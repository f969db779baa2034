"""Every boto3 call of the project lives here (and the worker's hot requests, made by
:mod:`delineate.storage.direct` behind the same methods).

Callers see plain values and the project's exceptions (:mod:`delineate.errors`),
never botocore types: ``SourceUnavailable`` for what may pass (connection errors,
timeouts, 5xx, throttling), ``StorageMisconfigured`` for what never will (no such
bucket, access denied).

The parts: :mod:`~delineate.storage.keys` (the object layout), :mod:`~delineate.storage.client`
(:class:`Storage`), :mod:`~delineate.storage.multipart`, :mod:`~delineate.storage.direct`
and :mod:`~delineate.storage.errors` (botocore's errors as ours).
"""

from __future__ import annotations

from delineate.storage.client import (
    PRESIGN_CACHE_ENTRIES,
    PRESIGN_REUSE_SHARE,
    READ_CHUNK_BYTES,
    ObjectInfo,
    Storage,
)
from delineate.storage.keys import bundle_key, part_key, parts_prefix, source_key
from delineate.storage.multipart import PART_SIZE_BYTES, Checkpoint, OpenUpload

__all__ = [
    "PART_SIZE_BYTES",
    "PRESIGN_CACHE_ENTRIES",
    "PRESIGN_REUSE_SHARE",
    "READ_CHUNK_BYTES",
    "Checkpoint",
    "ObjectInfo",
    "OpenUpload",
    "Storage",
    "bundle_key",
    "part_key",
    "parts_prefix",
    "source_key",
]
