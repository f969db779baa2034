"""Development and operator tooling: ``make run`` (devstack, supervise), local Redis and
SeaweedFS (localstack), the sample data (seed) and the operator's command (admin,
``delineate-admin``).

Imports nothing: ``delineate-admin seed`` in the image loads ``delineate.dev.seed``, which
needs only the storage module, while devstack's honcho and SeaweedFS come from the ``local``
extra.
"""
