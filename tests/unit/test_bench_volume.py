"""The volume benchmark's pure parts: round trips, picking a job's writes, replaying them
under a new id, and the report's arithmetic (bench/redis_tap.py, bench/volume_replay.py)."""

from __future__ import annotations

import hiredis
import pytest

from bench.redis_tap import Trips
from bench.volume_replay import Template, digest_for, jobs_per_second, net_per_job, pack, swap, writes_by_job

pytestmark = pytest.mark.unit

JOB = b"0b9d3c1e-6a1f-4c2e-9f3a-2d4e5f607182"
OTHER = b"7c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"
NEW = b"11111111-2222-4333-8444-555555555555"


def create(job: bytes) -> list[bytes]:
    keys = [b"delineate:job:" + job, b"delineate:active:tenant-001", b"delineate:idem:-:none",
            b"delineate:history:tenant-001:queued", b"celery", b"delineate:history:tenant-001:last",
            b"delineate:count:tenant-001:queued"]  # fmt: skip
    return [b"EVALSHA", b"c0ffee", b"7", *keys, b"86400", b"0", job, b"", b"1", b'{"id": "' + job + b'"}']


def update(job: bytes, status: bytes) -> list[bytes]:
    keys = [b"delineate:job:" + job, b"delineate:lease:" + job]
    return [b"EVALSHA", b"beef", b"2", *keys, b"86400", b"w1", b"30", b"status", status]


def lease(job: bytes) -> list[bytes]:
    return [b"EVALSHA", b"1ea5e", b"1", b"delineate:lease:" + job, b"w1", b"30"]


def parse(blob: bytes) -> list[list[bytes]]:
    reader = hiredis.Reader()
    reader.feed(blob)
    out = []
    while (item := reader.gets()) is not False:
        out.append(item)
    return out


def test_a_burst_after_an_answer_is_one_round_trip() -> None:
    trips = Trips()
    assert trips.request() and not trips.request()  # a pipeline sent in two pieces
    trips.answer()
    trips.answer()
    assert trips.request()
    assert trips.count == 2


def test_a_jobs_writes_are_its_scripts_and_writes_on_our_keys_in_order() -> None:
    log = [
        create(JOB),
        [b"HGETALL", b"delineate:job:" + JOB],  # a read
        [b"HSET", b"unacked", b"tag", b'{"id": "' + JOB + b'"}'],  # kombu's, not the record
        lease(JOB),
        update(OTHER, b"processing"),  # another job
        update(JOB, b"processing"),
        [b"PUBLISH", b"delineate:events:" + JOB, b"{}"],
        update(JOB, b"completed"),
    ]
    found = writes_by_job(log, [JOB, OTHER], b"delineate:")
    assert found[JOB] == [create(JOB), lease(JOB), update(JOB, b"processing"), update(JOB, b"completed")]
    assert found[OTHER] == [update(OTHER, b"processing")]


def test_a_template_takes_the_message_after_the_create_and_starts_at_the_processing_write() -> None:
    writes = [create(JOB), lease(JOB), update(JOB, b"processing"), update(JOB, b"completed")]
    template = Template.of(writes, JOB, b"tenant-001")
    assert template.queue == b"celery"
    assert list(template.commands) == [create(JOB), [b"RPOP", b"celery"], *writes[1:]]
    assert list(template.start) == [lease(JOB), update(JOB, b"processing")]
    replayed = parse(template.job(NEW.decode(), "tenant-042"))
    assert len(replayed) == len(template.commands)
    assert replayed[0][3] == b"delineate:job:" + NEW and replayed[0][4] == b"delineate:active:tenant-042"
    assert not any(JOB in arg or b"tenant-001" in arg for command in replayed for arg in command)


def test_each_replayed_job_registers_a_bundle_of_its_own() -> None:
    digest = b"0123456789abcdef0123456789abcdef"
    register = [b"SET", b"delineate:reuse:" + digest, b'{"builder": "' + JOB + b'"}', b"EX", b"86400"]
    writes = [create(JOB), lease(JOB), update(JOB, b"processing"), update(JOB, b"completed"), register]
    template = Template.of(writes, JOB, b"tenant-001")
    assert template.digest == digest
    replayed = parse(template.job(NEW.decode(), "tenant-042"))[-1]
    assert replayed[:3] == [b"SET", b"delineate:reuse:" + digest_for(NEW.decode()), b'{"builder": "' + NEW + b'"}']
    assert digest_for(NEW.decode()) != digest_for(OTHER.decode())


def test_a_template_needs_a_create_and_a_processing_write() -> None:
    with pytest.raises(ValueError, match="create"):
        Template.of([lease(JOB), update(JOB, b"processing")], JOB, b"tenant-001")
    with pytest.raises(ValueError, match="processing"):
        Template.of([create(JOB), update(JOB, b"completed")], JOB, b"tenant-001")


def test_swap_keeps_resp_lengths_or_refuses() -> None:
    blob = pack([[b"SET", b"delineate:lease:" + JOB, b"x"]])
    assert parse(swap(blob, [(JOB, NEW)])) == [[b"SET", b"delineate:lease:" + NEW, b"x"]]
    with pytest.raises(ValueError, match="length"):
        swap(blob, [(JOB, b"short")])


def test_per_job_figures_are_net_of_the_idle_stack() -> None:
    # 1,000 commands over 10 s for 20 jobs, while the idle stack sends 5 a second
    assert net_per_job(1000, 5.0, 10.0, 20) == pytest.approx(47.5)
    assert jobs_per_second(250e-6) == pytest.approx(3000)
    assert jobs_per_second(250e-6, core_share=1.0) == pytest.approx(4000)
