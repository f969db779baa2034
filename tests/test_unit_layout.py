"""The layout's rules (ARCHITECTURE.md, "Where each concern lives"), pinned.

Imports are checked in fresh interpreters: inside pytest every library is already loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("delineate", "celery_app")
MAX_MODULE_LINES = 400


def _loaded(imports: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` (top-level module names) a fresh interpreter has after ``imports``."""
    code = f"import sys\n{imports}\nprint(' '.join(m for m in {watched!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.split()


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


SERVER_LIBRARIES = ("flask", "celery", "gunicorn", "gevent", "redis", "boto3", "werkzeug")


def test_the_user_cli_loads_no_server_library() -> None:
    assert _loaded("import delineate.cli", SERVER_LIBRARIES) == []


def test_the_jobs_own_logic_loads_no_web_framework() -> None:
    modules = ("jobs", "errors", "store", "storage", "models", "bundle")
    imports = "\n".join(f"import delineate.{name}" for name in modules)
    assert _loaded(imports, ("flask", "werkzeug", "gunicorn")) == []


@pytest.mark.parametrize("module", ["delineate.boot", "delineate.logs", "delineate.gunicorn_errors"])
def test_what_gunicorns_master_imports_patches_nothing_early(module: str) -> None:
    # The master imports these before gevent patches the standard library; a client
    # library loaded this early breaks ssl in the workers (RecursionError).
    assert _loaded(f"import {module}", ("redis", "boto3", "urllib3", "delineate.security")) == []


def test_delineate_never_imports_celery_app() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _modules()
        if path.parts[len(ROOT.parts)] == "delineate"
        and any(name == "celery_app" or name.startswith("celery_app.") for name in _imported_names(path))
    ]
    assert offenders == []


def test_only_the_storage_package_speaks_s3() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _modules()
        if "storage" not in path.parts
        and any(name.split(".")[0] in {"boto3", "botocore", "urllib3"} for name in _imported_names(path))
    ]
    assert offenders == []


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
