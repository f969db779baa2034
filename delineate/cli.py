"""The ``delineate`` command, and helpers for entry points that must fail in one line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from flask import Flask

from delineate.config import ConfigError, Settings, load_settings


def settings_or_exit() -> Settings:
    """Load settings; on a bad value print one line naming the variable and exit 2."""
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"delineate: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def app_or_exit() -> Flask:
    from delineate import create_app
    from delineate.logs import configure_logging

    configure_logging()
    return create_app(settings_or_exit())


def _seed(args: argparse.Namespace) -> int:
    from delineate.seed import SAMPLE_IDS, seed
    from delineate.storage import Storage

    settings = settings_or_exit()
    written = seed(Storage(settings))
    print(
        f"seeded {written} new objects; {len(SAMPLE_IDS)} sample files in s3://{settings.s3_bucket_name}/downloads/"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="delineate", description="delineate download service")
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser("seed", help="upload the sample files (idempotent)")
    seed.set_defaults(handler=_seed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from delineate.errors import StorageError

    try:
        return int(args.handler(args))
    except StorageError as exc:
        print(f"delineate: {exc.message}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
