"""The Python client and the ``delineate`` CLI against the real stack."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest

from delineate.client.api import Client, ClientError, NotFound, Revoked, Unreachable, VerificationError
from delineate.client.cli import main as cli
from delineate.storage import Storage, bundle_key, source_key
from tests.support.stack import ROOT, free_port, start_api, start_worker, wait_for

IDS = [70000, 70007, 70014]


def _assert_bundle_matches_s3(path: Path, storage: Storage, ids: list[int]) -> None:
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted([f"{i}.zip" for i in ids] + ["manifest.json"])
        for file_id in ids:
            assert zf.read(f"{file_id}.zip") == b"".join(storage.iter_object(source_key(file_id)))


def test_client_downloads_a_verified_bundle(api_server: str, storage: Storage, tmp_path: Path) -> None:
    with Client(api_server) as client:
        job = client.initiate([*IDS, 70001])
        seen = list(client.watch(job["jobId"]))
        assert seen[-1]["status"] == "completed"
        versions = [s["version"] for s in seen]
        assert versions == sorted(versions)  # never backwards
        path = client.download(job["jobId"], tmp_path / "out.zip")
    _assert_bundle_matches_s3(path, storage, IDS)
    assert not list(tmp_path.glob("*.part"))  # the temporary file was renamed into place


def test_client_errors_carry_the_server_body(api_server: str) -> None:
    with Client(api_server) as client:
        with pytest.raises(NotFound) as info:
            client.status("00000000-0000-0000-0000-000000000000")
    assert info.value.error == "not_found" and info.value.request_id
    with Client(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(Unreachable):
        client.status("00000000-0000-0000-0000-000000000000")


def test_cli_download_piped_prints_plain_lines(api_server: str, storage: Storage, tmp_path: Path) -> None:
    out = tmp_path / "cli.zip"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "delineate.client.cli",
            "download",
            *map(str, IDS),
            "-o",
            str(out),
            "--url",
            api_server,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "saved" in result.stdout and "verified" in result.stdout
    assert "% completed" in result.stderr or "100%" in result.stderr
    assert "\r" not in result.stderr  # no bars when piped
    _assert_bundle_matches_s3(out, storage, IDS)


def test_cli_download_in_a_terminal_shows_bars(api_server: str, tmp_path: Path) -> None:
    out = tmp_path / "tty.zip"
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "delineate.client.cli",
            "download",
            "70021",
            "70028",
            "-o",
            str(out),
            "--url",
            api_server,
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=ROOT,
    )
    os.close(follower)
    screen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    assert process.wait(30) == 0, screen.decode(errors="replace")
    os.close(leader)
    text = screen.decode(errors="replace")
    assert "job " in text and "|" in text and "\r" in text  # tqdm redraws its bar in place
    assert "download" in text and out.exists()


def test_cli_json_and_exit_codes(api_server: str, tmp_path: Path) -> None:
    assert cli(["status", "00000000-0000-0000-0000-000000000000", "--url", api_server]) == 2
    assert cli(["status", "abc", "--url", api_server]) == 2
    assert cli(["status", "00000000-0000-0000-0000-000000000000", "--url", f"http://127.0.0.1:{free_port()}"]) == 3
    # a job with no available file ends failed: exit 1
    assert cli(["download", "70001", "70002", "--url", api_server, "--json", "-o", str(tmp_path / "x.zip")]) == 1
    with pytest.raises(SystemExit) as usage:
        cli(["download", "not-a-number"])
    assert usage.value.code == 2


def test_cli_estimate_and_no_wait(api_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["estimate", "70000", "70001", "--url", api_server, "--json"]) == 0
    assert '"missingFileIds": [70001]' in capsys.readouterr().out
    assert cli(["download", "70000", "--no-wait", "--url", api_server]) == 0
    job_id = capsys.readouterr().out.strip()
    assert cli(["cancel", job_id, "--url", api_server]) in (0, 2)  # 2 when it finished first


def test_tampered_result_is_detected_with_exit_1(api_server: str, storage: Storage, tmp_path: Path) -> None:
    with Client(api_server) as client:
        job_id = client.initiate(IDS)["jobId"]
        client.wait(job_id, timeout=60)
    key = bundle_key(job_id)
    raw = bytearray(b"".join(storage.iter_object(key)))
    raw[200:210] = bytes(b ^ 0xFF for b in raw[200:210])  # same size, different bytes
    storage.put(key, bytes(raw))
    assert cli(["fetch", job_id, "-o", str(tmp_path / "t.zip"), "--url", api_server]) == 1
    assert not (tmp_path / "t.zip").exists()  # never renamed into place
    with Client(api_server) as client, pytest.raises(VerificationError):
        client.download(job_id, tmp_path / "t2.zip")


class CuttingProxy:
    """A TCP proxy that drops the first connection after ``cut_after`` response bytes."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(conn, limit), daemon=True).start()

    def _pipe(self, client: socket.socket, limit: int | None) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        sent = 0
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 30)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        if limit is not None and sent + len(data) > limit:
                            client.sendall(data[: limit - sent])
                            return  # cut mid-transfer
                        sent += len(data)
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.server.close()


def test_download_cut_mid_transfer_resumes_with_range(
    settings: Any, seaweed: Any, workdir: Path, tmp_path: Path, worker: Any
) -> None:
    proxy = CuttingProxy(seaweed.port, cut_after=300_000)
    service, base = start_api(settings, workdir, "api-proxied", S3_PUBLIC_ENDPOINT=f"http://127.0.0.1:{proxy.port}")
    try:
        with Client(base) as client:
            job_id = client.initiate(IDS)["jobId"]
            client.wait(job_id, timeout=60)
            path = client.download(job_id, tmp_path / "resumed.zip")
        assert proxy.connections >= 2  # the cut, then the Range request
        _assert_bundle_matches_s3(path, Storage(settings), IDS)
    finally:
        service.stop()
        proxy.close()


def test_watch_survives_an_api_restart(make_settings: Any, workdir: Path) -> None:
    settings = make_settings(download_delay_min_ms=4000, download_delay_max_ms=4000)
    job_worker = start_worker(settings, workdir, "worker-client", concurrency=4)
    port = free_port()
    api, base = start_api(settings, workdir, "api-restarted", port=port)
    restarted: list[Any] = []
    try:
        with Client(base) as client:
            job_id = client.initiate(IDS)["jobId"]
            seen: list[dict[str, Any]] = []

            def restart_when_running() -> None:
                wait_for(lambda: any(s["status"] == "processing" for s in seen), 30, "processing")
                api.kill()  # a crash cuts the open stream mid-job
                restarted.append(start_api(settings, workdir, "api-restarted-2", port=port)[0])

            restarter = threading.Thread(target=restart_when_running, daemon=True)
            restarter.start()
            for status in client.watch(job_id, poll_interval=0.2):
                seen.append(status)
            assert seen[-1]["status"] == "completed"
            restarter.join(60)
            assert restarted, "the API was not restarted mid-job"
    finally:
        api.stop()
        for service in restarted:
            service.stop()
        job_worker.stop()


def test_cli_list_shows_recent_jobs(api_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["download", "70000", "--no-wait", "--url", api_server]) == 0
    job_id = capsys.readouterr().out.strip()
    assert cli(["list", "--url", api_server, "--limit", "5"]) == 0
    assert job_id in capsys.readouterr().out
    assert cli(["list", "--url", api_server, "--status", "nope"]) == 2


def test_wrong_key_is_exit_3_and_rate_limit_waits_then_gives_up(
    make_settings: Any, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from delineate.client.api import AuthError, RateLimited

    settings = make_settings(api_keys={"k-right": "alice"}, rate_limit_max_requests=2, rate_limit_window_ms=2000)
    service, base = start_api(settings, workdir, "api-keyed")
    try:
        assert cli(["status", "00000000-0000-0000-0000-000000000000", "--url", base, "--api-key", "k-wrong"]) == 3
        assert "401" in capsys.readouterr().err
        with Client(base, api_key="k-wrong") as client, pytest.raises(AuthError):
            client.estimate([70000])
        waits: list[float] = []
        with Client(base, api_key="k-right", sleep=waits.append) as client:
            with pytest.raises(RateLimited):
                for _ in range(10):
                    client.estimate([70000])
        assert waits and all(0 < w <= 60 for w in waits)  # it waited out Retry-After before giving up
    finally:
        service.stop()


def test_cli_revoke_then_fetch_is_exit_1(api_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(api_server) as client:
        job_id = client.initiate(IDS[:2])["jobId"]
        with pytest.raises(ClientError, match="only a completed job's result can be revoked"):
            client.revoke(job_id)  # a running job is not cancelled by mistake
        assert list(client.watch(job_id))[-1]["status"] == "completed"
    capsys.readouterr()
    assert cli(["revoke", job_id, "--url", api_server]) == 0
    assert "its result revoked at" in capsys.readouterr().out
    assert cli(["fetch", job_id, "--url", api_server, "-o", str(tmp_path / "gone.zip")]) == 1
    assert "revoked" in capsys.readouterr().err
    with Client(api_server) as client, pytest.raises(Revoked) as info:
        client.download_url(job_id)
    assert info.value.status_code == 410 and info.value.body["details"]["revokedAt"]
