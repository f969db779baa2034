"""Checks of a downloaded result: a zip against its ``manifest.json``, and a part of a
result in parts against its entry in the job's status (size, sha256, file count) too."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from delineate.client.errors import VerificationError

READ_CHUNK_BYTES = 256 * 1024
"""Bytes read at a time while hashing."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected_size: int | None = None) -> dict[str, Any] | None:
    """Check a downloaded result; returns its manifest (None: not a bundle).

    A bundle (it holds ``manifest.json``): every listed entry exists with the listed size
    and sha256, and the zip's own CRCs hold. Anything else: its size matches.

    :raise VerificationError: on any mismatch.
    """
    if expected_size is not None and path.stat().st_size != expected_size:
        raise VerificationError(f"size is {path.stat().st_size} bytes, the server announced {expected_size}")
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            if "manifest.json" not in zf.namelist():
                return None
            manifest = json.loads(zf.read("manifest.json"))
            for entry in manifest.get("files", []):
                name = f"{entry['file_id']}.zip"
                digest = hashlib.sha256()
                size = 0
                with zf.open(name) as member:
                    while chunk := member.read(READ_CHUNK_BYTES):
                        digest.update(chunk)
                        size += len(chunk)
                if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
                    raise VerificationError(f"{name} does not match manifest.json (size or sha256)")
            return dict(manifest)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise VerificationError(f"the result is corrupt: {exc}") from None


def verify_part(path: Path, part: dict[str, Any], job_id: str, count: int) -> None:
    """Check part ``part["index"]`` of ``count`` of job ``job_id``'s result: its size and
    sha256 as the status gives them, then every entry against its own manifest, which must
    name this job and part, and list exactly the part's files (the last part: also
    ``missing``) and nothing else.

    :raise VerificationError: on any mismatch.
    """
    name = f"part {part['index']} of {count}"
    if path.stat().st_size != part["size"] or sha256_of(path) != part["sha256"]:
        raise VerificationError(f"{name} does not match its size or sha256 in the job's status")
    manifest = verify(path)
    if manifest is None:
        raise VerificationError(f"{name} has no manifest.json")
    with zipfile.ZipFile(path) as zf:
        entries = sorted(n for n in zf.namelist() if n != "manifest.json")
    listed = sorted(f"{entry['file_id']}.zip" for entry in manifest.get("files", []))
    last = part["index"] == count
    if (
        manifest.get("jobId") != job_id
        or (manifest.get("part"), manifest.get("parts")) != (part["index"], count)
        or entries != listed
        or len(listed) != part["files"]
        or ("missing" in manifest) != last
    ):
        raise VerificationError(f"{name}: its manifest.json does not describe it")
