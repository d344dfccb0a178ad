"""The Grafana dashboard (`deploy/grafana/dashboards/crewq.json`) against what crewq really
exports: every query parses as PromQL, names only series some crewq process exposes (read
from prometheus_client's registry, not from a list kept here), and only their labels; every
panel reads the provisioned datasource; the areas operators need are all there."""

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY, Info
from prometheus_client.metrics import MetricWrapperBase

from shared.runtime import metrics
from shared.runtime.metrics import Role

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "crewq.json"
DATASOURCES = ROOT / "deploy" / "compose" / "grafana" / "provisioning" / "datasources"

# Labels Prometheus attaches to every series it scrapes (the target's).
TARGET_LABELS = frozenset({"job", "instance"})
# Series Prometheus writes itself for every target, with the target's labels only.
SCRAPE_SERIES = ("up",)
# The series name each sample of a metric family is exposed under, by family type, with the
# labels that suffix adds (prometheus_client's text format; `*_created` is disabled).
SUFFIXES: Mapping[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "counter": (("_total", frozenset()),),
    "gauge": (("", frozenset()),),
    "histogram": (
        ("_bucket", frozenset({"le"})),
        ("_count", frozenset()),
        ("_sum", frozenset()),
    ),
    "summary": (("", frozenset({"quantile"})), ("_count", frozenset()), ("_sum", frozenset())),
    "info": (("_info", frozenset()),),
}
# Grafana's interval variables stand where PromQL wants a duration, which `$…` is not;
# any duration parses the same. Other variables (`$crew`) sit inside label values, which
# are plain strings to PromQL, and stay as they are.
INTERVAL_VARIABLES = re.compile(r"\$(?:__rate_interval|__interval|__range)\b")
CREW_VARIABLE = "$crew"

Exposed = Mapping[str, frozenset[str]]


def _declared_labels() -> dict[str, frozenset[str]]:
    """Label names of each crewq metric family, by family name. A labelled metric shows its
    labels only in its samples, and one nothing has touched yet has none, so they are read
    from the declarations in `shared.runtime.metrics`."""
    declared: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                declared[family.name] = frozenset(value._labelnames)
    # An Info's labels are the keys `identify` gives it: ask `identify` itself, with a
    # stand-in that belongs to no registry, so the real `crewq_build_info` is left alone.
    (build,) = metrics.BUILD.describe()
    stand_in = Info(build.name, build.documentation, registry=None)
    with mock.patch.object(metrics, "BUILD", stand_in):
        metrics.identify(Role.API)
    samples = [sample for family in stand_in.collect() for sample in family.samples]
    declared[build.name] = frozenset(label for sample in samples for label in sample.labels)
    return declared


def series_of(family_name: str, family_type: str) -> set[str]:
    """The series names one metric family is exposed as."""
    suffixes = SUFFIXES.get(family_type, (("", frozenset()),))
    return {family_name + suffix for suffix, _ in suffixes}


def exposed_series() -> dict[str, frozenset[str]]:
    """Every series name a crewq process exposes on `/metrics` (the default registry, once
    `shared.runtime.metrics` is imported), plus Prometheus' own `up`, each with the label names a
    query may use on it."""
    declared = _declared_labels()
    series: dict[str, set[str]] = {name: set() for name in SCRAPE_SERIES}
    for family in REGISTRY.collect():
        labels = declared.get(family.name, frozenset())
        for suffix, extra in SUFFIXES.get(family.type, (("", frozenset()),)):
            series.setdefault(family.name + suffix, set()).update(labels | extra)
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels | TARGET_LABELS) for name, labels in series.items()}


def parse(expr: str) -> promql_parser.Expr:
    return promql_parser.parse(INTERVAL_VARIABLES.sub("5m", expr))


def selectors(node: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    """Every series selector under `node` (a range selector's included)."""
    found: list[promql_parser.VectorSelector] = []

    def visit(child: promql_parser.Expr) -> None:
        if isinstance(child, promql_parser.VectorSelector):
            found.append(child)

    promql_parser.walk(node, visit)
    return found


def _matchers(selector: promql_parser.VectorSelector) -> list[promql_parser.Matcher]:
    return [
        *selector.matchers.matchers,
        *(matcher for group in selector.matchers.or_matchers for matcher in group),
    ]


def check_expr(expr: str, exposed: Exposed) -> list[str]:
    """What is wrong with one query: series crewq does not expose, labels those series do
    not have (in matchers, `by`/`without`, `on`/`ignoring`, `group_*`); empty when fine."""
    try:
        tree = parse(expr)
    except ValueError as error:
        return [f"does not parse: {error}"]
    problems: list[str] = []

    def missing(labels: list[str], under: list[promql_parser.VectorSelector], where: str) -> None:
        for selector in under:
            have = exposed.get(selector.name or "", frozenset())
            for label in labels:
                if label not in have:
                    problems.append(f"unknown label {label!r} in {where} for {selector.name}")

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name is None:
                problems.append("a selector without a metric name")
            elif node.name not in exposed:
                problems.append(f"unknown metric {node.name}")
            else:
                names = [m.name for m in _matchers(node) if m.name != "__name__"]
                missing(names, [node], "a matcher")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            missing(node.modifier.labels, selectors(node.expr), "by/without")
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None:
                both = selectors(node.lhs) + selectors(node.rhs)
                missing(matching.labels, both, "on/ignoring")
            group = node.modifier.group_labels or []
            if group and not any(
                set(group) <= exposed.get(s.name or "", frozenset())
                for s in selectors(node.lhs) + selectors(node.rhs)
            ):
                problems.append(f"group labels {group} on neither side")

    promql_parser.walk(tree, visit)
    return problems


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def exposed() -> dict[str, frozenset[str]]:
    return exposed_series()


@pytest.fixture(scope="module")
def datasource() -> dict[str, str]:
    """The Prometheus datasource Grafana is provisioned with: what every panel must name."""
    (path,) = DATASOURCES.glob("*.yaml")
    provisioned = yaml.safe_load(path.read_text())["datasources"]
    (prometheus,) = (each for each in provisioned if each["type"] == "prometheus")
    return {"type": prometheus["type"], "uid": prometheus["uid"]}


def _panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and those folded inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def _rows(dashboard: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Panels under each row's title, in order (an expanded row's panels follow it)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], list(panel.get("panels", [])))
        else:
            current.append(panel)
    return rows


def _metric_names(panels: list[dict[str, Any]]) -> set[str]:
    return {
        selector.name or ""
        for panel in panels
        for target in panel.get("targets", [])
        for selector in selectors(parse(target["expr"]))
    }


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "crewq"
    assert dashboard["title"] == "crewq"
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["time"] == {"from": "now-1h", "to": "now"}
    assert dashboard["refresh"] == "30s"


def test_panels_are_identified_and_read_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource: dict[str, str]
) -> None:
    panels = list(_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], f"{panel['title']} queries nothing"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", datasource) == datasource, panel["title"]


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_uses_only_what_crewq_exposes(
    dashboard: dict[str, Any], exposed: dict[str, frozenset[str]]
) -> None:
    queries = list(_queries(dashboard))
    assert queries
    problems = [
        f"{title}: {expr}: {problem}"
        for title, expr in queries
        for problem in check_expr(expr, exposed)
    ]
    assert not problems, "\n".join(problems)


def test_crew_variable_comes_from_a_crew_label(
    dashboard: dict[str, Any], exposed: dict[str, frozenset[str]], datasource: dict[str, str]
) -> None:
    (variable,) = (v for v in dashboard["templating"]["list"] if v["name"] == "crew")
    assert variable["datasource"] == datasource
    assert variable["includeAll"] is True
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", text)
    assert found, text
    metric, label = found.groups()
    assert metric in exposed and label in exposed[metric]


def test_crew_labelled_series_follow_the_crew_variable(
    dashboard: dict[str, Any], exposed: dict[str, frozenset[str]]
) -> None:
    """Picking crews narrows every panel that can be narrowed. `$crew` may stand for several
    crews (`a|b`) or all (`.*`): a regex match."""
    for title, expr in _queries(dashboard):
        for selector in selectors(parse(expr)):
            if "crew" in exposed.get(selector.name or "", frozenset()):
                crew = [m for m in _matchers(selector) if m.name == "crew"]
                assert [(m.op, m.value) for m in crew] == [
                    (promql_parser.MatchOp.Re, CREW_VARIABLE)
                ], f"{title}: {expr}"


def test_units_fit_what_is_shown(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        exprs = [target["expr"] for target in panel["targets"]]
        unit = panel["fieldConfig"]["defaults"].get("unit")
        if all(expr.startswith("histogram_quantile(") for expr in exprs):
            assert unit == "s", panel["title"]
        if re.search(r"\bratio\b", panel["title"], re.IGNORECASE):
            assert unit == "percentunit", panel["title"]


def test_required_areas_are_covered(dashboard: dict[str, Any]) -> None:
    rows = _rows(dashboard)
    wanted = {
        "Queue depth": {"crewq_queue_depth", "crewq_job_queue_wait_seconds_bucket"},
        "Job outcomes": {
            "crewq_jobs_finished_total",
            "crewq_job_retries_total",
            "crewq_job_timeouts_total",
        },
        "Latency": {
            "crewq_job_duration_seconds_bucket",
            "crewq_job_queue_wait_seconds_bucket",
            "crewq_http_request_duration_seconds_bucket",
        },
        "Webhooks": {"crewq_webhook_attempts_total", "crewq_webhook_delivery_seconds_bucket"},
    }
    for row, names in wanted.items():
        assert row in rows, f"no {row!r} row"
        assert names <= _metric_names(rows[row]), f"{row}: {names - _metric_names(rows[row])}"
    latency = [e for p in rows["Latency"] for e in (t["expr"] for t in p["targets"])]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(e.startswith(f"histogram_quantile({quantile},") for e in latency), quantile
    outcomes = " ".join(t["expr"] for p in rows["Job outcomes"] for t in p["targets"])
    assert 'outcome="completed"' in outcomes, "no success ratio"
    webhooks = " ".join(t["expr"] for p in rows["Webhooks"] for t in p["targets"])
    assert 'outcome!="succeeded"' in webhooks, "no webhook failure ratio"
    everywhere = _metric_names(list(_panels(dashboard)))
    assert {"up", "crewq_jobs_running", "crewq_llm_calls_total"} <= everywhere
    assert "crewq_llm_tokens_total" in everywhere


def test_every_crewq_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    """A metric added to `shared.runtime.metrics` shows up here until it gets a panel."""
    shown = _metric_names(list(_panels(dashboard)))
    families = [
        family
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]
    assert families
    unshown = [f.name for f in families if not series_of(f.name, f.type) & shown]
    assert not unshown, f"no panel shows {unshown}"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(crewq_jobs_vanished_total[5m])", "unknown metric crewq_jobs_vanished_total"),
        ("crewq_jobs_submitted", "unknown metric crewq_jobs_submitted"),
        ('crewq_queue_depth{crew="research"}', "unknown label 'crew'"),
        (
            'sum by (tenant) (rate(crewq_jobs_submitted_total{crew=~"$crew"}[$__rate_interval]))',
            "unknown label 'tenant'",
        ),
        ('crewq_job_duration_seconds_count{le="1"}', "unknown label 'le'"),
        (
            "sum(rate(crewq_jobs_finished_total[5m])) / on (reason)"
            " sum(rate(crewq_job_retries_total[5m]))",
            "unknown label 'reason'",
        ),
        ('{__name__=~"crewq_.*"}', "a selector without a metric name"),
        ("sum(rate(crewq_jobs_submitted_total[5m]", "does not parse"),
    ],
)
def test_checker_catches_what_crewq_does_not_expose(
    expr: str, problem: str, exposed: dict[str, frozenset[str]]
) -> None:
    problems = check_expr(expr, exposed)
    assert any(problem in found for found in problems), problems


def test_checker_accepts_what_crewq_exposes(exposed: dict[str, frozenset[str]]) -> None:
    for expr in (
        'crewq_build_info{role="worker", version!=""}',
        "histogram_quantile(0.9, sum by (le, route) (rate("
        "crewq_http_request_duration_seconds_bucket[$__rate_interval])))",
        'max by (instance) (crewq_queue_depth{job="crewq-worker"})',
        'count by (job) (up{job=~"crewq-.*"} == 0)',
    ):
        assert check_expr(expr, exposed) == [], expr
