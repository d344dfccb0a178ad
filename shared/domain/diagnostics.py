"""Every component of a crewq deployment, checked at once: what `GET /health/debug` answers
and `crewq doctor` prints.

Each check runs in parallel with the others, is cut off after `CHECK_TIMEOUT_S`, and only
reads: the probe is safe to run at any time, against a deployment in any state. A check
says what it verified (`checks`), and either passes (`ok`), is not configured here
(`skipped`), or fails with the reason an operator acts on. The database and Redis are
critical (crewq cannot serve without them: verdict `fail`, HTTP 503); any other failure
leaves the deployment up but impaired (`degraded`).
"""

import asyncio
import os
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from schemas.health import (
    Component,
    ComponentStatus,
    DebugReport,
    LlmConnection,
    ProcessInfo,
    ProcessRole,
    ProcessState,
    Verdict,
)
from shared.domain.crews import CrewRegistry
from shared.runtime import fingerprints, llm_providers, queue, tracing
from shared.runtime.db import pending_migrations, ping
from shared.runtime.settings import Settings
from shared.runtime.version import USER_AGENT, VERSION
from shared.store import deliveries, job_sweeps, processes

CHECK_TIMEOUT_S = 3.0
# Processes that stopped or fell silent this recently are listed beside the live ones, so
# a worker that died (or was stopped) is seen, not merely missing from the list.
GONE_SHOWN_S = 3600.0
CRITICAL = frozenset({"database", "redis"})


class Failed(Exception):
    """The component is broken; the message says how."""


@dataclass
class Findings:
    """What a check verified, and what it found worth showing."""

    checks: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def passed(self, check: str) -> None:
        self.checks.append(check)


class Probe:
    """What the checks read: this process's connections and configuration, and the live
    workers and dispatchers (read once per report, by the first check that asks)."""

    def __init__(
        self,
        db: asyncpg.Pool,
        redis: queue.Redis,
        settings: Settings,
        registry: CrewRegistry,
        http: aiohttp.ClientSession,
        # Where each provider's public API answers; tests point it at a local server.
        public_url: Callable[[str], str | None] = llm_providers.public_url,
    ) -> None:
        self.db = db
        self.redis = redis
        self.settings = settings
        self.registry = registry
        self.http = http
        self.public_url = public_url
        self._alive: asyncio.Task[list[ProcessInfo]] | None = None
        self._gone: asyncio.Task[list[processes.Gone]] | None = None

    async def alive(self) -> list[ProcessInfo]:
        if self._alive is None:
            self._alive = asyncio.ensure_future(
                processes.alive(self.db, self.settings.process_dead_after)
            )
        # Shielded: one check's cap running out must not cancel the read the others await.
        return await asyncio.shield(self._alive)

    async def gone(self, role: ProcessRole) -> list[dict[str, Any]]:
        """The summaries of the `role`'s processes gone within `GONE_SHOWN_S`."""
        if self._gone is None:
            self._gone = asyncio.ensure_future(
                processes.gone(self.db, self.settings.process_dead_after, GONE_SHOWN_S)
            )
        found = await asyncio.shield(self._gone)
        return [_summary(g.info, g.state) for g in found if g.info.role is role]


Check = Callable[[Probe, Findings], Awaitable[ComponentStatus]]


def _age(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


async def database(probe: Probe, found: Findings) -> ComponentStatus:
    await ping(probe.db)
    found.passed("select_1")
    missing = await pending_migrations(probe.db)
    if missing:
        raise Failed(f"migrations not applied: {', '.join(missing)}; run `crewq migrate`")
    found.passed("migrations_current")
    pool = probe.db
    found.details = {
        "pool_size": pool.get_size(),
        "pool_in_use": pool.get_size() - pool.get_idle_size(),
        "pool_free": pool.get_idle_size(),
        "pool_max": pool.get_max_size(),
    }
    found.passed("pool")
    return ComponentStatus.OK


async def redis(probe: Probe, found: Findings) -> ComponentStatus:
    await probe.redis.ping()
    found.passed("ping")
    info = await probe.redis.info("server")
    found.details = {"version": info.get("redis_version")}
    found.passed("info")
    return ComponentStatus.OK


async def queue_state(probe: Probe, found: Findings) -> ComponentStatus:
    depth = await queue.depth(probe.redis)
    found.passed("queue_depth")
    summary = await job_sweeps.pending_summary(probe.db)
    found.passed("pending_jobs")
    found.details = {
        "depth": depth,
        "pending_jobs": summary.pending,
        "due_jobs": summary.due,
        "parked_jobs": summary.parked,
        "oldest_due_job_age_s": _age(summary.oldest_due_s),
    }
    return ComponentStatus.OK


def _summary(info: ProcessInfo, state: ProcessState = ProcessState.ALIVE) -> dict[str, Any]:
    return info.model_dump(mode="json", exclude={"report"}) | {
        "metrics_port": info.report.metrics_port,
        "state": state.value,
        "fingerprints": info.report.fingerprints,
    }


async def workers(probe: Probe, found: Findings) -> ComponentStatus:
    alive = [p for p in await probe.alive() if p.role is ProcessRole.WORKER]
    found.passed("registered_workers")
    found.details = {
        "alive": len(alive),
        "running_jobs": sum(p.running for p in alive),
        "capacity": sum(p.concurrency for p in alive),
        "workers": [_summary(p) | {"default_model": p.report.default_model} for p in alive],
        "gone": await probe.gone(ProcessRole.WORKER),
    }
    if not alive:
        raise Failed(
            f"no worker alive: none has heartbeated within {probe.settings.process_dead_after:g}"
            " s; jobs are accepted but none will run"
        )
    found.passed("workers_alive")
    return ComponentStatus.OK


async def dispatcher(probe: Probe, found: Findings) -> ComponentStatus:
    alive = [p for p in await probe.alive() if p.role is ProcessRole.DISPATCHER]
    found.passed("registered_dispatchers")
    backlog = await deliveries.backlog(probe.db)
    found.passed("deliveries_backlog")
    found.details = {
        "alive": len(alive),
        "dispatchers": [_summary(p) for p in alive],
        "gone": await probe.gone(ProcessRole.DISPATCHER),
        "pending_deliveries": backlog.pending,
        "due_deliveries": backlog.due,
        "oldest_due_delivery_age_s": _age(backlog.oldest_due_s),
    }
    if not alive:
        raise Failed(
            "no dispatcher alive: none has heartbeated within"
            f" {probe.settings.process_dead_after:g} s; webhooks are owed but none is sent"
        )
    found.passed("dispatchers_alive")
    return ComponentStatus.OK


async def crews(probe: Probe, found: Findings) -> ComponentStatus:
    registry = probe.registry
    problems = [f"{name}: {error}" for name, error in sorted(registry.errors.items())]
    found.passed("registry_loads")
    alive = [p for p in await probe.alive() if p.role is ProcessRole.WORKER]
    for worker in alive:
        problems += [
            f"{name} on worker {worker.id}: {error}"
            for name, error in sorted(worker.report.crew_errors.items())
        ]
        problems += [
            f"{name} is not registered on worker {worker.id}"
            for name in sorted(set(registry.crews) - set(worker.report.crews))
        ]
    found.passed("workers_build_every_crew")
    found.details = {"crews": sorted(registry.crews), "checked_on_workers": len(alive)}
    if not registry.crews:
        raise Failed(f"no crew registered (crews path: {probe.settings.crews_path})")
    if problems:
        raise Failed("; ".join(problems))
    return ComponentStatus.OK


def _llm_connections(probe: Probe, alive: list[ProcessInfo]) -> list[LlmConnection]:
    """The connections live workers reported; this process's own when none is alive."""
    reports = [p.report.llm_connections for p in alive if p.role is ProcessRole.WORKER]
    if not reports:
        return llm_providers.connections([probe.settings.default_model()])
    merged: dict[tuple[str, str | None], LlmConnection] = {}
    for report in reports:
        for conn in report:
            key = (conn.provider, conn.base_url)
            seen = merged.get(key)
            if seen is None or (conn.missing_credentials and not seen.missing_credentials):
                merged[key] = conn
    return list(merged.values())


async def _reach(probe: Probe, url: str) -> int:
    """The HTTP status the provider answers with (a 401 still proves it reachable)."""
    async with probe.http.get(url, allow_redirects=False) as response:
        return response.status


async def llm_connections(probe: Probe, found: Findings) -> ComponentStatus:
    connections = _llm_connections(probe, await probe.alive())
    if not connections:
        found.details = {"note": "no provider configured: crews run on the offline model"}
        return ComponentStatus.SKIPPED
    missing = {c.provider: c.missing_credentials for c in connections if c.missing_credentials}
    found.passed("credentials")
    public = {
        c.provider: url
        for c in connections
        if c.base_url is None and (url := probe.public_url(c.provider)) is not None
    }
    names = list(public)
    answers = await asyncio.gather(
        *(_reach(probe, public[n]) for n in names), return_exceptions=True
    )
    reached: dict[str, Any] = {}
    unreachable = []
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, BaseException):
            unreachable.append(f"{name} ({type(answer).__name__}: {answer})")
            reached[name] = {"reachable": False, "error": f"{type(answer).__name__}: {answer}"}
        else:
            reached[name] = {"reachable": True, "http_status": answer}
    found.passed("reachable")
    found.details = {
        "connections": [c.model_dump() for c in connections],
        "credentials_only": sorted(c.provider for c in connections if c.provider not in public),
        "reachability": reached,
    }
    if missing:
        found.details["missing_credentials"] = missing
    problems = [f"{p} lacks {', '.join(m)}" for p, m in missing.items()]
    if unreachable:
        problems.append(f"provider(s) unreachable: {', '.join(unreachable)}")
    if problems:
        raise Failed("; ".join(problems))
    return ComponentStatus.OK


async def config(probe: Probe, found: Findings) -> ComponentStatus:
    """Each secret setting must be the same wherever it is set: a replica started with
    another `CREWQ_SECRET_KEY` (or provider key) stands out by its fingerprint."""
    alive = await probe.alive()
    found.passed("fingerprints_reported")
    own = fingerprints.of_config(probe.settings, providers=False)
    me = f"{socket.gethostname()}-{os.getpid()}"
    reports = [(f"api {me}", socket.gethostname(), own)] + [
        (f"{p.role.value} {p.id}", p.host, p.report.fingerprints) for p in alive
    ]
    found.details = {
        "processes": [{"process": who, "host": host, "fingerprints": f} for who, host, f in reports]
    }
    by_name: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for who, _, prints in reports:
        for name, value in prints.items():
            by_name[name][value].append(who)
    mismatches = [
        f"{name} differs between processes: "
        + "; ".join(f"{value} on {', '.join(who)}" for value, who in sorted(values.items()))
        for name, values in sorted(by_name.items())
        if len(values) > 1
    ]
    found.passed("fingerprints_match")
    if mismatches:
        raise Failed(" | ".join(mismatches))
    return ComponentStatus.OK


CHECKS: dict[str, Check] = {
    "database": database,
    "redis": redis,
    "queue": queue_state,
    "workers": workers,
    "dispatcher": dispatcher,
    "crews": crews,
    "llm_connections": llm_connections,
    "config": config,
}


async def _component(check: Check, probe: Probe) -> Component:
    found = Findings()
    started = time.perf_counter()
    error = None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            status = await check(probe, found)
    except Failed as exc:
        status, error = ComponentStatus.FAIL, str(exc)
    except TimeoutError:
        status, error = ComponentStatus.FAIL, f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:
        status, error = ComponentStatus.FAIL, f"{type(exc).__name__}: {exc}"
    return Component(
        status=status,
        latency_ms=round((time.perf_counter() - started) * 1000),
        checks=found.checks,
        error=error,
        details=found.details or None,
    )


def environment(settings: Settings) -> dict[str, Any]:
    """The settings that matter when reading a report."""
    return {
        "version": VERSION,
        "environment": settings.environment.value,
        "host": socket.gethostname(),
        "offline": settings.offline(),
        "default_model": settings.default_model(),
        "default_plan": settings.default_plan.value,
        "log_format": settings.logs_as.value,
        "tracing_exported": tracing.exporting(),
        "webhook_allow_http": settings.webhook_allow_http,
        "webhook_allow_private": settings.webhook_allow_private,
        "retention_days": settings.retention_days,
        "process_dead_after_s": settings.process_dead_after,
    }


def verdict(components: dict[str, Component]) -> Verdict:
    failed = {name for name, c in components.items() if c.status is ComponentStatus.FAIL}
    if failed & CRITICAL:
        return Verdict.FAIL
    return Verdict.DEGRADED if failed else Verdict.OK


async def run(probe: Probe) -> DebugReport:
    """Every check, in parallel."""
    started = time.perf_counter()
    names = list(CHECKS)
    results = await asyncio.gather(*(_component(CHECKS[n], probe) for n in names))
    components = dict(zip(names, results, strict=True))
    return DebugReport(
        status=verdict(components),
        duration_ms=round((time.perf_counter() - started) * 1000),
        environment=environment(probe.settings),
        components=components,
    )


def http_session() -> aiohttp.ClientSession:
    """The session reachability probes use: short timeouts, crewq's user agent."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S - 0.5),
        headers={"User-Agent": USER_AGENT},
    )
