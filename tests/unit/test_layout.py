"""The layout's rules (ARCHITECTURE.md, "Where each concern lives"), pinned.

Imports are checked in fresh interpreters: inside pytest every library is already loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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
    assert _loaded("import delineate.client.cli", SERVER_LIBRARIES) == []


def test_the_jobs_own_logic_loads_no_web_framework() -> None:
    modules = ("jobs.run", "jobs.sweeper", "jobs.webhooks", "errors", "store", "storage", "models", "services")
    imports = "\n".join(f"import delineate.{name}" for name in modules)
    assert _loaded(imports, ("flask", "werkzeug", "gunicorn")) == []


def test_the_worker_loads_no_web_framework() -> None:
    """The worker's entry point builds its Celery app without the API's Flask app."""
    code = "import celery_app.signals, celery_app.tasks\nfrom delineate.boot import worker_or_exit"
    assert _loaded(code, ("flask", "werkzeug", "gunicorn")) == []


@pytest.mark.parametrize("module", ["delineate.boot", "delineate.telemetry.logs", "delineate.api.gunicorn_errors"])
def test_what_gunicorns_master_imports_patches_nothing_early(module: str) -> None:
    # The master imports these before gevent patches the standard library; a client
    # library loaded this early breaks ssl in the workers (RecursionError).
    assert _loaded(f"import {module}", ("redis", "boto3", "urllib3", "delineate.api.edge.security")) == []


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


WEB = ("flask", "werkzeug", "gunicorn")
ENTRY_POINTS = {"delineate/__init__.py", "delineate/wsgi.py", "delineate/boot.py", "delineate/flower.py"}
"""Process entry points, which may name the web side's types (the app they build)."""
NEVER_THE_WEB_SIDE = ("jobs", "store", "storage", "redis_io", "broker", "telemetry", "config", "client", "dev")
MAX_TOP_LEVEL_MODULES = 12


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_only_the_web_side_imports_the_web_framework() -> None:
    """Nothing outside ``delineate/api/`` (and the entry points) imports Flask, werkzeug or
    gunicorn, not even inside a function."""
    offenders = {
        _relative(path): sorted(n for n in _imported_names(path) if n.split(".")[0] in WEB)
        for path in _modules()
        if not _relative(path).startswith("delineate/api/") and _relative(path) not in ENTRY_POINTS
    }
    assert {path: names for path, names in offenders.items() if names} == {}


@pytest.mark.parametrize("side", NEVER_THE_WEB_SIDE)
def test_the_other_sides_never_import_the_web_side(side: str) -> None:
    offenders = [
        _relative(path)
        for path in (ROOT / "delineate" / side).rglob("*.py")
        if any(name == "delineate.api" or name.startswith("delineate.api.") for name in _imported_names(path))
    ]
    assert offenders == []


def test_the_users_cli_speaks_http_only() -> None:
    """The client package takes nothing of the server's sides (the operator's commands are
    ``delineate-admin``, in ``delineate/dev/``)."""
    allowed = ("delineate.client", "delineate.config", "delineate.models")
    offenders = {
        _relative(path): sorted(
            n for n in _imported_names(path) if n.startswith("delineate") and not n.startswith(allowed)
        )
        for path in (ROOT / "delineate" / "client").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_top_level_holds_at_most_a_dozen_modules() -> None:
    top = sorted(p.name for p in (ROOT / "delineate").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_import_circles() -> None:
    """The import graph of our modules has no cycle (a package's ``__init__`` counts as the
    package; ``from pkg import mod`` counts as importing ``pkg.mod``)."""
    names = {_module_name(path): path for path in _modules()}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for target in targets:
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    edges.add(target)
        graph[name] = edges
    circles = _cycles(graph)
    assert circles == [], circles


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
