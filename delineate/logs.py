"""Logging set-up for entry points (API and worker): one line per record, to stdout."""

from __future__ import annotations

import logging.config


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"}},
            "handlers": {
                "stdout": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "formatter": "plain",
                }
            },
            "root": {"level": level, "handlers": ["stdout"]},
            "loggers": {"botocore": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
        }
    )
