"""``delineate-admin``: the operator's commands, run where the service's settings are
(a container of the image, a pod, ``make run``'s shell), never the user's CLI.

    delineate-admin seed        upload the sample files to the configured S3 (idempotent)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _seed(args: argparse.Namespace) -> int:
    from delineate.boot import settings_or_exit
    from delineate.dev.seed import SAMPLE_IDS, seed
    from delineate.storage import Storage

    settings = settings_or_exit()
    written = seed(Storage(settings))
    print(f"seeded {written} new objects; {len(SAMPLE_IDS)} sample files in s3://{settings.s3_bucket_name}/downloads/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="delineate-admin", description="The operator's commands of delineate.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    seed = commands.add_parser("seed", help="upload the sample files to the configured S3 (idempotent)")
    seed.set_defaults(handler=_seed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from delineate.errors import StorageError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except StorageError as exc:
        print(f"delineate-admin: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
