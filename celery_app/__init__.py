"""The Celery side: task wrappers, the signal handlers that mirror state into the job
store, the sweeper, and the worker's entry point (``celery -A celery_app.worker``).

The Celery app itself is built by :func:`delineate.celery_init.init_celery`, and the
task and queue names live in :mod:`delineate.task_queue`: this package uses
``delineate``, never the reverse.
"""
