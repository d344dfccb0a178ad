"""Budgets and model spending against real Postgres: a job's budget stored and replaced
limit by limit on retry, its usage written with its steps, and a tenant's month of model
spending against its caps (shared/store/usage.py)."""

from datetime import UTC, datetime, timedelta

import asyncpg

from schemas.jobs import AttemptOutcome, Budget, ErrorCode, JobError, Spent
from shared.domain.owners import Owner
from shared.store import job_attempts, job_submission, job_sweeps, jobs, usage
from tests.integration.factories import spend, start, submit, tenant

OVER = JobError(code=ErrorCode.BUDGET_EXCEEDED, message="the job's budget of 2 calls is spent")


def _spent(tokens: int, cost: float, calls: int) -> Spent:
    return Spent(prompt_tokens=tokens, total_tokens=tokens, cost_usd=cost, llm_calls=calls)


async def test_a_budget_is_kept_and_a_retry_replaces_only_the_limits_it_gives(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id, budget=Budget(max_llm_calls=2, max_tokens=900))
    assert job.budget == Budget(max_llm_calls=2, max_tokens=900)
    claim = await start(db, job.id)
    assert claim.budget == Budget(max_llm_calls=2, max_tokens=900) and claim.usage is None
    used = await spend(db, claim, _spent(300, 0.01, 2))
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=OVER)
    owner = Owner(tenant_id)
    restarted = await jobs.restart(db, owner, job.id, budget=Budget(max_llm_calls=10))
    assert isinstance(restarted, jobs.Restarted)
    assert restarted.job.budget == Budget(max_llm_calls=10, max_tokens=900)
    again = await start(db, job.id)
    # What the first attempt spent carries over: the budget counts the whole job.
    assert again.usage == used
    # A retry that gives no budget keeps the job's.
    await job_attempts.end_attempt(db, again, AttemptOutcome.FAILED, error=OVER)
    kept = await jobs.restart(db, owner, job.id)
    assert isinstance(kept, jobs.Restarted)
    assert kept.job.budget == Budget(max_llm_calls=10, max_tokens=900)


async def test_a_month_of_model_spending_is_summed_over_the_tenant_s_live_jobs(
    db: asyncpg.Pool,
) -> None:
    tenant_id, other = await tenant(db), await tenant(db)
    for owner_id, tokens, livemode in (
        (tenant_id, 100, True),
        (tenant_id, 50, True),
        (tenant_id, 999, False),
        (other, 7, True),
    ):
        job = await submit(db, owner_id, livemode=livemode)
        await spend(db, await start(db, job.id), _spent(tokens, tokens / 1000, 1))
    spent = await usage.model_spend_this_month(db, tenant_id)
    assert (spent.tokens, round(spent.cost_usd, 6)) == (150, 0.15)


async def test_a_tenant_s_caps_leave_a_job_what_its_other_jobs_did_not_spend(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    first, second = await submit(db, tenant_id), await submit(db, tenant_id)
    assert await usage.caps_left(db, tenant_id, first.id, True) is None  # no cap
    await db.execute(
        "UPDATE tenants SET max_tokens_per_month = 1000, max_cost_usd_per_month = 2 WHERE id = $1",
        tenant_id,
    )
    await spend(db, await start(db, first.id), _spent(400, 0.5, 1))
    await spend(db, await start(db, second.id), _spent(100, 0.25, 1))
    # In the second job's terms (its whole spending): 1000 - 400 of the first.
    left = await usage.caps_left(db, tenant_id, second.id, True)
    assert left is not None and left.max_tokens == 600
    assert left.max_cost_usd is not None and abs(left.max_cost_usd - 1.5) < 1e-9
    # A test key's job spends nothing real: no cap.
    assert await usage.caps_left(db, tenant_id, second.id, False) is None


async def test_a_scheduled_job_is_promoted_when_due_and_an_unstarted_one_lapses(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    later = await submit(db, tenant_id, run_after=datetime.now(UTC) + timedelta(hours=1))
    due = await submit(db, tenant_id, run_after=datetime.now(UTC) + timedelta(seconds=30))
    lapsing = await submit(db, tenant_id, expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert (later.status, due.status, lapsing.status) == ("scheduled", "scheduled", "pending")
    # A scheduled job is not started, whoever is offered it.
    refused = await job_attempts.start_attempt(db, due.id, "w1", 10)
    assert isinstance(refused, job_attempts.NotStarted) and refused.reason == "job is scheduled"
    await db.execute(
        "UPDATE jobs SET run_after = now() - interval '1 second' WHERE id = $1", due.id
    )
    promoted = await job_sweeps.promote_due(db)
    assert promoted.job_ids == [due.id]
    assert (await job_sweeps.promote_due(db)).job_ids == []  # once
    await db.execute(
        "UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = ANY($1)",
        [lapsing.id, later.id],
    )
    lapsed = await job_sweeps.lapse_unstarted(db)
    assert sorted(f.status for f in lapsed.counts) == ["expired", "expired"]  # type: ignore[union-attr]
    owner = Owner(tenant_id)
    for job_id in (lapsing.id, later.id):
        got = await jobs.get(db, owner, job_id)
        assert got is not None and got.status == "expired" and got.finished_at is not None
    # Expired is final: not retried, not started.
    assert await jobs.restart(db, owner, lapsing.id) is None


async def test_a_freed_slot_goes_to_the_tenant_s_highest_priority_parked_job(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db, max_running_jobs=1)
    running = await submit(db, tenant_id)
    claim = await start(db, running.id)
    low = await submit(db, tenant_id)
    high = await submit(db, tenant_id, priority=5)
    for job in (low, high):
        await job_attempts.start_attempt(db, job.id, "w1", 10)  # parked: the tenant's slot is taken
    moved = await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED)
    assert moved is not None and moved.unparked == high.id


async def test_jobs_of_one_concurrency_key_run_within_its_limit(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    first = await submit(db, tenant_id, concurrency_key="customer-1", concurrency_limit=1)
    second = await submit(db, tenant_id, concurrency_key="customer-1", concurrency_limit=1)
    other = await submit(db, tenant_id, concurrency_key="customer-2", concurrency_limit=1)
    claim = await start(db, first.id)
    waiting = await job_attempts.start_attempt(db, second.id, "w1", 10)
    assert isinstance(waiting, job_attempts.NotStarted) and "key" in waiting.reason
    assert isinstance(await job_attempts.start_attempt(db, other.id, "w1", 10), job_attempts.Claim)
    # The key's running job ends: its slot goes to the job waiting for the key.
    moved = await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED)
    assert moved is not None and moved.unparked == second.id
    assert isinstance(await job_attempts.start_attempt(db, second.id, "w1", 10), job_attempts.Claim)


async def test_a_concurrency_strategy_refuses_or_clears_the_key_s_other_jobs(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    owner = Owner(tenant_id)
    held = await submit(db, tenant_id, concurrency_key="k", concurrency_limit=1)
    refused = await job_submission.insert(
        db,
        job_submission.NewJob(
            tenant_id=tenant_id,
            crew="echo",
            inputs={},
            metadata={},
            webhook_url=None,
            timeout_s=60,
            max_retries=0,
            concurrency_key="k",
            concurrency_limit=1,
            concurrency_reject=True,
        ),
        10_000,
        10,
    )
    assert refused == job_submission.ConcurrencyBusy(1)
    newer = await submit(db, tenant_id, concurrency_key="k", concurrency_limit=1)
    cleared = await job_submission.clear_key(db, owner, "k", newer.id, running=False)
    assert cleared.stopping == [] and [f.status for f in cleared.after.counts] == ["cancelled"]  # type: ignore[union-attr]
    got = await jobs.get(db, owner, held.id)
    assert got is not None and got.status == "cancelled"
    running = await start(db, newer.id)
    latest = await submit(db, tenant_id, concurrency_key="k", concurrency_limit=1)
    stopping = await job_submission.clear_key(db, owner, "k", latest.id, running=True)
    assert stopping.stopping == [newer.id]
    assert await job_attempts.heartbeat(db, running) == (True, True)  # its worker sees the cancel
