"""The API's Flask app, put together from the web side's pieces (``delineate.create_app``
calls :func:`build_app`)."""

from __future__ import annotations

from flask import Flask

from delineate.api import metrics, request_context, tracing
from delineate.api.blueprints import dashboard, docs, downloads, history, meta, stream
from delineate.api.blueprints.errors import register_error_handlers
from delineate.api.edge import fast_lane
from delineate.api.edge.security import init_security, trust_proxies
from delineate.api.flask_app import DelineateFlask
from delineate.api.json_provider import OrjsonProvider
from delineate.broker.app import make_celery
from delineate.broker.queue import TaskQueue
from delineate.config import Settings
from delineate.services import REQUEST_ANSWER_SECONDS, build_services, connect_store


def build_app(settings: Settings) -> Flask:
    """The API app: its services, the Celery app it publishes with, the edge, the routes."""
    app = DelineateFlask("delineate")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.json = OrjsonProvider(app)
    svc = app.extensions["delineate"] = build_services(settings, REQUEST_ANSWER_SECONDS)
    svc.tenants  # noqa: B018 - loaded now: a bad tenants file stops start-up (ConfigError)
    celery = app.extensions["celery"] = make_celery(settings, svc)
    connect_store(svc, celery)
    app.extensions["delineate_tasks"] = TaskQueue(settings, celery)

    init_security(app)
    metrics.init_app(app)
    register_error_handlers(app)
    app.register_blueprint(meta.bp)
    app.register_blueprint(downloads.bp)
    app.register_blueprint(stream.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(dashboard.bp)
    tracing.init_app(app)
    request_context.install()
    fast_lane.install(app)
    trust_proxies(app)
    return app
