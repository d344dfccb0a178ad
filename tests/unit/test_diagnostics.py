"""The pure parts of /health/debug: which LLM providers a deployment needs, fingerprints,
the verdict, and `crewq doctor`'s rendering."""

from crewq.doctor import render
from schemas.health import Component, ComponentStatus, DebugReport, Verdict
from shared.domain.diagnostics import verdict
from shared.runtime.fingerprints import UNSET, fingerprint
from shared.runtime.llm_providers import connections, provider_of


def test_models_map_to_crewais_providers() -> None:
    def name(model: str) -> str | None:
        provider = provider_of(model)
        return provider.name if provider else None

    assert name("gpt-4o-mini") == "openai"
    assert name("openai/gpt-4o-mini") == "openai"
    assert name("anthropic/claude-sonnet-4") == "anthropic"
    assert name("gemini/gemini-2.0-flash") == "gemini"
    assert name("crewq/offline") is None
    assert name("someone/else") is None


def test_connections_name_what_each_needs_and_where_it_is() -> None:
    found = connections(
        ["openai/gpt-4o-mini", "gpt-4o", "anthropic/claude-sonnet-4"],
        {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    by_name = {c.provider: c for c in found}
    assert set(by_name) == {"openai", "anthropic"}
    assert by_name["openai"].base_url == "http://127.0.0.1:9/v1"
    assert by_name["openai"].missing_credentials == []
    assert by_name["openai"].models == ["openai/gpt-4o-mini", "gpt-4o"]
    assert by_name["anthropic"].base_url is None
    assert by_name["anthropic"].missing_credentials == ["ANTHROPIC_API_KEY"]


def test_a_provider_with_credentials_is_listed_though_no_crew_uses_it() -> None:
    [gemini] = connections([], {"GOOGLE_API_KEY": "g"})
    assert gemini.provider == "gemini" and gemini.missing_credentials == [] and gemini.models == []
    assert connections(["crewq/offline"], {}) == []


def test_fingerprints_are_short_stable_and_do_not_show_the_value() -> None:
    assert fingerprint("secret-value") == fingerprint("secret-value")
    assert fingerprint("secret-value") != fingerprint("secret-valuf")
    assert len(fingerprint("secret-value")) == 12 and "secret" not in fingerprint("secret-value")
    assert fingerprint(None) == fingerprint("") == UNSET


def _component(status: ComponentStatus, error: str | None = None) -> Component:
    return Component(status=status, latency_ms=1, checks=["x"], error=error)


def test_only_the_database_or_redis_failing_fails_the_verdict() -> None:
    ok, fail, skip = ComponentStatus.OK, ComponentStatus.FAIL, ComponentStatus.SKIPPED
    assert verdict({"database": _component(ok), "llm": _component(skip)}) is Verdict.OK
    assert verdict({"database": _component(ok), "workers": _component(fail)}) is Verdict.DEGRADED
    assert verdict({"redis": _component(fail), "workers": _component(fail)}) is Verdict.FAIL
    assert verdict({"database": _component(fail)}) is Verdict.FAIL


def test_doctor_renders_one_line_per_component_with_errors_and_details() -> None:
    report = DebugReport(
        status=Verdict.DEGRADED,
        duration_ms=12,
        environment={"version": "1.2.3", "environment": "production", "host": "h1"},
        components={
            "database": Component(
                status=ComponentStatus.OK,
                latency_ms=3,
                checks=["select_1"],
                details={"pool_free": 4},
            ),
            "workers": _component(ComponentStatus.FAIL, "no worker alive"),
        },
    )
    text = render(report)
    lines = text.splitlines()
    assert lines[0] == "crewq 1.2.3 (production) on h1: DEGRADED in 12 ms"
    assert lines[1].startswith("  [ok  ] database") and "select_1" in lines[1]
    assert "pool_free: 4" in lines[2]
    assert lines[3].startswith("  [FAIL] workers")
    assert lines[4].strip() == "error: no worker alive"
