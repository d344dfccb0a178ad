"""Rows for integration tests, made through crewq's own functions wherever one exists."""

import uuid
from typing import Any

import asyncpg

from schemas.account import KeyMode, Plan, Scope
from schemas.events import EventType, LlmCompleted
from schemas.jobs import Job, Spent, Usage
from shared.domain.owners import Owner
from shared.domain.plans import allowance
from shared.runtime.secret_box import SecretBox, generate_key
from shared.store import endpoints, job_attempts, job_submission, job_sweeps, jobs, tenants
from shared.store.keys import Principal

# Seals the secrets of every tenant and endpoint the integration tier makes.
BOX_KEY = generate_key()
BOX = SecretBox([BOX_KEY])


async def tenant(db: asyncpg.Pool, plan: Plan = Plan.PRO, **limits: int) -> str:
    async with db.acquire() as conn:
        name = f"t-{uuid.uuid4().hex[:8]}"
        tenant_id = await tenants.ensure(conn, name, plan, BOX)
        if limits:
            await tenants.update(conn, name, tenants.Changes(numbers=tuple(limits.items())))
    return tenant_id


def principal(
    tenant_id: str,
    mode: KeyMode = KeyMode.LIVE,
    plan: Plan = Plan.PRO,
    monthly_job_limit: int | None = None,
) -> Principal:
    """Who a submission acts as, as `keys.authenticate` would answer for a key."""
    return Principal(
        key_id="key_test",
        tenant_id=tenant_id,
        tenant_name="t",
        scopes=frozenset(Scope),
        mode=mode,
        plan=plan,
        allowance=allowance(plan, rate_limit=None, monthly_job_limit=monthly_job_limit),
        allowed_ips=None,
        expires_at=None,
    )


async def submit(
    db: asyncpg.Pool,
    tenant_id: str,
    *,
    webhook_url: str | None = None,
    max_retries: int = 2,
    idempotency_key: str | None = None,
    request_hash: bytes | None = None,
    **fields: Any,
) -> Job:
    inserted = await job_submission.insert(
        db,
        job_submission.NewJob(
            tenant_id=tenant_id,
            crew=fields.pop("crew", "echo"),
            inputs=fields.pop("inputs", {"message": "hello"}),
            metadata=fields.pop("metadata", {"order": "42"}),
            webhook_url=webhook_url,
            timeout_s=fields.pop("timeout_s", 60),
            max_retries=max_retries,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            livemode=fields.pop("livemode", True),
            monthly_limit=fields.pop("monthly_limit", None),
            budget=fields.pop("budget", None),
            run_after=fields.pop("run_after", None),
            expires_at=fields.pop("expires_at", None),
            priority=fields.pop("priority", 0),
            concurrency_key=fields.pop("concurrency_key", None),
            concurrency_limit=fields.pop("concurrency_limit", None),
        ),
        default_max_pending=fields.pop("max_pending", 10_000),
        default_cap=fields.pop("cap", 10),
    )
    assert isinstance(inserted, job_submission.Inserted), inserted
    return inserted.job


async def start(
    db: asyncpg.Pool, job_id: str, worker: str = "w1", cap: int = 10
) -> job_attempts.Claim:
    claim = await job_attempts.start_attempt(db, job_id, worker, cap)
    assert isinstance(claim, job_attempts.Claim), claim
    return claim


async def spend(db: asyncpg.Pool, claim: job_attempts.Claim, spent: Spent) -> Usage:
    """Record one model call of the claimed attempt (task "one") that spent `spent`, as a
    crew process reports it: the step and the job's usage after it (returned)."""
    call = LlmCompleted(
        job_id=claim.job_id,
        attempt=claim.attempt,
        task="one",
        agent=None,
        model="m",
        prompt_tokens=spent.prompt_tokens,
        completion_tokens=spent.completion_tokens,
        duration_ms=1,
    )
    used = Usage(**spent.model_dump(), tasks={"one": spent})
    assert await job_attempts.record_step(db, claim, EventType.LLM_COMPLETED, call, usage=used)
    return used


async def endpoint(
    db: asyncpg.Pool,
    tenant_id: str,
    url: str,
    events: list[str] | None = None,
    *,
    livemode: bool = True,
) -> str:
    created = await endpoints.create(
        db,
        Owner(tenant_id, livemode),
        url=url,
        events=events or ["*"],
        description="",
        default_limit=20,
        box=BOX,
    )
    assert isinstance(created, endpoints.Created)
    return created.endpoint.id


async def event_types(db: asyncpg.Pool, job_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT type FROM events WHERE job_id = $1 ORDER BY created_at, id", job_id
    )
    return [r["type"] for r in rows]


async def status_of(db: asyncpg.Pool, job_id: str) -> str:
    return str(await db.fetchval("SELECT status FROM jobs WHERE id = $1", job_id))


async def reap(
    db: asyncpg.Pool, heartbeat_timeout: float, timeout_grace: float
) -> jobs.AfterCommit:
    """One reaper pass: what its moves, together, leave to do once committed."""
    after = jobs.AfterCommit()
    async for reaped in job_sweeps.reap(db, heartbeat_timeout, timeout_grace):
        after += reaped
    return after
