"""The compose `observability` profile's configuration files, checked for structure (no
`promtool` or `otelcol` here to validate them): Prometheus scrapes every crewq role where it
serves /metrics, every replica of the scaled ones; the collector's traces pipeline is made of
components it defines and ends at Jaeger; Grafana is provisioned with the datasource and
dashboards the dashboard file expects."""

from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose"
PROVISIONING = COMPOSE / "grafana" / "provisioning"
DASHBOARDS = COMPOSE.parent / "grafana" / "dashboards"

# Workers and dispatchers serve /metrics on CREWQ_METRICS_PORT, which the image sets to 9100
# (the setting itself defaults to off): one port for both, each in its own container.
ROLE_METRICS_PORT = 9100
METRICS_PATH = "/metrics"
# Where compose mounts ./deploy/grafana/dashboards in the Grafana container.
GRAFANA_DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
# The OTLP/gRPC exporter's type: `otlp_grpc` since collector 0.144.0, `otlp` before.
OTLP_GRPC_EXPORTERS = ("otlp_grpc", "otlp")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def prometheus() -> Any:
    return _load(COMPOSE / "prometheus.yml")


@pytest.fixture(scope="module")
def collector() -> Any:
    return _load(COMPOSE / "otel-collector.yaml")


def _jobs(prometheus: Any) -> dict[str, Any]:
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert len(jobs) == len(prometheus["scrape_configs"]), "job names repeat"
    return jobs


def test_prometheus_scrapes_the_api(prometheus: Any) -> None:
    assert prometheus["global"]["scrape_interval"] == "15s"
    api = _jobs(prometheus)["crewq-api"]
    assert api.get("metrics_path", METRICS_PATH) == METRICS_PATH
    targets = [target for static in api["static_configs"] for target in static["targets"]]
    # The API's metrics are on the metrics port, as every role's: not on its public port.
    assert targets == [f"api:{ROLE_METRICS_PORT}"]


@pytest.mark.parametrize("role", ["worker", "dispatcher"])
def test_prometheus_scrapes_every_replica_of_a_scaled_role(prometheus: Any, role: str) -> None:
    """Docker's DNS answers a scaled service's name with one A record per replica: looked
    up (not a static target, which would reach one replica at a time), each is scraped."""
    job = _jobs(prometheus)[f"crewq-{role}"]
    assert job.get("metrics_path", METRICS_PATH) == METRICS_PATH
    assert "static_configs" not in job
    (lookup,) = job["dns_sd_configs"]
    assert lookup["names"] == [role]
    assert lookup["type"] == "A"
    assert lookup["port"] == ROLE_METRICS_PORT
    # `instance` (address:port) is what tells replicas apart: nothing may rewrite it.
    for relabel in job.get("relabel_configs", []):
        assert relabel.get("target_label") != "instance", relabel


def test_collector_receives_otlp_on_both_protocols(collector: Any) -> None:
    protocols = collector["receivers"]["otlp"]["protocols"]
    # crewq's exporter speaks OTLP/HTTP (http://otel-collector:4318).
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"


def test_collector_traces_pipeline_is_whole_and_ends_at_jaeger(collector: Any) -> None:
    traces = collector["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert traces[kind], f"no {kind}"
        undefined = set(traces[kind]) - set(collector[kind])
        assert not undefined, f"{kind} used but not defined: {undefined}"
    assert traces["receivers"] == ["otlp"]
    # memory_limiter refuses data before the rest of the pipeline holds it.
    assert traces["processors"][0].split("/")[0] == "memory_limiter"
    assert "batch" in {name.split("/")[0] for name in traces["processors"]}

    (jaeger,) = (n for n in traces["exporters"] if n.split("/")[0] in OTLP_GRPC_EXPORTERS)
    exporter = collector["exporters"][jaeger]
    assert exporter["endpoint"] == "jaeger:4317"
    assert exporter["tls"]["insecure"] is True
    # Defined for whoever wants spans in the log, off until added to the pipeline.
    assert "debug" in collector["exporters"]
    assert "debug" not in traces["exporters"]


def test_grafana_datasource_is_the_compose_prometheus(prometheus: Any) -> None:
    provisioned = _load(PROVISIONING / "datasources" / "prometheus.yaml")
    assert provisioned["apiVersion"] == 1
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "crewq-prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    # Grafana derives $__rate_interval from it: it must be the real scrape interval.
    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def test_grafana_dashboards_come_from_the_mounted_folder() -> None:
    provisioned = _load(PROVISIONING / "dashboards" / "crewq.yaml")
    assert provisioned["apiVersion"] == 1
    (provider,) = provisioned["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == GRAFANA_DASHBOARDS_MOUNT
    assert sorted(path.name for path in DASHBOARDS.glob("*.json")) == ["crewq.json"]
