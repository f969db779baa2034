"""gunicorn settings for the API: gevent workers, so one process holds many SSE streams.

Run: ``gunicorn -c deploy/gunicorn.conf.py delineate.wsgi:app``. Command-line flags
(``--bind``, ``--workers``) override these.
"""

from delineate.cli import settings_or_exit

# A bad setting stops start-up here, in one line, before any worker boots.
_settings = settings_or_exit()

bind = f"0.0.0.0:{_settings.port}"
worker_class = "gevent"
workers = 2
worker_connections = 4000  # open connections per worker (SSE streams count)
timeout = 30  # a worker that stops answering its heartbeat for this long is replaced
graceful_timeout = 30  # in-flight requests get this long on SIGTERM
keepalive = 5  # seconds; a proxy's idle upstream connections must close before this (nginx: 4 s)
control_socket_disable = True  # gunicorn 27's shared ~/.gunicorn socket would clash between stacks
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
