"""The WSGI entry point for gunicorn: ``gunicorn delineate.wsgi:app``.

Imported in each gunicorn worker after the fork (no ``--preload``), so tracing and
Sentry start per worker process.
"""

import gc

from delineate.boot import app_or_exit
from delineate.telemetry.tracing import API_SERVICE

app = app_or_exit(API_SERVICE)

# Everything built so far (the app, botocore's service models, the instrumentations:
# ~170,000 objects) lives as long as the process. Moved out of the collector's sight,
# a full collection no longer walks them all: it had cost about 20 µs per request on
# average, as one ~130 ms pause every few thousand requests.
gc.collect()
gc.freeze()
