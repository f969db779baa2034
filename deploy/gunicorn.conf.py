"""gunicorn settings for the API: gevent workers, so one process holds many SSE streams.

Run: ``gunicorn -c deploy/gunicorn.conf.py delineate.wsgi:app``. Command-line flags
(``--bind``, ``--workers``) override these.
"""

import glob
import os
import tempfile

# Prometheus multiprocess mode: each worker writes its metrics to files here and
# /metrics sums them. Set before any worker imports prometheus-client; a fresh folder
# per start unless one is given (then its old files go: they would count twice).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="delineate-metrics-")
os.makedirs(_metrics_dir, exist_ok=True)
for _stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
    os.remove(_stale)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

from delineate.boot import settings_or_exit  # noqa: E402
from delineate.telemetry.logs import logging_config  # noqa: E402

# A bad setting or tenants file stops start-up here, in one line, before any worker boots.
_settings = settings_or_exit(check_tenants=True)


def _bind(host: str, port: int) -> str:
    """gunicorn's ``HOST:PORT`` for BIND and PORT: an IPv6 address in brackets (``[::1]:3000``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# BIND: the loopback by default (`make run`: nothing outside this machine reaches the API);
# the image sets 0.0.0.0 for compose and Kubernetes, whose proxies and probes come from outside.
bind = _bind(_settings.bind, _settings.port)
# gevent, fair between keep-alive connections, and its refusals (below) answered in JSON
worker_class = "delineate.api.gunicorn_errors.JsonErrorsWorker"
workers = 2
worker_connections = 4000  # open connections per worker (SSE streams count)
timeout = 30  # a worker that stops answering its heartbeat for this long is replaced
graceful_timeout = 30  # in-flight requests get this long on SIGTERM
keepalive = 5  # seconds; a proxy's idle upstream connections must close before this (nginx: 4 s)
# What a request may carry before the app sees it; past these gunicorn refuses it and
# JsonErrorsWorker answers 414 (line), 431 (a header, or too many) in the API's JSON.
limit_request_line = 4094  # bytes of method, target and version: ids, cursors and filters fit
limit_request_field_size = 8190  # bytes of one header line
limit_request_fields = 100
control_socket_disable = True  # gunicorn 27's shared ~/.gunicorn socket would clash between stacks
# JSON lines on stdout; the app writes one access line per request (delineate.access),
# so gunicorn's own access log stays off.
accesslog = None
logger_class = "delineate.api.gunicorn_worker.AppAccessLogger"
errorlog = "-"
logconfig_dict = logging_config()


def when_ready(server: object) -> None:
    """SIGHUP restarts the workers gracefully, so they read the tenants file (and every
    setting) anew; a file that no longer loads keeps the running workers instead."""
    from delineate.boot import guard_reload

    guard_reload(server)


def child_exit(server: object, worker: object) -> None:
    """A dead worker's live gauges (open SSE streams) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def worker_exit(server: object, worker: object) -> None:
    """A worker's last request counts reach the metric files before it goes."""
    from delineate.api.metrics import REQUEST_METRICS

    REQUEST_METRICS.flush()
