"""The WSGI entry point for gunicorn: ``gunicorn delineate.wsgi:app``.

Imported in each gunicorn worker after the fork (no ``--preload``), so tracing and
Sentry start per worker process.
"""

from delineate.cli import app_or_exit
from delineate.telemetry import API_SERVICE

app = app_or_exit(API_SERVICE)
