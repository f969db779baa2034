"""delineate: long-running downloads behind proxies that will not wait.

``create_app()`` builds the Flask app (and its Celery app); nothing runs at import.
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
    from delineate import fast_lane, request_tracing, webhooks
    from delineate.blueprints import dashboard, docs, downloads, history, meta, stream
    from delineate.blueprints.errors import register_error_handlers
    from delineate.celery_init import init_celery
    from delineate.flask_app import DelineateFlask
    from delineate.json_provider import OrjsonProvider
    from delineate.metrics import api as metrics
    from delineate.security import init_security, trust_proxies
    from delineate.services import build_services
    from delineate.task_queue import TaskQueue

    settings = test_config if isinstance(test_config, Settings) else load_settings(overrides=test_config)

    app = DelineateFlask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.json = OrjsonProvider(app)
    app.extensions["delineate"] = build_services(settings)

    init_security(app)
    metrics.init_app(app)
    register_error_handlers(app)
    app.register_blueprint(meta.bp)
    app.register_blueprint(downloads.bp)
    app.register_blueprint(stream.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(dashboard.bp)
    init_celery(app)
    app.extensions["delineate_tasks"] = TaskQueue(settings, app.extensions["celery"])
    webhooks.init_app(app)
    request_tracing.init_app(app)
    fast_lane.install(app)
    trust_proxies(app)
    return app
