"""What a job does, independent of Celery and of the web: the run (``run``), the retry
policy (``retry``), the zip (``bundle``), the bundle slots that bound a worker's memory
(``slots``), webhook delivery (``webhooks``, ``webhook_http``) and the sweeper's logic
(``sweeper``)."""
