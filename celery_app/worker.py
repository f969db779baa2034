"""Entry point for ``celery -A celery_app.worker worker``: builds the app at import."""

from delineate.cli import app_or_exit

celery = app_or_exit().extensions["celery"]
