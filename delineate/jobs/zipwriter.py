"""A streaming zip of stored entries whose bytes depend only on its inputs.

The layout is zipstream-ng's (local header with a data descriptor, ZIP64 fields only for
large sizes and offsets), so the planner's overheads (``delineate/jobs/parts.py``) hold,
with two differences a resumed bundle needs (``delineate/jobs/resume.py``): every entry
carries the one timestamp it is given (zipstream-ng stamps the clock's), and an entry
already written can be *kept*: its CRC and size stand in for its bytes, so the writer's
offsets and central directory come out as if it had been streamed again.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ZIP64_LIMIT = (1 << 31) - 1
ZIP64_ESTIMATE_FACTOR = 1.05
"""zipstream-ng's test for ZIP64 sizes (its margin for compression, kept for the same bytes)."""
DEFAULT_VERSION = 20
ZIP64_VERSION = 45
CREATE_SYSTEM_UNIX = 3
FLAG_DATA_DESCRIPTOR = 0x08
EXTERNAL_ATTR = 0o600 << 16
"""``?rw-------``, what zipstream-ng gives an entry added from data."""

DateTime = tuple[int, int, int, int, int, int]


def _dos(date_time: DateTime) -> tuple[int, int]:
    year, month, day, hour, minute, second = date_time
    return (year - 1980) << 9 | month << 5 | day, hour << 11 | minute << 5 | second // 2


@dataclass(frozen=True)
class Entry:
    """One written entry: all the central directory needs, and all a resume keeps."""

    name: str
    size: int
    crc: int
    offset: int

    @property
    def zip64(self) -> bool:
        return self.size * ZIP64_ESTIMATE_FACTOR > ZIP64_LIMIT

    @property
    def length(self) -> int:
        """Its bytes in the archive: local header, data and data descriptor."""
        return 30 + len(self.name.encode()) + (20 if self.zip64 else 0) + self.size + (24 if self.zip64 else 16)


class StoredZip:
    """Writes entries one after another, then the central directory (:meth:`finish`)."""

    def __init__(self, date_time: DateTime) -> None:
        self._date, self._time = _dos(date_time)[0], _dos(date_time)[1]
        self.entries: list[Entry] = []
        self.offset = 0

    def keep(self, entry: Entry) -> None:
        """Count an entry written by an earlier run as written (its bytes are not produced)."""
        if entry.offset != self.offset:
            raise ValueError(f"kept entry {entry.name} at {entry.offset}, expected {self.offset}")
        self.entries.append(entry)
        self.offset += entry.length

    def add(self, name: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yield the entry's bytes; ``size`` is declared up front (it picks the ZIP64 form)."""
        encoded = name.encode()
        zip64 = size * ZIP64_ESTIMATE_FACTOR > ZIP64_LIMIT
        version = ZIP64_VERSION if zip64 else DEFAULT_VERSION
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) if zip64 else b""
        sizes = 0xFFFFFFFF if zip64 else 0
        header = struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", version, 0, FLAG_DATA_DESCRIPTOR, 0,
            self._time, self._date, 0, sizes, sizes, len(encoded), len(extra),
        )  # fmt: skip
        offset = self.offset
        yield header + encoded + extra
        crc = written = 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            written += len(chunk)
            yield chunk
        entry = Entry(name, written, crc, offset)
        if entry.zip64 != zip64:
            raise ValueError(f"entry {name} declared {size} bytes but had {written}")
        yield struct.pack("<4sLQQ" if zip64 else "<4sLLL", b"PK\x07\x08", crc, written, written)
        self.entries.append(entry)
        self.offset += entry.length

    def finish(self) -> Iterator[bytes]:
        """Yield the central directory and the end records."""
        start = self.offset
        directory = b"".join(self._central(entry) for entry in self.entries)
        yield directory
        count, size, end = len(self.entries), len(directory), start + len(directory)
        if count >= 0xFFFF or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
            yield struct.pack(
                "<4sQ2H2L4Q", b"PK\x06\x06", 44, ZIP64_VERSION, ZIP64_VERSION, 0, 0, count, count, size, start
            ) + struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
            count, size, start = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
        yield struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, start, 0)

    def _central(self, entry: Entry) -> bytes:
        fields: list[int] = []
        size = entry.size
        if size > ZIP64_LIMIT:
            fields += [size, size]
            size = 0xFFFFFFFF
        offset = entry.offset
        if offset > ZIP64_LIMIT:
            fields.append(offset)
            offset = 0xFFFFFFFF
        extra = struct.pack("<HH" + "Q" * len(fields), 1, 8 * len(fields), *fields) if fields else b""
        # (zipstream-ng raises both versions to 45 once the local header used ZIP64)
        version = ZIP64_VERSION if fields or entry.zip64 else DEFAULT_VERSION
        encoded = entry.name.encode()
        header = struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", version, CREATE_SYSTEM_UNIX, version, 0,
            FLAG_DATA_DESCRIPTOR, 0, self._time, self._date, entry.crc, size, size,
            len(encoded), len(extra), 0, 0, 0, EXTERNAL_ATTR, offset,
        )  # fmt: skip
        return header + encoded + extra
