"""`crewq doctor`: the `/health/debug` report, run from here against the configured
Postgres and Redis, printed for a person (or as JSON); exits 1 when the verdict is `fail`."""

import asyncio
from typing import Any

import orjson

from schemas.health import ComponentStatus, DebugReport, Verdict
from shared.domain import diagnostics
from shared.domain.crews import CrewRegistry
from shared.runtime import queue
from shared.runtime.db import create_pool
from shared.runtime.settings import Settings

_MARKS = {ComponentStatus.OK: "ok  ", ComponentStatus.FAIL: "FAIL", ComponentStatus.SKIPPED: "skip"}


async def examine(settings: Settings) -> DebugReport:
    # No connection is made up front: a store that is down is reported, not waited for.
    db = await create_pool(settings.require_database_url, role="doctor", min_size=0, max_size=2)
    redis = queue.client(settings.require_redis_url)
    try:
        async with diagnostics.http_session() as http:
            registry = CrewRegistry.load(settings.crew_dirs)
            return await diagnostics.run(diagnostics.Probe(db, redis, settings, registry, http))
    finally:
        await redis.aclose()
        await db.close()


def _detail_lines(details: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in details.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{key}:")
            lines += [f"  - {orjson.dumps(item).decode()}" for item in value]
        else:
            shown = value if isinstance(value, str | int | float | bool) else orjson.dumps(value)
            lines.append(f"{key}: {shown.decode() if isinstance(shown, bytes) else shown}")
    return lines


def render(report: DebugReport) -> str:
    """The report as a person reads it: one line per component, then what it found."""
    env = report.environment
    out = [
        f"crewq {env['version']} ({env['environment']}) on {env['host']}:"
        f" {report.status.value.upper()} in {report.duration_ms} ms",
    ]
    for name, component in report.components.items():
        line = f"  [{_MARKS[component.status]}] {name:<16} {component.latency_ms:>5} ms"
        if component.checks:
            line += f"  {', '.join(component.checks)}"
        out.append(line)
        if component.error:
            out.append(f"         error: {component.error}")
        for detail in _detail_lines(component.details or {}):
            out.append(f"         {detail}")
    return "\n".join(out)


def run_doctor(settings: Settings, as_json: bool) -> int:
    report = asyncio.run(examine(settings))
    if as_json:
        print(orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(report))
    return 1 if report.status is Verdict.FAIL else 0
