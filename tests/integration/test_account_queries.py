"""The account's metrics and IP allowlist against real Postgres: what an owner's recent jobs
did per crew (shared/store/usage.py `metrics`), and the allowlist replaced by one
compare-and-set UPDATE that authentication sees on the next request
(shared/store/tenants.py)."""

import ipaddress
from datetime import timedelta

import asyncpg
import pytest

from schemas.account import Scope
from schemas.jobs import AttemptOutcome, ErrorCode, JobError, JobStatus, Spent
from shared.domain.owners import Owner
from shared.store import job_attempts, jobs, keys, tenants, usage
from tests.integration.factories import spend, start, submit, tenant

WEEK = timedelta(days=7)
BROKEN = JobError(code=ErrorCode.CREW_ERROR, message="the crew raised")


async def _ran(db: asyncpg.Pool, job_id: str, seconds: float, waited: float) -> None:
    """Pin the times of a job's first attempt: due `waited` seconds before it started,
    running `seconds` (time travel: a test cannot wait for a real crew)."""
    await db.execute(
        "UPDATE job_attempts SET started_at = now() - make_interval(secs => $2),"
        " finished_at = CASE WHEN finished_at IS NULL THEN NULL ELSE now() END"
        " WHERE job_id = $1",
        job_id,
        seconds,
    )
    await db.execute(
        "UPDATE jobs SET started_at = now() - make_interval(secs => $2),"
        " created_at = now() - make_interval(secs => $2 + $3),"
        " run_after = now() - make_interval(secs => $2 + $3) WHERE id = $1",
        job_id,
        seconds,
        waited,
    )


def _spent(prompt: int, completion: int) -> Spent:
    return Spent(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=(prompt + completion) / 1000,
        llm_calls=1,
    )


async def _finished(
    db: asyncpg.Pool,
    tenant_id: str,
    crew: str,
    outcome: AttemptOutcome,
    seconds: float,
    waited: float,
    tokens: tuple[int, int] = (0, 0),
) -> str:
    job = await submit(db, tenant_id, crew=crew, max_retries=0)
    claim = await start(db, job.id)
    if tokens != (0, 0):
        await spend(db, claim, _spent(*tokens))
    error = BROKEN if outcome is AttemptOutcome.FAILED else None
    assert await job_attempts.end_attempt(db, claim, outcome, error=error) is not None
    await _ran(db, job.id, seconds, waited)
    return job.id


async def test_metrics_count_an_owner_s_recent_jobs_per_crew_and_in_total(
    db: asyncpg.Pool,
) -> None:
    tenant_id, other = await tenant(db), await tenant(db)
    done = AttemptOutcome.COMPLETED
    for seconds, waited in ((10, 1), (20, 2), (30, 3), (40, 4)):
        await _finished(db, tenant_id, "echo", done, seconds, waited, tokens=(100, 50))
    await _finished(db, tenant_id, "echo", AttemptOutcome.FAILED, 100, 10, tokens=(7, 3))
    await _finished(db, tenant_id, "research", done, 5, 0.5, tokens=(1000, 0))
    await submit(db, tenant_id, crew="research")  # pending: counted, never ran nor waited
    cancelled = await submit(db, tenant_id, crew="research")
    await jobs.request_cancel(db, Owner(tenant_id), cancelled.id)  # never started
    # Not this owner's, or not this period's: none of them counts.
    await _finished(db, other, "echo", done, 999, 999, tokens=(9999, 9999))
    await _finished(db, tenant_id, "echo", done, 999, 999, tokens=(5, 5))
    await db.execute(
        "UPDATE jobs SET created_at = now() - interval '8 days'"
        " WHERE tenant_id = $1 AND usage->>'prompt_tokens' = '5'",
        tenant_id,
    )
    test_job = await submit(db, tenant_id, crew="echo", livemode=False)
    assert test_job.id

    found = await usage.metrics(db, Owner(tenant_id), WEEK)

    assert found.until - found.since == WEEK
    assert list(found.crews) == ["echo", "research"]
    echo, research = found.crews["echo"], found.crews["research"]
    assert echo.jobs == 5
    assert echo.by_status == {
        **dict.fromkeys(JobStatus, 0),
        JobStatus.COMPLETED: 4,
        JobStatus.FAILED: 1,
    }
    # 10, 20, 30, 40, 100 seconds: the median and the 95th percentile (interpolated).
    assert echo.run_p50 == pytest.approx(30, abs=0.5)
    assert echo.run_p95 == pytest.approx(88, abs=0.5)
    assert echo.wait_p50 == pytest.approx(3, abs=0.05)
    assert echo.wait_p95 == pytest.approx(8.8, abs=0.05)
    assert (echo.spent.prompt_tokens, echo.spent.completion_tokens) == (407, 203)
    assert (echo.spent.total_tokens, echo.spent.llm_calls) == (610, 5)
    assert echo.spent.cost_usd == pytest.approx(0.61)
    assert research.jobs == 3
    assert research.by_status[JobStatus.PENDING] == 1
    assert research.by_status[JobStatus.CANCELLED] == 1
    assert research.by_status[JobStatus.COMPLETED] == 1
    # Only the job that ran has a run time and a wait.
    assert research.run_p50 == research.run_p95 == pytest.approx(5, abs=0.5)
    assert research.wait_p50 == pytest.approx(0.5, abs=0.05)
    assert found.totals.jobs == 8
    assert found.totals.by_status[JobStatus.COMPLETED] == 5
    assert found.totals.spent.prompt_tokens == 1407
    assert found.totals.run_p50 == pytest.approx(25, abs=0.5)  # 5, 10, 20, 30, 40, 100

    # The test mode sees its own job only; a tenant with no job gets zeroes, not an error.
    sandbox = await usage.metrics(db, Owner(tenant_id, livemode=False), WEEK)
    assert list(sandbox.crews) == ["echo"] and sandbox.totals.jobs == 1
    assert sandbox.totals.run_p50 is None and sandbox.totals.wait_p50 is None
    empty = await usage.metrics(db, Owner(await tenant(db)), timedelta(hours=24))
    assert empty.crews == {} and empty.totals.jobs == 0
    assert empty.totals.spent == Spent() and empty.totals.by_status[JobStatus.FAILED] == 0


async def test_a_retried_job_s_run_time_adds_its_attempts_and_its_wait_is_left_out(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id, max_retries=1)
    first = await start(db, job.id)
    assert await job_attempts.end_attempt(
        db, first, AttemptOutcome.FAILED, error=BROKEN, retry_in=0
    )
    second = await start(db, job.id)
    assert await job_attempts.end_attempt(db, second, AttemptOutcome.COMPLETED)
    await db.execute(
        "UPDATE job_attempts SET started_at = finished_at - make_interval(secs => 3 * number)"
        " WHERE job_id = $1",
        job.id,
    )
    found = await usage.metrics(db, Owner(tenant_id), WEEK)
    assert found.totals.run_p50 == pytest.approx(9, abs=0.01)  # 3 s + 6 s
    assert found.totals.wait_p50 is None  # the retry moved its due time past its start


def _nets(*texts: str) -> tuple[tenants.IpNetwork, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


async def test_an_allowlist_is_replaced_by_compare_and_set_and_holds_at_once(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    async with db.acquire() as conn:
        key = (await keys.create_key(conn, tenant_id, [Scope.ACCOUNT_READ])).key
    empty = await tenants.allowlist(db, tenant_id)
    assert empty is not None and empty.networks is None

    replaced = await tenants.replace_allowlist(
        db, tenant_id, _nets("203.0.113.0/24", "2001:db8::/32"), empty.version
    )
    assert replaced is not None
    assert replaced.before == empty
    assert replaced.after.networks == _nets("203.0.113.0/24", "2001:db8::/32")
    assert replaced.after.version != empty.version
    assert await tenants.allowlist(db, tenant_id) == replaced.after
    # Authentication reads it for the very next request: nothing cached.
    principal = await keys.authenticate(db, key)
    assert isinstance(principal, keys.Principal)
    assert principal.allowed_ips == _nets("203.0.113.0/24", "2001:db8::/32")

    # A writer holding the old version loses, and changes nothing.
    assert (
        await tenants.replace_allowlist(db, tenant_id, _nets("10.0.0.0/8"), empty.version) is None
    )
    assert await tenants.allowlist(db, tenant_id) == replaced.after
    # The version is the content's: whoever wrote the same list, it reads the same.
    again = await tenants.replace_allowlist(db, tenant_id, replaced.after.networks or ())
    assert again is not None and again.after.version == replaced.after.version
    # () lets every address in again; no version given: the last writer wins.
    cleared = await tenants.replace_allowlist(db, tenant_id, ())
    assert cleared is not None and cleared.after.networks is None
    assert cleared.after.version == empty.version
    assert await tenants.replace_allowlist(db, "ten_nobody", ()) is None
    assert await tenants.allowlist(db, "ten_nobody") is None
