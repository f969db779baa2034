"""The OpenAPI document and an interactive page for it, with every asset served here.

Swagger UI 5 (it reads OpenAPI 3.1; the 4.x of ``swagger-ui-bundle`` could not) comes from
the files the ``flask-swagger-ui`` package ships in ``flask_swagger_ui/dist/``, so ``/docs``
works offline and its Content-Security-Policy can forbid every other origin. Only those
files are used: that package's own blueprint and page run inline script, which our
policy (``script-src 'self'``) refuses, so the page and its start-up script are ours.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, send_from_directory
from werkzeug.exceptions import NotFound

from delineate.api.openapi import build_spec

bp = Blueprint("docs", __name__)

SWAGGER_UI_DIST = str(files("flask_swagger_ui") / "dist")
"""Swagger UI's built files, as the ``flask-swagger-ui`` package ships them."""

ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})
"""The Swagger UI files /docs uses (nothing else from the package is served)."""

ASSET_MAX_AGE_SECONDS = 3600

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>delineate API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" sizes="32x32" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null
  });
});
"""
"""Starts Swagger UI (its default layout). ``validatorUrl: null`` is a guard: the badge image
from validator.swagger.io, another origin the page's policy refuses, belongs to the standalone
layout only, which this page does not use."""


def spec_for_app() -> dict[str, Any]:
    """The app's OpenAPI document, built once per app."""
    cached = current_app.extensions.get("delineate_openapi")
    if cached is None:
        cached = current_app.extensions["delineate_openapi"] = build_spec(current_app)
    return cached  # type: ignore[no-any-return]


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(spec_for_app())


@bp.get("/docs")
def docs() -> Response:
    return Response(PAGE, mimetype="text/html")


@bp.get("/docs/init.js")
def init_js() -> Response:
    return Response(INIT_JS, mimetype="text/javascript")


@bp.get("/docs/assets/<name>")
def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"No docs asset {name!r}.")
    return send_from_directory(SWAGGER_UI_DIST, name, max_age=ASSET_MAX_AGE_SECONDS)
