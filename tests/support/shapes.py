"""The failure message of a dependency-shape test: which library, at which installed
version, what changed, and which module of ours depends on it.

Used by ``tests/unit/test_dependency_shapes.py`` and
``tests/integration/test_dependency_layouts.py``: when an upgrade breaks one of our uses of
a library's private API or internal layout, the failure says which one, so the triage
starts at the right module rather than at a stack trace deep in the library.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

SWITCH = " (FAST_PATHS=false runs without it meanwhile)"
"""Added when the use is a fast path that FAST_PATHS=false turns off (design.md)."""


def changed(dist: str, what: str, user: str, *, switch: bool = False) -> str:
    """``kombu 5.7.0: Channel._create_client no longer exists; delineate/broker/transport.py overrides it``."""
    return f"{dist} {version(dist)}: {what}; {user}{SWITCH if switch else ''}"


def parameters(func: Callable[..., Any]) -> list[str]:
    """The parameter names of ``func``, in order (``self`` included for a function of a class)."""
    return list(inspect.signature(func).parameters)
