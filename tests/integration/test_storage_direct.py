"""The worker's direct S3 requests (delineate/storage/direct.py) against the real SeaweedFS, and
against a store that misbehaves: every answer maps to the project's errors, never a short file."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from delineate.config import Settings
from delineate.errors import SourceUnavailable, StorageError, StorageMisconfigured
from delineate.storage import Storage
from delineate.storage.client import ATTEMPTS


def test_put_get_head_round_trip(storage: Storage) -> None:
    data = os.urandom(700_000)
    storage.put("tests/direct/round-trip.bin", data, "application/zip")
    info = storage.head("tests/direct/round-trip.bin")
    assert info is not None and info.size == len(data)
    assert b"".join(storage.iter_object("tests/direct/round-trip.bin", chunk_size=65536)) == data


def test_a_list_of_chunks_is_put_as_one_object(storage: Storage) -> None:
    chunks = [b"PK", os.urandom(300_000), b"", b"end"]
    storage.put("tests/direct/chunks.bin", chunks)
    assert b"".join(storage.iter_object("tests/direct/chunks.bin")) == b"".join(chunks)


def test_a_key_with_odd_characters_round_trips(storage: Storage) -> None:
    key = "tests/direct/a b+c~d(é).bin"
    storage.put(key, b"odd")
    assert b"".join(storage.iter_object(key)) == b"odd"


def test_missing_key_is_none_on_head_and_not_found_on_get(storage: Storage) -> None:
    assert storage.head("tests/direct/never-written") is None
    with pytest.raises(FileNotFoundError):
        b"".join(storage.iter_object("tests/direct/never-written"))


def test_missing_bucket_is_a_misconfiguration(settings: Settings) -> None:
    storage = Storage(dataclasses.replace(settings, s3_bucket_name="no-such-bucket-here"))
    with pytest.raises(StorageMisconfigured, match="does not exist"):
        storage.head("downloads/70001.zip")
    with pytest.raises(StorageMisconfigured, match="does not exist"):
        b"".join(storage.iter_object("downloads/70001.zip"))
    # (no PUT here: SeaweedFS creates a bucket on the first PUT into it)


def test_a_wrong_secret_is_refused_not_retried(settings: Settings) -> None:
    storage = Storage(dataclasses.replace(settings, s3_secret_access_key="not-the-secret"))
    for call in (
        lambda: storage.head("downloads/70001.zip"),
        lambda: b"".join(storage.iter_object("downloads/70001.zip")),
        lambda: storage.put("tests/direct/x.bin", b"x"),
    ):
        with pytest.raises(StorageError) as caught:
            call()
        assert not isinstance(caught.value, SourceUnavailable)


class _Misbehaving:
    """A one-reply-per-connection HTTP server that answers every request with ``reply``."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.requests += 1
                conn.sendall(self.reply)


@pytest.fixture()
def cut_short() -> Iterator[_Misbehaving]:
    server = _Misbehaving(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    yield server
    server.sock.close()


@pytest.fixture()
def unavailable() -> Iterator[_Misbehaving]:
    server = _Misbehaving(b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    yield server
    server.sock.close()


def _store_at(settings: Settings, port: int) -> Storage:
    return Storage(dataclasses.replace(settings, s3_endpoint=f"http://127.0.0.1:{port}"), timeout_seconds=2)


def test_a_get_cut_short_is_transient_never_a_short_file(settings: Settings, cut_short: _Misbehaving) -> None:
    got = bytearray()
    with pytest.raises(SourceUnavailable, match="during GET"):
        for chunk in _store_at(settings, cut_short.port).iter_object("downloads/70001.zip"):
            got += chunk
    assert len(got) < 100_000


def test_a_store_answering_503_is_tried_again_then_transient(settings: Settings, unavailable: _Misbehaving) -> None:
    storage = _store_at(settings, unavailable.port)
    with pytest.raises(SourceUnavailable, match="503"):
        storage.put("tests/direct/x.bin", b"x")
    assert unavailable.requests == ATTEMPTS  # tries in all, the same on either path


def test_missing_keys_ask_the_bucket_once_in_a_while(settings: Settings) -> None:
    """A HEAD's 404 asks whether the bucket exists, but not again for every missing key
    (1,000 absent ids in one estimate made 1,000 bucket requests)."""

    class CountingStorage(Storage):
        bucket_checks = 0

        def check_bucket(self) -> None:
            CountingStorage.bucket_checks += 1
            super().check_bucket()

    storage = CountingStorage(settings)
    for n in range(20):
        assert storage.head(f"tests/direct/absent-{n}") is None
    assert CountingStorage.bucket_checks == 1
