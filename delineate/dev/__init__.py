"""Development tooling: ``make run`` (devstack, supervise), local Redis and SeaweedFS
(localstack) and the sample data (seed).

Imports nothing: ``delineate seed`` in the image loads ``delineate.dev.seed``, which needs
only the storage module, while devstack's honcho and SeaweedFS come from the ``local`` extra.
"""
