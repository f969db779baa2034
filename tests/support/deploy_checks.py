"""Wiring checks for files no engine runs here: compose.yml, deploy/k8s/, deploy/nginx.conf, README.

Each ``*_problems`` function takes parsed files and returns a list of sentences, one per
problem (empty: all good), so a test can show every problem at once and can be run on a
deliberately broken copy to prove the check bites (tests/deploy/test_deploy_files.py).
"""

from __future__ import annotations

import ipaddress
import re
import runpy
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values

from delineate.broker.app import celery_config
from delineate.broker.queue import SWEEP_QUEUE
from delineate.config import ENVIRONMENT, ConfigError, Settings, load_settings
from delineate.config.settings import SECRET_FIELDS
from delineate.flower import FLOWER_BOUNDS

ROOT = Path(__file__).resolve().parents[2]

EXTRA_ENV: dict[str, str] = {
    "FLOWER_BASIC_AUTH": "Flower's own --basic-auth (user:password), read by Flower from the environment",
}
"""Variables the deploy files may set that are not settings of ours, and why each is allowed."""

KNOWN_ENV = frozenset(ENVIRONMENT) | frozenset(EXTRA_ENV)
ONE_SHOT = "no"
"""A compose service with ``restart: "no"`` runs once (bucket set-up, seeding) and needs no healthcheck."""

Doc = dict[str, Any]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?)([-?+])([^}]*))?\}")


class MissingVariables(ValueError):
    """Required variables (``${NAME:?message}``) that the host does not set: compose stops."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        super().__init__(f"required variables not set: {', '.join(self.names)}")


def _substitute(match: re.Match[str], env: Mapping[str, str | None], missing: list[str]) -> str:
    name, colon, op, arg = match[1], match[2], match[3], match[4]
    value = env.get(name)
    present = value is not None and (not colon or value != "")
    if op == "-":
        return value if present and value is not None else arg
    if op == "+":
        return arg if present else ""
    if op == "?" and not present:
        missing.append(name)
    return value or ""


def interpolate(doc: Any, env: Mapping[str, str | None], missing: list[str] | None = None) -> Any:
    """Compose's substitution on every string of ``doc``: ``${NAME}``, ``${NAME:-default}``,
    ``${NAME-default}``, ``${NAME:?message}``, ``${NAME?message}``, ``${NAME:+other}`` (not
    nested). A required variable that is not set goes to ``missing`` (or raises without it).

    :raise MissingVariables: a required variable is not set, and no ``missing`` list was given.
    """
    found: list[str] = [] if missing is None else missing

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return _INTERPOLATION.sub(lambda m: _substitute(m, env, found), node)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        return node

    result = walk(doc)
    if missing is None and found:
        raise MissingVariables(found)
    return result


def load_compose(env_file: Path | None = None) -> Doc:
    """compose.yml as ``docker compose [--env-file FILE]`` reads it (interpolated)."""
    env = dotenv_values(env_file) if env_file else {}
    return interpolate(load_yaml(ROOT / "compose.yml"), env)  # type: ignore[no-any-return]


PROD_OVERLAY = ROOT / "deploy" / "compose.prod.yml"

_REPLACED_LISTS = frozenset({"command", "entrypoint", "test"})
"""Lists an overlay replaces (compose's merge); every other list is appended to."""


def merge_compose(base: Any, overlay: Any, key: str = "") -> Any:
    """``overlay`` over ``base`` as ``docker compose -f base -f overlay`` merges them, for what
    our files use: mappings key by key, ``command``, ``entrypoint`` and a healthcheck's ``test``
    replaced, other lists appended without repeats."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for name, value in overlay.items():
            merged[name] = merge_compose(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(overlay, list) and key not in _REPLACED_LISTS:
        return base + [item for item in overlay if item not in base]
    return overlay


def load_compose_prod(host_env: Mapping[str, str | None], base: Doc | None = None, overlay: Doc | None = None) -> Doc:
    """compose.yml with deploy/compose.prod.yml, as ``docker compose -f compose.yml -f
    deploy/compose.prod.yml`` reads them on a host whose environment (or ``.env``) is
    ``host_env``: each file interpolated, then merged (compose's order). ``base`` and
    ``overlay`` replace the files' contents (a broken copy).

    :raise MissingVariables: a required variable is not set.
    """
    missing: list[str] = []
    raw_base = load_yaml(ROOT / "compose.yml") if base is None else base
    raw_overlay = load_yaml(PROD_OVERLAY) if overlay is None else overlay
    merged = merge_compose(interpolate(raw_base, host_env, missing), interpolate(raw_overlay, host_env, missing))
    if missing:
        raise MissingVariables(missing)
    return merged  # type: ignore[no-any-return]


def settings_from(env: Mapping[str, str]) -> Settings:
    """The settings a process would build from exactly ``env`` (no ``.env`` file)."""
    return load_settings(environ={k: v for k, v in env.items() if k in ENVIRONMENT}, dotenv_path=None)


def gunicorn_setting(name: str) -> Any:
    """A value from deploy/gunicorn.conf.py, read the way gunicorn reads it."""
    return runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))[name]


def image_env(root: Path = ROOT) -> dict[str, str]:
    """The ``ENV`` of deploy/Dockerfile's last stage: what every container starts with."""
    text = (root / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    stage = re.split(r"^FROM ", text, flags=re.M)[-1]
    env: dict[str, str] = {}
    for line in stage.splitlines():
        if line.startswith("ENV "):
            env.update(word.split("=", 1) for word in shlex.split(line[4:]) if "=" in word)  # type: ignore[misc]
    return env


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


ADMIN_CONSOLES: dict[str, frozenset[int]] = {
    "minio": frozenset({9001}),
    "flower": frozenset({5555}),
    "jaeger": frozenset({16686, 4318}),
    "prometheus": frozenset({9090}),
    "grafana": frozenset({3000}),
}
"""Container ports of the admin consoles (and Jaeger's span receiver), which have no
authentication of the app's own: published on the host's loopback only."""


def port_mappings(service: Doc) -> list[tuple[str, str, int]]:
    """(host address, host port, container port) of each published port; the address is ""
    when the port is published on every interface."""
    out: list[tuple[str, str, int]] = []
    for mapping in service.get("ports") or []:
        if isinstance(mapping, dict):
            out.append((str(mapping.get("host_ip", "")), str(mapping.get("published", "")), int(mapping["target"])))
            continue
        text = str(mapping).split("/")[0]
        address = ""
        if text.startswith("["):
            address, _, text = text[1:].partition("]:")
        parts = text.split(":")
        if len(parts) == 3:
            address, parts = parts[0], parts[1:]
        out.append((address, parts[0] if len(parts) == 2 else "", int(parts[-1])))
    return out


def console_port_problems(label: str, services: Mapping[str, Doc]) -> list[str]:
    """An admin console published beyond the host's loopback."""
    problems: list[str] = []
    for name, ports in ADMIN_CONSOLES.items():
        for address, host, container in port_mappings(services.get(name) or {}):
            if container in ports and not _loopback(address):
                problems.append(
                    f"{label}: {name} publishes its console port {container} on every interface "
                    f"({address or '0.0.0.0'}:{host}): publish it on 127.0.0.1 only"
                )
    return problems


# -- compose ---------------------------------------------------------------------------------


def _words(command: Any) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def service_env(service: Doc, root: Path = ROOT) -> dict[str, str]:
    """What a compose service's container sees: its env_file(s), then ``environment``."""
    env: dict[str, str] = {}
    files = service.get("env_file") or []
    for entry in [files] if isinstance(files, str | dict) else files:
        path = entry["path"] if isinstance(entry, dict) else entry
        env.update({k: v or "" for k, v in dotenv_values(root / path).items()})
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    env.update({k: "" if v is None else str(v) for k, v in environment.items()})
    return env


def listening_ports(service: Doc) -> set[int]:
    """Container ports a service declares (``expose`` and the container side of ``ports``)."""
    ports = {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    for mapping in service.get("ports") or []:
        ports.add(int(str(mapping).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def published_ports(service: Doc) -> dict[int, int]:
    """Host port → container port."""
    out: dict[int, int] = {}
    for mapping in service.get("ports") or []:
        parts = str(mapping).split("/")[0].split(":")
        if len(parts) >= 2:
            out[int(parts[-2])] = int(parts[-1])
    return out


def is_app(service: Doc, app_image: str) -> bool:
    return service.get("image") == app_image or "build" in service


def compose_problems(compose: Doc, root: Path = ROOT) -> list[str]:
    """Everything that would break `docker compose up` or the app inside it."""
    problems: list[str] = []
    services: dict[str, Doc] = compose.get("services") or {}
    for required in ("redis", "minio", "minio-init", "api", "worker", "flower", "nginx", "jaeger"):
        if required not in services:
            problems.append(f"compose: no service {required!r}")
    if "api" not in services or "worker" not in services:
        return problems

    app_image = services["api"].get("image", "")
    if not app_image or "build" not in services["api"]:
        problems.append("compose: api must build the app image and name it (image: + build:)")
    if services["worker"].get("image") != app_image:
        problems.append(
            f"compose: worker uses image {services['worker'].get('image')!r}, api {app_image!r}: "
            "they must run the same image"
        )
    for name, svc in services.items():
        if "build" in svc and (svc.get("image") != app_image or svc["build"] != services["api"]["build"]):
            problems.append(f"compose: {name} builds an image other than the api's")

    one_shots = {name for name, svc in services.items() if str(svc.get("restart", "")) == ONE_SHOT}
    for name, svc in services.items():
        # Healthchecks on every long-running service.
        check = svc.get("healthcheck") or {}
        if name not in one_shots and (check.get("disable") or not check.get("test")):
            problems.append(f"compose: {name} has no healthcheck")
        # depends_on: long form, waiting for health (or for a one-shot's success).
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"compose: {name}: depends_on must use the long form with a condition")
            depends = {}
        for target, spec in depends.items():
            if target not in services:
                problems.append(f"compose: {name} depends on unknown service {target!r}")
                continue
            want = "service_completed_successfully" if target in one_shots else "service_healthy"
            if (spec or {}).get("condition") != want:
                problems.append(f"compose: {name} → {target}: condition must be {want}")
        # Files mounted or read must exist in the repository.
        for path in _env_files(svc):
            if not (root / path).is_file():
                problems.append(f"compose: {name}: env_file {path} does not exist")
        for volume in svc.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith(".") and not (root / source).exists():
                problems.append(f"compose: {name} mounts {source}, which does not exist")

    app_services = {name: svc for name, svc in services.items() if is_app(svc, app_image)}
    app_env = {name: service_env(svc, root) for name, svc in app_services.items()}
    for name, env in app_env.items():
        unknown = sorted(set(env) - KNOWN_ENV)
        if unknown:
            problems.append(f"compose: {name} sets variables the settings do not know: {', '.join(unknown)}")
        try:
            settings_from(env)
        except ConfigError as exc:
            problems.append(f"compose: {name}: settings would not load: {exc}")
    if problems:
        return problems

    api_env = app_env["api"]
    settings = settings_from(api_env)
    for name, env in app_env.items():
        if settings_from(env).redis_url != settings.redis_url:
            problems.append(f"compose: {name} and api use different Redis URLs")
    problems += _url_problems(services, app_env, root)
    problems += _port_problems(services, app_services, app_env)
    problems += _storage_problems(services, settings, root)
    problems += _command_problems(services)
    problems += _nginx_problems(services, settings, root)
    problems += _metrics_problems(services, settings, root)
    problems += console_port_problems("compose", services)
    bind = settings_from({**image_env(root), **api_env}).bind
    if _loopback(bind):
        problems.append(
            f"compose: api listens on BIND={bind} inside its container (the image's ENV, then its "
            "environment): nginx and the healthcheck's peers cannot reach it"
        )
    return problems


HA_PROFILE = "ha"


def compose_ha_problems(compose: Doc, root: Path = ROOT) -> list[str]:
    """Profile ha (read with deploy/ha.env): every app service finds the primary through
    three or more sentinels of the profile, which all watch `redis` under the configured
    master name with a majority quorum, and a replica of the profile copies that primary."""
    services: dict[str, Doc] = compose.get("services") or {}
    ha = {name: svc for name, svc in services.items() if HA_PROFILE in (svc.get("profiles") or [])}
    app_image = services.get("api", {}).get("image", "")
    app = {name: settings_from(service_env(svc, root)) for name, svc in services.items() if is_app(svc, app_image)}
    api = app.get("api")
    if api is None or not api.redis_sentinels:
        return ["compose ha: api is not pointed at any sentinel (REDIS_SENTINELS)"]
    problems: list[str] = []
    for name, s in app.items():
        if (s.redis_sentinels, s.redis_sentinel_master) != (api.redis_sentinels, api.redis_sentinel_master):
            problems.append(f"compose ha: {name} uses other sentinels or another master name than api")
        for target in services[name].get("depends_on") or {}:
            if target in ha:  # without the profile, compose would refuse the whole file
                problems.append(f"compose ha: {name} depends on {target}, which only runs under profile ha")
    if len(api.redis_sentinels) < 3:
        problems.append("compose ha: at least three sentinels are needed (a majority must survive one)")
    primaries = set()
    for host, port in api.redis_sentinels:
        if host not in ha:
            problems.append(f"compose ha: REDIS_SENTINELS names {host}, which is no service of profile ha")
            continue
        if port not in listening_ports(ha[host]):
            problems.append(f"compose ha: {host} does not listen on {port}")
        monitor = re.search(r"sentinel monitor (\S+) (\S+) (\d+) (\d+)", " ".join(_words(ha[host].get("command"))))
        if monitor is None:
            problems.append(f"compose ha: {host} monitors no primary")
            continue
        master, primary, primary_port, quorum = monitor.groups()
        if master != api.redis_sentinel_master:
            problems.append(f"compose ha: {host} watches {master!r}, the app asks for {api.redis_sentinel_master!r}")
        if int(quorum) * 2 <= len(api.redis_sentinels):
            problems.append(f"compose ha: {host}'s quorum {quorum} is not a majority of the sentinels")
        problems += _target_problems(f"{host} monitor", f"redis://{primary}:{primary_port}", services)
        primaries.add((primary, primary_port))
    replicas = [_words(svc.get("command")) for svc in ha.values() if "--replicaof" in _words(svc.get("command"))]
    if not replicas:
        problems.append("compose ha: no replica (a redis-server with --replicaof) in profile ha")
    for words in replicas:
        at = words.index("--replicaof")
        if (words[at + 1], words[at + 2]) not in primaries:
            problems.append(f"compose ha: a replica copies {words[at + 1]}:{words[at + 2]}, not the watched primary")
    return problems


SECRET_ENV = frozenset(name for name, (attr, _) in ENVIRONMENT.items() if attr in SECRET_FIELDS) | {"S3_ACCESS_KEY_ID"}
"""Variables whose values are secrets (the settings' secret fields, and MinIO's root user)."""

_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN")


def is_secret_env(name: str) -> bool:
    return name in SECRET_ENV or bool(_SECRET_NAME.search(name))


_FROM_HOST = re.compile(r"\$\{(\w+)(?::?\?[^}]*|:?-)?\}")
"""A value read from the host: ``${NAME}``, ``${NAME:?message}`` or ``${NAME:-}`` (no default)."""


def compose_prod_problems(
    host_env: Mapping[str, str | None], base: Doc | None = None, overlay: Doc | None = None, root: Path = ROOT
) -> list[str]:
    """deploy/compose.prod.yml over compose.yml, on a host whose environment is ``host_env``:
    no secret written in the overlay, none of deploy/dev.env's left in force, the API keyed
    (API_KEYS or TENANTS_FILE required from the host), the deliberate-error route off, and
    the admin consoles on the host's loopback. ``base``/``overlay``: broken copies of the files."""
    raw_base = load_yaml(root / "compose.yml") if base is None else base
    raw_overlay = load_yaml(PROD_OVERLAY) if overlay is None else overlay
    try:
        merged = load_compose_prod(host_env, raw_base, raw_overlay)
    except MissingVariables as exc:
        return [f"compose prod: {exc}"]
    problems: list[str] = []
    overlay_services: dict[str, Doc] = raw_overlay.get("services") or {}
    services: dict[str, Doc] = merged.get("services") or {}
    for name, svc in overlay_services.items():
        for var, value in (svc.get("environment") or {}).items():
            match = _FROM_HOST.fullmatch(str(value))
            if is_secret_env(var) and value not in ("", None) and (match is None or match[1] != var):
                problems.append(
                    f"compose prod: {name} sets {var} to a value written in the file: "
                    f"read it from the host (${{{var}:?...}})"
                )
    committed: dict[str, tuple[str, str]] = {}  # a secret's committed value → (variable, file)
    for name, svc in services.items():
        own = (overlay_services.get(name) or {}).get("environment") or {}
        for path in _env_files(svc):
            for var, value in dotenv_values(root / path).items():
                if value and is_secret_env(var):
                    committed[value] = (var, path)
                    if var not in own:
                        problems.append(
                            f"compose prod: {name} keeps {var} from {path} (a committed development value): "
                            f"set it from the host in {PROD_OVERLAY.name}"
                        )
    text = yaml.safe_dump(raw_overlay)
    for value, (var, path) in sorted(committed.items()):
        if len(value) >= 6 and value in text:
            problems.append(f"compose prod: the overlay holds {var}'s development value from {path}")
    if "api" not in services:
        return [*problems, "compose prod: no service 'api'"]
    api_raw = (overlay_services.get("api") or {}).get("environment") or {}
    required = [v for v in ("API_KEYS", "TENANTS_FILE") if re.fullmatch(rf"\$\{{{v}:?\?[^}}]*\}}", str(api_raw.get(v)))]
    try:
        api = settings_from(service_env(services["api"], root))
    except ConfigError as exc:
        return [*problems, f"compose prod: api: settings would not load: {exc}"]
    if not required or not (api.api_keys or api.tenants_file):
        problems.append(
            "compose prod: the API is not keyed: require API_KEYS (or TENANTS_FILE) from the host, as ${API_KEYS:?...}"
        )
    if api.sentry_test_route:
        problems.append("compose prod: SENTRY_TEST_ROUTE is on (a deliberate 500 for anyone): set it false")
    problems += console_port_problems("compose prod", services)
    return problems


_COMPOSE_FILES = re.compile(r"docker compose((?:\s+-f\s+\S+)*)")


def workflow_deploy_problems(workflow: Doc) -> list[str]:
    """The CI deploy job runs compose with the production overlay, and no committed env file."""
    steps = ((workflow.get("jobs") or {}).get("deploy") or {}).get("steps") or []
    text = "\n".join(str(step.get("run", "")) for step in steps)
    problems: list[str] = []
    calls = list(_COMPOSE_FILES.finditer(text))
    if not calls:
        problems.append("ci: the deploy job runs no `docker compose`")
    for call in calls:
        files = re.findall(r"-f\s+(\S+)", call[1])
        if "deploy/compose.prod.yml" not in [f.strip("'\"") for f in files]:
            problems.append(
                f"ci: the deploy job runs `{call[0].strip()}` without -f deploy/compose.prod.yml "
                "(the development file alone: fake secrets, an open API)"
            )
    if re.search(r"--env-file\s+\S*deploy/", text):
        problems.append("ci: the deploy job reads an env file from the repository: secrets come from the host")
    return problems


def _env_files(service: Doc) -> list[str]:
    files = service.get("env_file") or []
    entries = [files] if isinstance(files, str | dict) else files
    return [e["path"] if isinstance(e, dict) else e for e in entries]


def _target_problems(label: str, url: str, services: Mapping[str, Doc], default_port: int | None = None) -> list[str]:
    """``url`` must name a compose service and a port that service listens on."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or default_port
    if host not in services:
        return [f"compose: {label} = {url}: no service named {host!r}"]
    if port not in listening_ports(services[host]):
        return [
            f"compose: {label} = {url}: {host} does not listen on {port} ({sorted(listening_ports(services[host]))})"
        ]
    return []


def _console_problems(name: str, s: Settings, services: Mapping[str, Doc]) -> list[str]:
    """The console's browser reaches the collector and the trace viewer from the host, and
    the collector lets the console's origin (nginx's published port) post to it."""
    problems: list[str] = []
    if not s.dashboard_otlp_endpoint or s.dashboard_otlp_endpoint == s.otel_exporter_otlp_endpoint:
        return problems
    browser, collector = urlsplit(s.dashboard_otlp_endpoint), urlsplit(s.otel_exporter_otlp_endpoint)
    target = services.get(collector.hostname or "", {})
    if browser.hostname not in {"localhost", "127.0.0.1"}:
        problems.append(f"compose: {name} DASHBOARD_OTLP_ENDPOINT = {s.dashboard_otlp_endpoint}: not on the host")
    elif published_ports(target).get(browser.port or 80) != collector.port:
        problems.append(
            f"compose: {name} DASHBOARD_OTLP_ENDPOINT = {s.dashboard_otlp_endpoint} is not published to "
            f"{collector.hostname}:{collector.port}"
        )
    origins = [
        f"http://localhost:{host}"
        for host, container in published_ports(services.get("nginx", {})).items()
        if container == 80
    ]
    allowed = " ".join(_words(target.get("command")))
    if not any(f"cors.allowed-origins={origin}" in allowed for origin in origins):
        problems.append(f"compose: {collector.hostname} does not allow the console's origin ({origins}) by CORS")
    if s.dashboard_trace_url:
        viewer = urlsplit(s.dashboard_trace_url)
        if viewer.hostname not in {"localhost", "127.0.0.1"} or viewer.port not in published_ports(target):
            problems.append(f"compose: {name} DASHBOARD_TRACE_URL = {s.dashboard_trace_url}: not a published port")
    return problems


def _url_problems(services: Mapping[str, Doc], app_env: Mapping[str, Mapping[str, str]], root: Path) -> list[str]:
    problems: list[str] = []
    for name, env in app_env.items():
        s = settings_from(env)
        problems += _target_problems(f"{name} REDIS_URL", s.redis_url, services, 6379)
        problems += _target_problems(f"{name} CELERY_BROKER_URL", s.celery_broker_url, services, 6379)
        problems += _target_problems(f"{name} S3_ENDPOINT", s.s3_endpoint, services, 80)
        if s.otel_exporter_otlp_endpoint:
            problems += _target_problems(f"{name} OTEL_EXPORTER_OTLP_ENDPOINT", s.otel_exporter_otlp_endpoint, services)
        problems += _console_problems(name, s, services)
        # The public endpoint is what a browser on the host opens: a published port of the
        # same service and container port the app itself talks to.
        public, internal = urlsplit(s.s3_public_endpoint), urlsplit(s.s3_endpoint)
        store = services.get(internal.hostname or "", {})
        if public.hostname not in {"localhost", "127.0.0.1"}:
            problems.append(f"compose: {name} S3_PUBLIC_ENDPOINT = {s.s3_public_endpoint}: not reachable from the host")
        elif published_ports(store).get(public.port or 80) != (internal.port or 80):
            problems.append(
                f"compose: {name} S3_PUBLIC_ENDPOINT = {s.s3_public_endpoint} is not published to "
                f"{internal.hostname}:{internal.port}"
            )
    return problems


def _healthcheck_ports(service: Doc) -> set[int]:
    text = " ".join(_words((service.get("healthcheck") or {}).get("test")))
    return {int(p) for p in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", text)}


def _port_problems(
    services: Mapping[str, Doc], app_services: Mapping[str, Doc], app_env: Mapping[str, Mapping[str, str]]
) -> list[str]:
    problems: list[str] = []
    for name, svc in services.items():
        wrong = _healthcheck_ports(svc) - listening_ports(svc)
        if wrong:
            problems.append(f"compose: {name}'s healthcheck probes port {sorted(wrong)}, which it does not listen on")
    api_port = settings_from(app_env["api"]).port
    if api_port not in listening_ports(services["api"]):
        problems.append(
            f"compose: api listens on PORT={api_port} but exposes {sorted(listening_ports(services['api']))}"
        )
    flower_port = settings_from(app_env["flower"]).flower_port if "flower" in app_env else None
    if flower_port is not None and flower_port not in listening_ports(services["flower"]):
        problems.append(f"compose: flower listens on FLOWER_PORT={flower_port} but exposes another port")
    for name in app_services:
        port = settings_from(app_env[name]).port
        if port != api_port:
            problems.append(f"compose: {name} has PORT={port}, api {api_port}")
    return problems


def _storage_problems(services: Mapping[str, Doc], settings: Settings, root: Path) -> list[str]:
    problems: list[str] = []
    redis_words = _words(services["redis"].get("command"))
    joined = " ".join(redis_words)
    if "--appendonly yes" not in joined:
        problems.append("compose: redis must run with --appendonly yes (the broker's queue must survive a restart)")
    if "--maxmemory-policy noeviction" not in joined:
        problems.append("compose: redis must run with --maxmemory-policy noeviction (never evict queued jobs)")
    store_host = urlsplit(settings.s3_endpoint).hostname or ""
    store_env = service_env(services.get(store_host, {}), root)
    # MinIO starts with the app's key pair as its root user (see compose.yml).
    for key in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        if store_env.get(key) != getattr(settings, key.lower()):
            problems.append(f"compose: {store_host} is not started with the app's {key}")
    init = services.get("minio-init", {})
    init_env, init_script = service_env(init, root), " ".join(_words(init.get("entrypoint")))
    if init_env.get("S3_BUCKET_NAME") != settings.s3_bucket_name:
        problems.append(
            f"compose: minio-init creates bucket {init_env.get('S3_BUCKET_NAME')!r}, "
            f"the app uses {settings.s3_bucket_name!r}"
        )
    if "mc mb" not in init_script or not re.search(r"ilm.*bundles/|bundles/.*ilm", init_script, re.S):
        problems.append("compose: minio-init must create the bucket and a lifecycle rule for bundles/")
    return problems


def _command_problems(services: Mapping[str, Doc]) -> list[str]:
    problems: list[str] = []
    expected = {
        "api": ["gunicorn", "deploy/gunicorn.conf.py", "delineate.wsgi:app"],
        "worker": ["celery", "celery_app.worker", "worker"],
        "flower": ["celery", "celery_app.worker", "flower"],
    }
    for name, words in expected.items():
        command = _words(services.get(name, {}).get("command"))
        if not all(word in command for word in words):
            problems.append(f"compose: {name}'s command {command} must contain {words}")
    problems += sweep_queue_problems("compose: sweeper", services.get("sweeper", {}).get("command"))
    for name in ("worker", "sweeper"):
        check = (services.get(name, {}).get("healthcheck") or {}).get("test")
        problems += heartbeat_problems(f"compose: {name}'s healthcheck", " ".join(_words(check)))
    return problems


LIVENESS_MODULE = "delineate.broker.liveness"


def heartbeat_problems(label: str, check: str) -> list[str]:
    """A Celery process is alive while its event loop touches its heartbeat file: a check that
    it merely exists misses a hung worker, one through the broker fails in every Redis outage."""
    if LIVENESS_MODULE not in check:
        return [f"{label} must check the worker's heartbeat: python -m {LIVENESS_MODULE}"]
    return []


def sweep_queue_problems(label: str, command: Any) -> list[str]:
    """The sweeper must consume the queue beat sends the sweep to (``-Q SWEEP_QUEUE``)."""
    words = _words(command)
    queues = words[words.index("-Q") + 1] if "-Q" in words[:-1] else None
    if queues is None or SWEEP_QUEUE not in queues.split(","):
        return [f"{label} must consume the sweep queue: -Q {SWEEP_QUEUE} (task_queue.SWEEP_QUEUE), not {queues!r}"]
    return []


def nginx_directives(text: str) -> dict[str, list[tuple[str, list[str]]]]:
    """Directives of an nginx config by block: ``{"": [...], "location /x/": [...], "upstream u": [...]}``."""
    blocks: dict[str, list[tuple[str, list[str]]]] = {}
    stack = [""]
    for token in re.findall(r"[^;{}]+[;{]|}", re.sub(r"#[^\n]*", "", text)):
        token = token.strip()
        if token == "}":
            stack.pop()
        elif token.endswith("{"):
            name = " ".join(token[:-1].split())
            if not name.startswith("server") or name.startswith("server "):
                stack.append(name)
            else:
                stack.append(stack[-1])
            blocks.setdefault(stack[-1], [])
        else:
            words = shlex.split(token[:-1])
            blocks.setdefault(stack[-1], []).append((words[0], words[1:]))
    return blocks


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    if not match:
        raise ValueError(value)
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match[2]]


def _first(directives: Iterable[tuple[str, list[str]]], name: str) -> list[str] | None:
    return next((args for key, args in directives if key == name), None)


def nginx_problems(text: str, services: Mapping[str, Doc], settings: Settings) -> list[str]:
    problems: list[str] = []
    blocks = nginx_directives(text)
    server_level = blocks.get("", [])
    upstreams = {name.split()[1]: dirs for name, dirs in blocks.items() if name.startswith("upstream ")}
    for name, dirs in upstreams.items():
        for key, args in dirs:
            if key == "server":
                problems += [
                    p.replace("compose: ", "nginx: ")
                    for p in _target_problems(f"upstream {name}", f"http://{args[0]}", services)
                ]
        timeout = _first(dirs, "keepalive_timeout")
        if _first(dirs, "keepalive") and (timeout is None or _seconds(timeout[0]) >= gunicorn_setting("keepalive")):
            problems.append(
                f"nginx: upstream {name} keeps idle connections at least as long as gunicorn's keepalive "
                f"({gunicorn_setting('keepalive')} s): set keepalive_timeout below it"
            )
    stream = next(
        (dirs for name, dirs in blocks.items() if name.startswith("location") and "/v1/download/stream/" in name),
        None,
    )
    if stream is None:
        return [*problems, "nginx: no location for /v1/download/stream/"]
    merged = server_level + stream  # location settings win; look them up there first
    if (_first(stream, "proxy_buffering") or _first(server_level, "proxy_buffering")) != ["off"]:
        problems.append("nginx: proxy_buffering must be off for /v1/download/stream/")
    read = _first(stream, "proxy_read_timeout") or _first(server_level, "proxy_read_timeout") or ["60s"]
    if _seconds(read[0]) <= settings.sse_heartbeat_seconds:
        problems.append(
            f"nginx: proxy_read_timeout {read[0]} for the stream must exceed "
            f"SSE_HEARTBEAT_SECONDS ({settings.sse_heartbeat_seconds})"
        )
    if (_first(stream, "proxy_http_version") or _first(server_level, "proxy_http_version")) != ["1.1"]:
        problems.append("nginx: proxy_http_version 1.1 is needed for streaming to the upstream")
    proxied = [args[0] for key, args in merged if key == "proxy_pass"]
    if not proxied or not any(urlsplit(p).hostname in upstreams or urlsplit(p).hostname in services for p in proxied):
        problems.append("nginx: the stream location does not proxy to the API")
    return problems


def _nginx_problems(services: Mapping[str, Doc], settings: Settings, root: Path) -> list[str]:
    for volume in services.get("nginx", {}).get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        if target.startswith("/etc/nginx/") and (root / source).is_file():
            return nginx_problems((root / source).read_text(), services, settings)
    return ["compose: nginx mounts no config from the repository"]


def _metrics_problems(services: Mapping[str, Doc], settings: Settings, root: Path) -> list[str]:
    problems: list[str] = []
    if "prometheus" in services:
        config = load_yaml(root / "deploy" / "prometheus" / "prometheus.yml")
        for job in config.get("scrape_configs", []):
            for group in job.get("static_configs", []):
                for target in group.get("targets", []):
                    problems += _target_problems(f"prometheus target {target}", f"http://{target}", services)
    if "grafana" in services:
        for path in (root / "deploy" / "grafana" / "provisioning" / "datasources").glob("*.yml"):
            for source in load_yaml(path).get("datasources", []):
                problems += _target_problems(f"grafana datasource {source['name']}", source["url"], services)
    return problems


# -- Kubernetes ------------------------------------------------------------------------------


def _by_kind(docs: Iterable[Doc]) -> dict[tuple[str, str], Doc]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _container(deployment: Doc) -> Doc:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _probe_text(probe: Doc | None) -> str:
    return yaml.safe_dump(probe or {})


def k8s_problems(docs: list[Doc], kustomization: Doc, files: Iterable[str]) -> list[str]:
    problems: list[str] = []
    listed, present = set(kustomization.get("resources", [])), set(files) - {"kustomization.yaml"}
    if listed != present:
        problems.append(
            f"k8s: kustomization resources and files differ: not listed {sorted(present - listed)}, "
            f"missing {sorted(listed - present)}"
        )
    objects = _by_kind(docs)
    api, worker = objects.get(("Deployment", "api")), objects.get(("Deployment", "worker"))
    if api is None or worker is None:
        return [*problems, "k8s: Deployments api and worker are both needed"]
    api_c, worker_c = _container(api), _container(worker)
    if api_c["image"] != worker_c["image"]:
        problems.append(f"k8s: api runs {api_c['image']!r}, worker {worker_c['image']!r}: they must run the same image")

    # Environment: every key a known setting, and the settings load from it.
    env: dict[str, str] = {}
    for container, name in ((api_c, "api"), (worker_c, "worker")):
        for source in container.get("envFrom", []):
            kind, ref = (
                ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
            )
            obj = objects.get((kind, ref["name"]))
            if obj is None:
                problems.append(f"k8s: {name} loads {kind} {ref['name']!r}, which is not defined")
                continue
            data = {**obj.get("data", {}), **obj.get("stringData", {})}
            unknown = sorted(set(data) - KNOWN_ENV)
            if unknown:
                problems.append(
                    f"k8s: {kind} {ref['name']} sets variables the settings do not know: {', '.join(unknown)}"
                )
            env.update({k: str(v) for k, v in data.items()})
        for item in container.get("env", []):
            if item["name"] not in KNOWN_ENV:
                problems.append(f"k8s: {name} sets {item['name']}, which the settings do not know")
    try:
        settings = settings_from(env)
    except ConfigError as exc:
        return [*problems, f"k8s: settings would not load: {exc}"]

    # The API: where it listens, its port, readiness on /health, a liveness that does not touch Redis.
    bind = settings_from({**image_env(), **env}).bind
    if _loopback(bind):
        problems.append(f"k8s: api listens on BIND={bind}: the Service, the Ingress and the probes cannot reach it")
    ports = {p.get("name"): p["containerPort"] for p in api_c.get("ports", [])}
    if settings.port not in ports.values():
        problems.append(f"k8s: api listens on PORT={settings.port} but declares ports {sorted(ports.values())}")

    def probe_port(probe: Doc) -> int | None:
        action = probe.get("httpGet") or probe.get("tcpSocket") or {}
        port = action.get("port")
        return ports.get(port) if isinstance(port, str) else port

    readiness, liveness = api_c.get("readinessProbe") or {}, api_c.get("livenessProbe") or {}
    if (readiness.get("httpGet") or {}).get("path") != "/health":
        problems.append("k8s: api readinessProbe must GET /health")
    elif probe_port(readiness) != settings.port:
        problems.append("k8s: api readinessProbe probes another port than PORT")
    if not liveness:
        problems.append("k8s: api has no livenessProbe")
    elif "/health" in _probe_text(liveness):
        problems.append("k8s: api livenessProbe must not use /health (it fails with Redis; every pod would restart)")
    elif probe_port(liveness) != settings.port:
        problems.append("k8s: api livenessProbe probes another port than PORT")
    worker_live = worker_c.get("livenessProbe")
    if not worker_live:
        problems.append("k8s: worker has no livenessProbe")
    elif re.search(r"inspect|ping", _probe_text(worker_live)):
        problems.append("k8s: worker livenessProbe must not go through the broker (celery inspect ping)")
    if not all(w in worker_c.get("command", []) for w in ("celery", "celery_app.worker", "worker")):
        problems.append("k8s: worker command must run `celery -A celery_app.worker worker`")
    sweeper = objects.get(("Deployment", "sweeper"))
    problems += sweep_queue_problems("k8s: sweeper", _container(sweeper).get("command") if sweeper else None)
    for container, name in ((worker_c, "worker"), (_container(sweeper) if sweeper else {}, "sweeper")):
        problems += heartbeat_problems(f"k8s: {name} livenessProbe", _probe_text(container.get("livenessProbe")))
    for container, name in ((api_c, "api"), (worker_c, "worker")):
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(part) or {}):
                problems.append(f"k8s: {name} needs cpu and memory {part}")

    # Graceful stops: longer than gunicorn's graceful timeout; longer than the longest job.
    grace = api["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if grace <= gunicorn_setting("graceful_timeout"):
        problems.append("k8s: api terminationGracePeriodSeconds must exceed gunicorn's graceful_timeout")
    worker_grace = worker["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if worker_grace * 1000 <= load_settings(environ={}, dotenv_path=None).download_delay_max_ms:
        problems.append("k8s: worker terminationGracePeriodSeconds must exceed the longest job (DOWNLOAD_DELAY_MAX_MS)")

    problems += _k8s_routing_problems(objects, api, ports, settings)
    problems += _k8s_scaling_problems(objects, settings)
    return problems


def _k8s_routing_problems(
    objects: Mapping[tuple[str, str], Doc], api: Doc, ports: Mapping[str | None, int], settings: Settings
) -> list[str]:
    problems: list[str] = []
    service = objects.get(("Service", "api"))
    if service is None:
        return ["k8s: no Service api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    if not set(service["spec"]["selector"].items()) <= set(labels.items()):
        problems.append("k8s: Service api's selector does not match the api pods")
    service_ports = {p.get("name"): p for p in service["spec"]["ports"]}
    for p in service_ports.values():
        target = p.get("targetPort", p["port"])
        if (ports.get(target) if isinstance(target, str) else target) is None or (
            isinstance(target, int) and target not in ports.values()
        ):
            problems.append(f"k8s: Service api targets port {target!r}, which the api container does not declare")
    ingresses = [d for (kind, _), d in objects.items() if kind == "Ingress"]
    stream_ok = False
    routed: set[str] = set()
    for ingress in ingresses:
        notes = ingress["metadata"].get("annotations") or {}
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                problems += _ingress_path_problems(ingress["metadata"]["name"], path["path"], path["pathType"])
                routed |= {p for p in PUBLIC_PATHS if _routes(path["path"], path["pathType"], p)}
                backend = path["backend"]["service"]
                if ("Service", backend["name"]) not in objects:
                    problems.append(
                        f"k8s: Ingress {ingress['metadata']['name']} routes to unknown Service {backend['name']!r}"
                    )
                elif backend["port"].get("name") not in service_ports and backend["port"].get("number") not in {
                    p["port"] for p in service_ports.values()
                }:
                    problems.append(
                        f"k8s: Ingress {ingress['metadata']['name']} routes to a port Service {backend['name']} lacks"
                    )
                if path["path"].startswith("/v1/download/stream"):
                    buffering = notes.get("nginx.ingress.kubernetes.io/proxy-buffering")
                    read = int(notes.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60"))
                    if buffering != "off":
                        problems.append(
                            "k8s: the stream Ingress needs nginx.ingress.kubernetes.io/proxy-buffering: off"
                        )
                    elif read <= settings.sse_heartbeat_seconds:
                        problems.append("k8s: the stream Ingress read timeout must exceed SSE_HEARTBEAT_SECONDS")
                    else:
                        stream_ok = True
    if not stream_ok and not any("proxy-buffering" in p for p in problems):
        problems.append("k8s: no Ingress path for /v1/download/stream/ with SSE annotations")
    problems += [f"k8s: no Ingress routes {p} to the API" for p in PUBLIC_PATHS if p not in routed]
    return problems


PUBLIC_PATHS = ("/v1", "/dashboard", "/docs", "/openapi.json")
"""What the Ingress routes to the API, and nothing else."""

INTERNAL_PATHS = ("/metrics", "/health", "/livez")
"""Paths for Prometheus and the kubelet's probes, inside the cluster: never on an Ingress."""


def _routes(path: str, kind: str, target: str) -> bool:
    """Whether an Ingress path (``Exact``, else a prefix by path elements) sends ``target``."""
    if kind == "Exact":
        return target == path
    prefix = path.rstrip("/")
    return prefix == "" or target == prefix or target.startswith(prefix + "/")


def _ingress_path_problems(ingress: str, path: str, kind: str) -> list[str]:
    problems = [
        f"k8s: Ingress {ingress} routes {inside} (path {path!r}): keep /metrics, /health and /livez on the Service"
        for inside in INTERNAL_PATHS
        if _routes(path, kind, inside)
    ]
    within = path.rstrip("/") or "/"
    if not any(_routes(public, "Exact" if "." in public else "Prefix", within) for public in PUBLIC_PATHS):
        problems.append(f"k8s: Ingress {ingress} routes {path!r}, beyond the public paths {', '.join(PUBLIC_PATHS)}")
    return problems


def _k8s_scaling_problems(objects: Mapping[tuple[str, str], Doc], settings: Settings) -> list[str]:
    problems: list[str] = []
    hpas = [d for (kind, _), d in objects.items() if kind == "HorizontalPodAutoscaler"]
    if not any(
        h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"} for h in hpas
    ):
        problems.append("k8s: no HorizontalPodAutoscaler targets Deployment api")
    if any(h["spec"]["scaleTargetRef"]["name"] == "worker" for h in hpas):
        problems.append("k8s: the worker is scaled by KEDA; an HPA on it would fight the ScaledObject")
    scaled = [d for (kind, _), d in objects.items() if kind == "ScaledObject"]
    if not scaled:
        return [*problems, "k8s: no KEDA ScaledObject for the worker"]
    redis_url = urlsplit(settings.celery_broker_url)
    redis_service = objects.get(("Service", redis_url.hostname or ""))
    if redis_service is None:
        problems.append(f"k8s: REDIS_URL host {redis_url.hostname!r} is not a Service in the manifests")
    elif (redis_url.port or 6379) not in {p["port"] for p in redis_service["spec"]["ports"]}:
        problems.append(f"k8s: Service {redis_url.hostname} does not serve port {redis_url.port or 6379}")
    queue = celery_config(settings).get("task_default_queue", "celery")
    for obj in scaled:
        if obj["spec"]["scaleTargetRef"]["name"] != "worker" or ("Deployment", "worker") not in objects:
            problems.append("k8s: the ScaledObject must target Deployment worker")
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] != "redis" or meta.get("listName") != queue:
                problems.append(f"k8s: the ScaledObject must watch the Redis list {queue!r} (Celery's queue)")
            host, _, port = meta.get("address", "").partition(":")
            if host.split(".")[0] != redis_url.hostname or int(port or 0) != (redis_url.port or 6379):
                problems.append(
                    f"k8s: the ScaledObject watches {meta.get('address')!r}, the app uses {redis_url.netloc!r}"
                )
            if meta.get("databaseIndex", "0") != (redis_url.path.strip("/") or "0"):
                problems.append("k8s: the ScaledObject watches another Redis database than the broker's")
    return problems


# -- README ----------------------------------------------------------------------------------


def readme_env_names(text: str) -> set[str]:
    """Variable names in the first column of the table under README's "## Configuration"."""
    section = re.search(r"^## Configuration\n(.*?)(?=^## )", text + "\n## ", re.M | re.S)
    if section is None:
        return set()
    names: set[str] = set()
    for line in section[1].splitlines():
        if line.startswith("|") and not re.match(r"\|\s*-", line):
            first = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first))
    return names


def readme_env_problems(text: str) -> list[str]:
    documented = readme_env_names(text)
    problems = []
    if missing := sorted(KNOWN_ENV - documented):
        problems.append(
            f"README: the configuration table lacks {', '.join(missing)} "
            "(known from delineate/config/environment.py ENVIRONMENT and tests/support/deploy_checks.py EXTRA_ENV)"
        )
    if unknown := sorted(documented - KNOWN_ENV):
        problems.append(f"README: the configuration table lists {', '.join(unknown)}, which the settings do not know")
    return problems


# -- Flower's memory ---------------------------------------------------------------------------


def runs_flower(command: Any) -> bool:
    """Whether a command starts Flower: ``celery ... flower`` or ``python -m delineate.flower``."""
    words = _words(command)
    return "flower" in words or "delineate.flower" in words


def flower_bound_problems(label: str, command: Any) -> list[str]:
    """A Flower must run with delineate/flower.py's FLOWER_BOUNDS (``python -m delineate.flower``
    adds them itself): without them it keeps 100,000 tasks and every worker it ever saw."""
    words = _words(command)
    if not runs_flower(words) or "delineate.flower" in words:
        return []
    if missing := [flag for flag in FLOWER_BOUNDS if flag not in words]:
        return [
            f"{label} runs Flower without {' '.join(missing)} (delineate/flower.py FLOWER_BOUNDS): unbounded memory"
        ]
    return []


def flower_commands(compose_files: Mapping[str, Doc], k8s_docs: Iterable[Doc]) -> dict[str, list[str]]:
    """Every command in these files that starts Flower, by where it is (compose services,
    and Kubernetes containers' command and args together)."""
    found: dict[str, list[str]] = {}
    for file, compose in compose_files.items():
        for name, service in compose.get("services", {}).items():
            if runs_flower(service.get("command")):
                found[f"{file}: {name}"] = _words(service.get("command"))
    for doc in k8s_docs:
        spec = doc.get("spec") if isinstance(doc, dict) else None  # (a Helm values file has none)
        pod = spec.get("template", {}).get("spec", {}) if isinstance(spec, dict) else {}
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            words = _words(container.get("command")) + _words(container.get("args"))
            if runs_flower(words):
                found[f"k8s: {doc['metadata']['name']}/{container.get('name')}"] = words
    return found
