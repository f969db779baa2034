"""Filling Redis with a million jobs by replaying real ones (``bench/volume.py``).

A real job's writes are taken from what the stack sent Redis (``bench/redis_tap.py``): every
script call and write command that names the job on one of our keys, in order (the
create script, the worker's lease, each progress write, the terminal write). A new job is
that sequence with the job id and the owner swapped for new ones of the same length, sent
in pipelines: the same scripts with the same arguments, so the record and every index are
exactly what the real code writes, and Redis does the same work for each. Reads are left
out (they change nothing), and so is Celery's side: after the create script pushes the
job's message onto the queue, an ``RPOP`` takes it, as the worker's ``BRPOP`` does (kombu's
unacked bookkeeping is written and deleted again by the ack: nothing stays).

Also the arithmetic of the report (per-job figures net of the idle stack, jobs/s per core).
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import hiredis

Command = list[bytes]

SCRIPT_COMMANDS = frozenset({b"EVALSHA", b"EVAL", b"FCALL"})
WRITE_COMMANDS = SCRIPT_COMMANDS | frozenset(
    {
        b"SET", b"SETEX", b"SETNX", b"PSETEX", b"GETDEL", b"DEL", b"UNLINK", b"EXPIRE", b"PEXPIRE",
        b"EXPIREAT", b"PERSIST", b"INCR", b"INCRBY", b"HSET", b"HSETNX", b"HMSET", b"HDEL", b"HINCRBY",
        b"ZADD", b"ZREM", b"ZINCRBY", b"SADD", b"SREM", b"LPUSH", b"RPUSH", b"LREM", b"LPOP", b"RPOP",
    }
)  # fmt: skip
"""Commands that may change what Redis holds; everything else a job sends is a read."""


def keys_of(command: Command) -> Sequence[bytes]:
    """The keys a command names (a script's KEYS; else its first argument)."""
    if command[0].upper() in SCRIPT_COMMANDS:
        return command[3 : 3 + int(command[2])]
    return command[1:2]


UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""A job id (delineate.ids.new_uuid)."""

REUSE_DIGEST = re.compile(rb"reuse:([0-9a-f]{32})")
"""The id-set digest in a built bundle's ``reuse:`` key (delineate.jobs.reuse.ids_digest)."""


def digest_for(job_id: str) -> bytes:
    """A replayed job's own id-set digest: each replayed export is a distinct one, as most
    of a day's are, so each leaves its own ``reuse:`` record."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:32].encode()


def writes_by_job(log: Iterable[Command], job_ids: Iterable[bytes], prefix: bytes) -> dict[bytes, list[Command]]:
    """Each job's commands in ``log`` that write its state: writes and script calls that
    name it, whose first key is ours (``prefix``). Celery's own (kombu's ``unacked`` hash,
    which holds the message and so the id) are not the job's record."""
    found: dict[bytes, list[Command]] = {job_id: [] for job_id in job_ids}
    for command in log:
        if command[0].upper() not in WRITE_COMMANDS:
            continue
        keys = keys_of(command)
        if not keys or not keys[0].startswith(prefix):
            continue
        for job_id in set(UUID.findall(b" ".join(command[1:]))):
            if job_id in found:
                found[job_id].append(command)
    return found


def pack(commands: Iterable[Command]) -> bytes:
    """Commands as RESP, as a client sends them."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for arg in command:
            out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return bytes(out)


@dataclass(frozen=True)
class Template:
    """One real job's writes, ready to be sent again under another id and owner.

    ``commands``: the create script, the ``RPOP`` that takes its message off ``queue``
    (Celery's queue, as the create script names it), then the worker's writes to the end.
    ``start``: the worker's first writes, up to and including the one that makes the job
    ``processing`` (its lease and that write: what a running job has done).
    ``digest``: the id-set digest of the ``reuse:`` record its bundle registered, if any."""

    job_id: bytes
    owner: bytes
    queue: bytes
    commands: tuple[Command, ...]
    start: tuple[Command, ...]
    packed: bytes
    digest: bytes | None = None

    @classmethod
    def of(cls, writes: list[Command], job_id: bytes, owner: bytes) -> Template:
        """:raise ValueError: ``writes`` do not begin with a create script that names a
        queue, or never make the job processing."""
        if not writes or writes[0][0].upper() not in SCRIPT_COMMANDS or len(keys_of(writes[0])) < 5:
            raise ValueError(f"job {job_id!r}: its writes do not begin with the create script")
        queue = keys_of(writes[0])[4]
        rest = writes[1:]
        ends = [n for n, command in enumerate(rest) if b"processing" in command]
        if not ends:
            raise ValueError(f"job {job_id!r}: no write made it processing")
        commands = (writes[0], [b"RPOP", queue], *rest)
        packed = pack(commands)
        digests = set(REUSE_DIGEST.findall(packed))
        if len(digests) > 1:
            raise ValueError(f"job {job_id!r}: registered {len(digests)} bundles")
        start = tuple(rest[: ends[0] + 1])
        return cls(job_id, owner, queue, commands, start, packed, digests.pop() if digests else None)

    def job(self, job_id: str, owner: str) -> bytes:
        """Every command of this template, packed, for ``job_id`` of ``owner`` (and a
        ``reuse:`` record of its own, :func:`digest_for`)."""
        pairs = [(self.job_id, job_id.encode()), (self.owner, owner.encode())]
        if self.digest is not None:
            pairs.append((self.digest, digest_for(job_id)))
        return swap(self.packed, pairs)


def swap(blob: bytes, pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Every ``old`` in ``blob`` replaced by ``new``, each of the same length (so RESP's
    lengths still hold). :raise ValueError: a pair of different lengths."""
    for old, new in pairs:
        if len(old) != len(new):
            raise ValueError(f"{old!r} and {new!r} differ in length")
        blob = blob.replace(old, new)
    return blob


class Replayer:
    """Sends packed commands to one Redis database down a few connections (one thread
    each, so Redis never waits for this process) and reads every answer.

    :raise RuntimeError: (from :meth:`run`) Redis answered a command with an error.
    """

    def __init__(self, port: int, db: int, connections: int = 2) -> None:
        self.port, self.db, self.connections = port, db, connections

    def run(self, batches: Iterator[tuple[bytes, int]]) -> None:
        """``batches``: (packed commands, how many) each; taken in turn by the connections."""
        lock = threading.Lock()
        errors: list[str] = []

        def work() -> None:
            with socket.create_connection(("127.0.0.1", self.port)) as sock:
                self._send(sock, pack([[b"SELECT", str(self.db).encode()]]), 1)
                while not errors:
                    with lock:
                        batch = next(batches, None)
                    if batch is None:
                        return
                    try:
                        self._send(sock, *batch)
                    except RuntimeError as exc:
                        errors.append(str(exc))

        threads = [threading.Thread(target=work, daemon=True) for _ in range(self.connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError(errors[0])

    @staticmethod
    def _send(sock: socket.socket, blob: bytes, replies: int) -> None:
        sock.sendall(blob)
        reader = hiredis.Reader()
        while replies:
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError("Redis closed the connection")
            reader.feed(data)
            while replies and (reply := reader.gets()) is not False:
                replies -= 1
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(f"Redis refused a replayed command: {reply}")


# -- the report's arithmetic ----------------------------------------------------------------------


def net_per_job(delta: float, idle_per_second: float, seconds: float, jobs: int) -> float:
    """A counter's growth over a run of ``jobs`` jobs, less what the idle stack adds in the
    same time, per job."""
    return (delta - idle_per_second * seconds) / jobs if jobs else float("nan")


def jobs_per_second(cpu_seconds_per_job: float, core_share: float = 0.75) -> float:
    """Jobs a second one Redis primary carries when its one thread may be busy
    ``core_share`` of the time, at ``cpu_seconds_per_job`` each."""
    return core_share / cpu_seconds_per_job if cpu_seconds_per_job > 0 else float("inf")
