"""The ``delineate`` command: the client's jobs from a shell. It speaks HTTP only (the
operator's commands are ``delineate-admin``, :mod:`delineate.dev.admin`).

Exit codes: 0 done; 1 the job failed or was cancelled, or its result did not verify;
2 usage error (bad arguments, ids the server refused, unknown job); 3 the server is
unreachable, refused the API key, kept rate-limiting, or failed itself.

It loads no server library (Flask, Celery, gunicorn, gevent, Redis, boto3) at import:
what a command needs is imported inside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from delineate.config import client_defaults
from delineate.models import TERMINAL_STATES

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_SERVER = 0, 1, 2, 3


# -- output -------------------------------------------------------------------------------


class Progress:
    """Live bars on a terminal (tqdm); plain lines when piped; nothing with --json."""

    def __init__(self, quiet: bool, stream: TextIO = sys.stderr) -> None:
        self.quiet = quiet
        self.stream = stream
        self.tty = stream.isatty()
        self._bar: Any = None
        self._last_line = ""

    def job(self, status: dict[str, Any]) -> None:
        if self.quiet:
            return
        phase = status.get("phase", "")
        files = f"{status.get('completedFiles', 0)}/{status.get('totalFiles', 0)} files"
        detail = f"{status['status']} {phase} {files}"
        if status.get("bytesTotal"):
            detail += f" {_mb(status.get('bytesDone', 0))}/{_mb(status['bytesTotal'])}"
        if self.tty:
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(
                    total=100, desc=f"job {status['jobId'][:8]}", unit="%", file=self.stream, ncols=_columns()
                )
            self._bar.n = int(status.get("progress", 0))
            self._bar.set_postfix_str(detail)
            if status["status"] in TERMINAL_STATES:
                self._bar.close()
                self._bar = None
        else:
            line = f"job {status['jobId']}: {status.get('progress', 0)}% {detail}"
            if line != self._last_line:
                print(line, file=self.stream, flush=True)
                self._last_line = line

    def download(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.tty:
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(
                    total=total,
                    desc="download",
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=self.stream,
                    ncols=_columns(),
                )
            self._bar.update(done - self._bar.n)
        else:
            step = max((total or 0) // 10, 1)
            if done == total or done // step != getattr(self, "_last_step", -1):
                self._last_step = done // step
                print(
                    f"downloaded {_mb(done)}" + (f" of {_mb(total)}" if total else ""),
                    file=self.stream,
                    flush=True,
                )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _columns() -> int:
    # A terminal that reports 0 columns (a fresh pty) would get empty bars.
    return shutil.get_terminal_size((100, 24)).columns


def _mb(n: int) -> str:
    return f"{n / 1_048_576:.1f} MB"


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload) if args.json else text)


# -- commands -----------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from delineate.client.api import Client

    return Client(args.url, api_key=args.api_key)


def _watch_until_done(client: Any, job_id: str, progress: Progress) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for last in client.watch(job_id):
        progress.job(last)
    progress.close()
    return last


def _download(args: argparse.Namespace) -> int:
    from delineate.client.api import JobFailed

    progress = Progress(quiet=args.json)
    with _client(args) as client:
        job = client.initiate(args.ids)
        job_id = job["jobId"]
        if args.no_wait:
            _emit(args, job, job_id)
            return EXIT_OK
        if not args.json:
            print(
                f"job {job_id}: {job['totalFileIds']} files, about {job['estimatedTimeSeconds']} s",
                file=sys.stderr,
            )
        final = _watch_until_done(client, job_id, progress)
        if final.get("status") != "completed":
            raise JobFailed(final)
        path = args.output or f"delineate-{job_id}.zip"
        saved = client.download_parts(job_id, path, on_bytes=progress.download)
        progress.close()
    _emit_saved(args, job_id, saved, final)
    return EXIT_OK


def _fetch(args: argparse.Namespace) -> int:
    progress = Progress(quiet=args.json)
    with _client(args) as client:
        status = client.status(args.job)
        path = args.output or f"delineate-{args.job}.zip"
        saved = client.download_parts(args.job, path, on_bytes=progress.download)
        progress.close()
    _emit_saved(args, args.job, saved, status)
    return EXIT_OK


def _emit_saved(args: argparse.Namespace, job_id: str, saved: list[Any], status: dict[str, Any]) -> None:
    """What was saved: one file (``path``), or a result in parts (``parts``, each with its
    ``path``; ``path`` null), every one verified."""
    parts = status.get("parts")
    if not parts:
        payload = {"jobId": job_id, "path": str(saved[0]), "size": status.get("size"), "parts": None}
        _emit(args, {**payload, "verified": True}, f"saved {saved[0]} ({status.get('size')} bytes, verified)")
        return
    listed = [{**part, "path": str(path)} for part, path in zip(parts, saved, strict=True)]
    payload = {"jobId": job_id, "path": None, "size": status.get("size"), "parts": listed, "verified": True}
    lines = [f"saved part {p['index']}/{len(parts)} {p['path']} ({p['size']} bytes, verified)" for p in listed]
    _emit(args, payload, "\n".join(lines))


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status(args.job)
    line = f"{status['jobId']}: {status['status']} {status['progress']}% ({status['phase']})"
    _emit(args, status, line + (f", revoked at {status['revokedAt']}" if status.get("revokedAt") else ""))
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    progress = Progress(quiet=args.json)
    with _client(args) as client:
        final = _watch_until_done(client, args.job, progress)
    _emit(args, final, f"{final['jobId']}: {final['status']}")
    return EXIT_OK if final.get("status") == "completed" else EXIT_JOB_FAILED


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.cancel(args.job)
    _emit(args, status, _status_line(status))
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.revoke(args.job)
    _emit(args, status, _status_line(status))
    return EXIT_OK


def _status_line(status: dict[str, Any]) -> str:
    if status.get("revokedAt"):
        return f"{status['jobId']}: {status['status']}, its result revoked at {status['revokedAt']}"
    return f"{status['jobId']}: {status['status']}"


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.jobs(status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps(page))
        return EXIT_OK
    for job in page["jobs"]:
        line = f"{job['jobId']}  {job['status']:<10} {job['progress']:>3}%  {job['totalFiles']:>4} files"
        print(f"{line}  {job['createdAt']}")
    if page["nextCursor"]:
        print(f"(more: use --limit, or GET /v1/downloads?cursor={page['nextCursor']})")
    return EXIT_OK


def _estimate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        body = client.estimate(args.ids)
    text = (
        f"{len(body['availableFileIds'])} available, {len(body['missingFileIds'])} missing "
        f"{body['missingFileIds'] or ''}, {_mb(body['totalBytes'])}, about {body['estimatedTimeSeconds']} s"
    )
    _emit(args, body, text)
    return EXIT_OK


def _file_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a file id (a whole number)") from None


def build_parser() -> argparse.ArgumentParser:
    url, key = client_defaults()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=url, help=f"server URL (DELINEATE_URL; default {url})")
    common.add_argument("--api-key", default=key, help="API key (DELINEATE_API_KEY)")
    common.add_argument("--json", action="store_true", help="machine-readable output, no progress")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    parser = argparse.ArgumentParser(prog="delineate", description="delineate: long-running downloads")
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", parents=[common], help="start a job, wait, download and verify")
    download.add_argument("ids", nargs="+", type=_file_id, metavar="ID")
    download.add_argument("-o", "--output", help="where to save (default delineate-<jobId>.zip)")
    download.add_argument("--no-wait", action="store_true", help="only start the job and print its id")
    download.set_defaults(handler=_download)

    fetch = commands.add_parser("fetch", parents=[common], help="download and verify a completed job's result")
    fetch.add_argument("job", metavar="JOB")
    fetch.add_argument("-o", "--output", help="where to save (default delineate-<jobId>.zip)")
    fetch.set_defaults(handler=_fetch)

    for name, handler, text in (
        ("status", _status, "show a job's status"),
        ("watch", _watch, "follow a job live until it ends"),
        ("cancel", _cancel, "cancel a job (a completed one: revoke its result)"),
        ("revoke", _revoke, "withdraw a completed job's result: its links stop working"),
    ):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("job", metavar="JOB")
        sub.set_defaults(handler=handler)

    listing = commands.add_parser("list", parents=[common], help="your jobs, newest first")
    listing.add_argument("--status", help="only these states, comma-separated (e.g. processing,queued)")
    listing.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    listing.set_defaults(handler=_list)

    estimate = commands.add_parser("estimate", parents=[common], help="what a job would get, without starting it")
    estimate.add_argument("ids", nargs="+", type=_file_id, metavar="ID")
    estimate.set_defaults(handler=_estimate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from delineate.client.api import ApiError, AuthError, ClientError, JobFailed, RateLimited, Revoked, Unreachable

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("delineate: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        code = EXIT_SERVER
        if isinstance(exc, JobFailed):
            code = EXIT_JOB_FAILED
            if args.json and hasattr(exc, "status"):
                print(json.dumps(exc.status))
        elif isinstance(exc, Revoked):  # the result is gone for good: like a job that failed
            code = EXIT_JOB_FAILED
        elif isinstance(exc, (Unreachable, AuthError, RateLimited)):
            code = EXIT_SERVER
        elif isinstance(exc, ApiError):
            code = EXIT_SERVER if exc.status_code >= 500 else EXIT_USAGE
        elif isinstance(exc, ClientError):  # verification and download failures
            code = EXIT_JOB_FAILED
        print(f"delineate: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
