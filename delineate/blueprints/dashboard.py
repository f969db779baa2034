"""``/dashboard``: one page to start jobs and watch them, and ``/v1/stats`` for its live numbers.

The page is static HTML, CSS and JS from ``delineate/static/dashboard/`` (no inline script
or style, so a ``script-src 'self'`` Content-Security-Policy allows it; no CDN, no build).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify, send_from_directory

from delineate.metrics.api import scrape_client, stats
from delineate.services import services

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "dashboard"

bp = Blueprint("dashboard", __name__, static_folder=str(STATIC_DIR), static_url_path="/dashboard/static")


@bp.get("/dashboard")
def page() -> Response:
    response = send_from_directory(STATIC_DIR, "index.html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/v1/stats")
def live_numbers() -> Response:
    """Queue depth, jobs in progress and finished jobs by state, read from Redis."""
    return jsonify(stats(scrape_client(services().settings)))
