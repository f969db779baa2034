"""Telemetry of both sides: tracing (``tracing``), Sentry (``sentry``), JSON logs (``logs``),
their set-up per process (``setup``), the metrics' shared names (``metrics``), the counters
a job's end writes (``job_metrics``) and the console's timeline (``timeline``). Imports no
web framework: the API hooks its request context in."""
