"""The WSGI entry point for gunicorn: ``gunicorn delineate.wsgi:app``."""

from delineate.cli import app_or_exit

app = app_or_exit()
