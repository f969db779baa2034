"""The worker's entry package: task wrappers (``tasks``), the signal handlers that mirror
Celery's state into the job store and start telemetry (``signals``), and the entry point
itself (``celery -A celery_app.worker``).

The Celery app is built by :func:`delineate.broker.app.make_celery` (through
``delineate.boot.worker_or_exit``), the task and queue names live in
:mod:`delineate.broker.queue`, the sweeper's logic in :mod:`delineate.jobs.sweeper`: this
package uses ``delineate``, never the reverse.
"""
