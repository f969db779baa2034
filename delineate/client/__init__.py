"""The client side: a Python client of the HTTP API (:mod:`delineate.client.api`) and the
``delineate`` command built on it (:mod:`delineate.client.cli`). Both speak HTTP only.

    from delineate.client import Client
"""

from delineate.client.api import (
    ApiError,
    AuthError,
    Client,
    ClientError,
    JobFailed,
    MultipleParts,
    NotFound,
    RateLimited,
    Unreachable,
    VerificationError,
)

__all__ = [
    "ApiError",
    "AuthError",
    "Client",
    "ClientError",
    "JobFailed",
    "MultipleParts",
    "NotFound",
    "RateLimited",
    "Unreachable",
    "VerificationError",
]
