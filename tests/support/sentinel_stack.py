"""A Sentinel-managed Redis for the tests: a primary, a replica and three sentinels on free ports.

Short settings (a primary unanswered for ``DOWN_AFTER_MS`` is down), so a failover takes
a few seconds. Every process is started here and stopped by its own PID.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from delineate.dev.localstack import answers, redis_binary, redis_command, wait_until
from tests.support.stack import Service, free_port

MASTER_NAME = "delineate"
DOWN_AFTER_MS = 1000
"""How long the sentinels wait for an unanswering primary before calling it down, in ms."""
FAILOVER_TIMEOUT_MS = 5000
QUORUM = 2


@dataclass
class SentinelGroup:
    primary: Service
    replica: Service
    primary_port: int
    replica_port: int
    sentinels: list[Service] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)

    @property
    def sentinels_setting(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def master_port(self, sentinel_port: int | None = None) -> int | None:
        """The primary's port as one sentinel names it now (None: it does not answer)."""
        client = redis.Redis(port=sentinel_port or self.sentinel_ports[0], socket_timeout=1, decode_responses=True)
        try:
            address = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        except redis.RedisError:
            return None
        finally:
            client.close()
        return int(address[1]) if address else None

    def replicas_known(self) -> int:
        """Replicas the first sentinel knows of the current primary, in a healthy state."""
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=1, decode_responses=True)
        try:
            replicas = client.execute_command("SENTINEL", "replicas", MASTER_NAME)
        except redis.RedisError:
            return 0
        finally:
            client.close()
        return sum(1 for r in replicas if "s_down" not in str(r.get("flags", "")))

    def stop(self) -> None:
        for service in [*self.sentinels, self.replica, self.primary]:
            service.stop(timeout=5)


def _sentinel_config(path: Path, port: int, primary_port: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {path.parent}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {QUORUM}\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER_NAME} 1\n"
    )
    return path


def start_sentinel_group(workdir: Path, name: str = "ha", redis_args: tuple[str, ...] = ()) -> SentinelGroup:
    """Primary, replica (in sync) and three sentinels that all see both; ``redis_args`` go
    to both data nodes (e.g. an append-only file)."""
    base = workdir / name
    primary_port, replica_port = free_port(), free_port()
    primary = Service(
        f"{name}-primary",
        [*redis_command(primary_port, base / "primary"), "--databases", "256", *redis_args],
        base / "primary.log",
    ).start()
    replica = Service(
        f"{name}-replica",
        [
            *redis_command(replica_port, base / "replica"),
            "--databases", "256", *redis_args,
            "--replicaof", "127.0.0.1", str(primary_port),
        ],
        base / "replica.log",
    ).start()  # fmt: skip
    group = SentinelGroup(primary, replica, primary_port, replica_port)
    wait_until(lambda: answers("127.0.0.1", primary_port) and answers("127.0.0.1", replica_port), 15, "redis pair")
    wait_until(lambda: _in_sync(replica_port), 15, "the replica's first sync")
    for index in range(3):
        port = free_port()
        conf = _sentinel_config(base / f"sentinel-{index}" / "sentinel.conf", port, primary_port)
        service = Service(
            f"{name}-sentinel-{index}", [redis_binary(), str(conf), "--sentinel"], conf.with_suffix(".log")
        )
        group.sentinels.append(service.start())
        group.sentinel_ports.append(port)
    for port in group.sentinel_ports:
        wait_until(lambda p=port: group.master_port(p) == primary_port, 15, "sentinels")
    wait_until(lambda: group.replicas_known() == 1, 20, "the sentinels to find the replica")
    return group


def _in_sync(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
    try:
        return client.info("replication").get("master_link_status") == "up"
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_for_promotion(group: SentinelGroup, old_port: int, timeout: float = 30.0) -> float:
    """Seconds until every sentinel names a primary other than ``old_port``; its monotonic time."""
    wait_until(
        lambda: all(group.master_port(p) not in (None, old_port) for p in group.sentinel_ports),
        timeout,
        "the sentinels to promote the replica",
        interval=0.05,
    )
    return time.monotonic()
