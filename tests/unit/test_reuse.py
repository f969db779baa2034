"""What makes two bundles the same (``delineate/jobs/reuse.py``): pure digests."""

from __future__ import annotations

from delineate.jobs.bundle import Source
from delineate.jobs.reuse import DIGEST_HEX, ids_digest, sources_digest


def _source(file_id: int, etag: str = '"e1"', size: int = 10) -> Source:
    return Source(file_id, size, lambda: [b""], etag)


def test_the_id_set_is_what_counts_not_its_order_or_duplicates() -> None:
    assert ids_digest([3, 1, 2, 1]) == ids_digest([1, 2, 3])
    assert ids_digest([1, 2]) != ids_digest([1, 2, 3]) and ids_digest([12, 3]) != ids_digest([1, 23])
    assert len(ids_digest([1, 2])) == DIGEST_HEX


def test_the_sources_digest_follows_every_etag_and_the_missing_ids() -> None:
    base = sources_digest([_source(1), _source(2)], [3])
    assert base is not None
    assert sources_digest([_source(2), _source(1)], [3]) == base  # order does not count
    assert sources_digest([_source(1), _source(2, '"e2"')], [3]) != base  # another version
    assert sources_digest([_source(1), _source(2, size=11)], [3]) != base
    assert sources_digest([_source(1), _source(2)], []) != base  # 3 missing is in the manifest
    assert sources_digest([_source(1), _source(2), _source(3)], []) != base  # 3 appeared


def test_a_source_without_an_etag_is_never_shared() -> None:
    assert sources_digest([_source(1), _source(2, etag="")], []) is None
