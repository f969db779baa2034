"""delineate: long-running downloads behind proxies that will not wait.

``create_app()`` builds the Flask app (and its Celery app); nothing runs at import.
The code is grouped by side: ``api/`` (the web side), ``jobs/`` (what a job does),
``broker/`` (Celery), ``store/`` (job state in Redis), ``storage/`` (S3), ``redis_io/``,
``telemetry/``, ``client/``; ARCHITECTURE.md maps them.
Its imports are made when it is called: importing any ``delineate.<module>`` runs this
file first, and must not load Flask through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from delineate.config import Settings, load_settings

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: Mapping[str, Any] | Settings | None = None) -> Flask:
    """Build the API app.

    ``test_config`` overrides settings (names as in the environment or as fields),
    or is a complete :class:`Settings`.

    :raise ConfigError: a setting is malformed.
    """
    from delineate.api.app import build_app

    settings = test_config if isinstance(test_config, Settings) else load_settings(overrides=test_config)

    return build_app(settings)
