"""A bundle's upload at one part's memory, and the sweeper's abort of abandoned uploads
(a mixin of :class:`~delineate.storage.client.Storage`).

A resumable upload (``checkpoint``) reports each part S3 acknowledged, so that a later run
can continue it (``delineate/jobs/resume.py``) with the rest of the bytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from delineate.storage.errors import convert

logger = logging.getLogger(__name__)

PART_SIZE_BYTES = 8 * 1024 * 1024
"""Multipart upload part size in bytes (S3's minimum is 5 MiB); bounds a bundle's buffer."""


@dataclass
class OpenUpload:
    """A multipart upload in progress: its id, the parts S3 acknowledged (number, ETag),
    and how many bytes of the object they hold (each part but the last is
    :data:`PART_SIZE_BYTES`, so the next part starts there)."""

    upload_id: str
    parts: list[tuple[int, str]] = field(default_factory=list)
    size: int = 0


@dataclass
class Checkpoint:
    """Makes an upload resumable: ``saved`` is called after every part S3 acknowledged;
    ``resumed`` is the upload an earlier run left, continued from its ``size`` (the chunks
    given then start at that byte)."""

    saved: Callable[[OpenUpload], None]
    resumed: OpenUpload | None = None


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

    def listed_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]] | None:
        """The parts (number → ETag, size) of an open multipart upload; None when it is no
        longer open (completed, aborted, or never started).

        :raise StorageError: the store refused or did not answer.
        """
        found: dict[int, tuple[str, int]] = {}
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
        try:
            while True:
                page = self._client.list_parts(**kwargs)
                for part in page.get("Parts", []):
                    found[part["PartNumber"]] = (part["ETag"], part["Size"])
                if not page.get("IsTruncated"):
                    return found
                kwargs["PartNumberMarker"] = page["NextPartNumberMarker"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchUpload", "404"}:
                return None
            raise convert(exc, f"list parts of {key}", self.bucket) from None
        except (BotoCoreError, OSError) as exc:
            raise convert(exc, f"list parts of {key}", self.bucket) from None

    def upload_stream(self, key: str, chunks: Iterable[bytes], checkpoint: Checkpoint | None = None) -> int:
        """Write ``chunks`` to ``key``; returns the byte count (of the whole object).

        Memory stays at one part (:data:`PART_SIZE_BYTES`) whatever the total size: the
        first part is gathered in memory, and a stream that ends within it is written by
        one PUT (a multipart upload costs three requests, the bulk of a small bundle's
        time); a longer one goes by multipart upload. On any error a started upload is
        aborted, so no half-written object is left; but not a resumable one
        (``checkpoint``): it is left for the job's next run, and the sweeper aborts it
        when none comes (``abort_stale_uploads``).
        """
        if checkpoint is not None and checkpoint.resumed is not None:
            return self._continue(key, iter(chunks), checkpoint, checkpoint.resumed)
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

        upload = OpenUpload(upload_id)
        try:
            self._send(key, iterator, upload, buffer, checkpoint)
        except BaseException as exc:
            if checkpoint is None:
                self._abort(key, upload_id)
            if isinstance(exc, (BotoCoreError, ClientError, OSError)):
                raise convert(exc, action, self.bucket) from None
            raise
        return upload.size

    def _continue(self, key: str, iterator: Iterable[bytes], checkpoint: Checkpoint, upload: OpenUpload) -> int:
        """Go on with an upload an earlier run left at ``upload.size`` bytes."""
        try:
            self._send(key, iter(iterator), upload, bytearray(), checkpoint)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise convert(exc, f"upload {key}", self.bucket) from None
        return upload.size

    def _send(
        self,
        key: str,
        iterator: Iterable[bytes],
        upload: OpenUpload,
        buffer: bytearray,
        checkpoint: Checkpoint | None,
    ) -> None:
        """Upload the rest in parts of :data:`PART_SIZE_BYTES`, then complete the upload."""
        for chunk in iterator:
            buffer += chunk
            while len(buffer) >= PART_SIZE_BYTES:
                self._upload_part(key, upload, bytes(buffer[:PART_SIZE_BYTES]), checkpoint)
                del buffer[:PART_SIZE_BYTES]
        while len(buffer) >= PART_SIZE_BYTES:  # the first part, when nothing followed it
            self._upload_part(key, upload, bytes(buffer[:PART_SIZE_BYTES]), checkpoint)
            del buffer[:PART_SIZE_BYTES]
        if buffer or not upload.parts:
            self._upload_part(key, upload, bytes(buffer), checkpoint)
        buffer.clear()
        self._client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload.upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in upload.parts]},
        )

    def _upload_part(self, key: str, upload: OpenUpload, body: bytes, checkpoint: Checkpoint | None) -> None:
        number = len(upload.parts) + 1
        response = self._client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload.upload_id, PartNumber=number, Body=body
        )
        upload.parts.append((number, response["ETag"]))
        upload.size += len(body)
        if checkpoint is not None:
            checkpoint.saved(upload)  # (dying before this: the part is sent again, same bytes)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError, OSError) as exc:
            # The sweeper aborts what an abort here could not (abort_stale_uploads).
            logger.warning("could not abort multipart upload of %s: %s", key, exc)
