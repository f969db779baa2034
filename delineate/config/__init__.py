"""Settings: one object, built in one place, from three layers.

1. safe defaults (the fields of :class:`Settings`),
2. the environment (and a ``.env`` file in the working directory, which never
   overrides a variable already set),
3. overrides passed by the caller (tests, ``create_app(test_config=...)``).

Nothing else in the project reads ``os.environ``. A bad value raises
:class:`ConfigError` with one line naming the variable; entry points print that
line and exit instead of showing a traceback.

The parts: :mod:`~delineate.config.parse` (one parser per kind of value),
:mod:`~delineate.config.settings` (the object and its redaction) and
:mod:`~delineate.config.environment` (variable → field, and the functions that read them).
"""

from __future__ import annotations

from delineate.config.environment import (
    DEFAULT_CLIENT_URL,
    ENVIRONMENT,
    client_defaults,
    load_settings,
)
from delineate.config.parse import ConfigError, split_host_port
from delineate.config.settings import (
    MIN_SCRUBBED_LENGTH,
    REDACTED,
    SECRET_FIELDS,
    URL_FIELDS,
    Settings,
    url_without_password,
)

__all__ = [
    "DEFAULT_CLIENT_URL",
    "ENVIRONMENT",
    "MIN_SCRUBBED_LENGTH",
    "REDACTED",
    "SECRET_FIELDS",
    "URL_FIELDS",
    "ConfigError",
    "Settings",
    "client_defaults",
    "load_settings",
    "split_host_port",
    "url_without_password",
]
