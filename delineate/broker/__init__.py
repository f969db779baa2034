"""The Celery side's glue: the Celery app factory (``app``), the task names and messages
(``queue``), the Redis transport's shared clients (``transport``) and reading the broker's
queues (``queues``). ``celery_app/`` (the worker's entry package) uses these, never the
reverse."""
