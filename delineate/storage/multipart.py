"""A bundle's upload at one part's memory, and the sweeper's abort of abandoned uploads
(a mixin of :class:`~delineate.storage.client.Storage`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from delineate.storage.errors import convert

logger = logging.getLogger(__name__)

PART_SIZE_BYTES = 8 * 1024 * 1024
"""Multipart upload part size in bytes (S3's minimum is 5 MiB); bounds a bundle's buffer."""


class Multipart:
    """Multipart uploads of :class:`~delineate.storage.client.Storage`'s bucket."""

    if TYPE_CHECKING:  # provided by Storage
        bucket: str
        _client: Any

        def put(self, key: str, data: bytes | list[bytes], content_type: str | None = None) -> None: ...

    def abort_stale_uploads(self, prefix: str, older_than_seconds: float) -> int:
        """Abort multipart uploads under ``prefix`` started more than ``older_than_seconds``
        ago (a worker that died mid-upload leaves its parts behind). Returns how many.

        :raise StorageError: the store refused or did not answer.
        """
        cutoff = time.time() - older_than_seconds
        aborted = 0
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        try:
            while True:
                page = self._client.list_multipart_uploads(**kwargs)
                for upload in page.get("Uploads", []):
                    started = upload.get("Initiated")
                    if started is not None and started.timestamp() < cutoff:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
                if not page.get("IsTruncated"):
                    return aborted
                kwargs["KeyMarker"] = page.get("NextKeyMarker", "")
                kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
        except (BotoCoreError, ClientError, OSError) as exc:
            raise convert(exc, "list or abort multipart uploads", self.bucket) from None

    def upload_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to ``key``; returns the byte count.

        Memory stays at one part (:data:`PART_SIZE_BYTES`) whatever the total size: the
        first part is gathered in memory, and a stream that ends within it is written by
        one PUT (a multipart upload costs three requests, the bulk of a small bundle's
        time); a longer one goes by multipart upload. On any error a started upload is
        aborted, so no half-written object is left.
        """
        action = f"upload {key}"
        iterator = iter(chunks)
        first: list[bytes] = []  # the pieces, not a joined copy: a small bundle's PUT sends them
        size = 0
        for chunk in iterator:
            first.append(chunk)
            size += len(chunk)
            if size >= PART_SIZE_BYTES:
                break
        else:
            self.put(key, first, "application/zip")
            return size
        buffer = bytearray(b"".join(first))
        del first
        try:
            upload_id = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType="application/zip"
            )["UploadId"]
        except (BotoCoreError, ClientError, OSError) as exc:
            raise convert(exc, action, self.bucket) from None

        parts: list[dict[str, Any]] = []
        total = len(buffer)
        try:
            for chunk in iterator:
                buffer += chunk
                total += len(chunk)
                while len(buffer) >= PART_SIZE_BYTES:
                    self._upload_part(key, upload_id, parts, bytes(buffer[:PART_SIZE_BYTES]))
                    del buffer[:PART_SIZE_BYTES]
            while len(buffer) >= PART_SIZE_BYTES:  # the first part, when nothing followed it
                self._upload_part(key, upload_id, parts, bytes(buffer[:PART_SIZE_BYTES]))
                del buffer[:PART_SIZE_BYTES]
            if buffer or not parts:
                self._upload_part(key, upload_id, parts, bytes(buffer))
            buffer.clear()
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            self._abort(key, upload_id)
            if isinstance(exc, (BotoCoreError, ClientError, OSError)):
                raise convert(exc, action, self.bucket) from None
            raise
        return total

    def _upload_part(self, key: str, upload_id: str, parts: list[dict[str, Any]], body: bytes) -> None:
        number = len(parts) + 1
        response = self._client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError, OSError) as exc:
            # The sweeper aborts what an abort here could not (abort_stale_uploads).
            logger.warning("could not abort multipart upload of %s: %s", key, exc)
