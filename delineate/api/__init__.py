"""The web side: the Flask app (:mod:`delineate.api.app`), its routes (``blueprints/``), the
edge every request passes (``edge/``: request ids, headers, CORS, keys, limits, and the
fast lane in front of Flask), request bodies and the OpenAPI document, the API's metrics,
request tracing, SSE streaming, gunicorn's worker class and error pages, and the console's
static files (``static/``). The only package that imports Flask, werkzeug or gunicorn.
"""
