"""Job submission, bounds, reads and retention against real Postgres."""

import asyncio
from pathlib import Path

import aiodns
import asyncpg
import pytest_asyncio

from schemas.jobs import AttemptOutcome, JobCreate, JobResult
from shared.domain import submissions
from shared.domain.crews import CrewRegistry
from shared.domain.owners import Owner
from shared.runtime.settings import Settings
from shared.store import events, job_attempts, job_submission, job_sweeps, jobs
from shared.webhooks.urls import UrlPolicy
from tests.integration.factories import endpoint, principal, start, submit, tenant

CREWS = CrewRegistry.load([Path(__file__).parent.parent / "crews"])
RESULT = JobResult(raw="done", tasks=[], models=["m"], offline=True)


@pytest_asyncio.fixture
async def urls() -> UrlPolicy:
    # Made in the test's running loop: aiodns binds to the loop current when it is made.
    return UrlPolicy(
        allow_http=False, allow_private=False, resolver=aiodns.DNSResolver(), dns_timeout_s=1
    )


async def _submit(
    db: asyncpg.Pool, urls: UrlPolicy, tenant_id: str, key: str | None = None, **body: object
) -> submissions.Submitted | submissions.Refused:
    request = JobCreate.model_validate({"crew": "echo", "inputs": {"message": "m"}, **body})
    return await submissions.submit(
        db,
        CREWS,
        Settings(tenant_max_pending_jobs=3),
        urls,
        principal(tenant_id),
        request,
        raw_body=request.model_dump_json().encode(),
        idempotency_key=key,
        traceparent=None,
    )


async def test_submission_takes_defaults_and_refuses_what_cannot_run(
    db: asyncpg.Pool, urls: UrlPolicy
) -> None:
    tenant_id = await tenant(db)
    made = await _submit(db, urls, tenant_id)
    assert isinstance(made, submissions.Submitted) and made.created
    assert (made.job.timeout, made.job.max_retries, made.job.status) == (3600, 2, "pending")
    unknown = await _submit(db, urls, tenant_id, crew="nope")
    assert isinstance(unknown, submissions.UnknownCrew) and "echo" in unknown.available
    missing = await _submit(db, urls, tenant_id, inputs={})
    assert isinstance(missing, submissions.MissingInputs) and missing.missing == ["message"]
    private = await _submit(db, urls, tenant_id, webhook_url="https://127.1/hook")
    assert isinstance(private, submissions.InvalidWebhookUrl) and "loopback" in private.reason


async def test_idempotency_replays_the_same_body_and_refuses_another(
    db: asyncpg.Pool, urls: UrlPolicy
) -> None:
    tenant_id = await tenant(db)
    first = await _submit(db, urls, tenant_id, key="k1")
    replay = await _submit(db, urls, tenant_id, key="k1")
    assert isinstance(first, submissions.Submitted) and isinstance(replay, submissions.Submitted)
    assert replay.job.id == first.job.id and not replay.created
    other = await _submit(db, urls, tenant_id, key="k1", inputs={"message": "different"})
    assert isinstance(other, submissions.IdempotencyKeyReused) and other.job_id == first.job.id
    elsewhere = await _submit(db, urls, await tenant(db), key="k1")
    assert isinstance(elsewhere, submissions.Submitted) and elsewhere.created


async def test_pending_bound_holds_under_concurrent_submissions(
    db: asyncpg.Pool, urls: UrlPolicy
) -> None:
    tenant_id = await tenant(db)
    answers = await asyncio.gather(*[_submit(db, urls, tenant_id) for _ in range(12)])
    made = [a for a in answers if isinstance(a, submissions.Submitted)]
    refused = [a for a in answers if isinstance(a, job_submission.TooManyPending)]
    assert len(made) == 3 and len(refused) == 9 and refused[0].limit == 3
    # A tenant's own bound wins over the platform's; starting a job frees a place.
    roomy = await tenant(db, max_pending_jobs=5)
    assert all(
        isinstance(a, submissions.Submitted)
        for a in await asyncio.gather(*[_submit(db, urls, roomy) for _ in range(5)])
    )
    await start(db, made[0].job.id)
    assert isinstance(await _submit(db, urls, tenant_id), submissions.Submitted)


async def test_a_job_stream_ends_only_when_the_job_has_ended(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id, max_retries=0)
    claim = await start(db, job.id)
    found, ended = await events.after(db, job.id, None)
    assert [e.type for e in found] == ["job.started"] and not ended
    await job_attempts.end_attempt(db, claim, AttemptOutcome.CANCELLED)
    found, ended = await events.after(db, job.id, found[0].id)
    assert [e.type for e in found] == ["job.cancelled"] and ended
    await jobs.restart(db, Owner(tenant_id), job.id)
    # Retried: its earlier outcome is not the end of its stream.
    found, ended = await events.after(db, job.id, None)
    assert [e.type for e in found][-2:] == ["job.cancelled", "job.retrying"] and not ended
    assert await events.after(db, "job_unknown", None) == ([], False)


async def test_retention_deletes_old_finished_jobs_with_everything_they_owe(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://a.example/x")
    old, recent, running = [await submit(db, tenant_id, idempotency_key=f"k{i}") for i in range(3)]
    for job in (old, recent):
        claim = await start(db, job.id)
        await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT)
    await start(db, running.id)
    await db.execute(
        "UPDATE jobs SET finished_at = now() - interval '31 days', created_at = now() - interval"
        " '31 days' WHERE id = $1",
        old.id,
    )
    async with db.acquire() as conn:
        hook = await endpoint(db, tenant_id, "https://b.x/y")
        await events.send_test(conn, Owner(tenant_id), hook)
    await db.execute(
        "UPDATE events SET created_at = now() - interval '31 days' WHERE job_id IS NULL"
    )

    assert await job_sweeps.purge_finished(db, older_than_days=30, batch=1) == 1
    assert await job_sweeps.purge_finished(db, older_than_days=30, batch=10) == 0
    assert await events.purge_without_job(db, older_than_days=30, batch=10) == 1
    left = {r["id"] for r in await db.fetch("SELECT id FROM jobs")}
    assert left == {recent.id, running.id}
    for table, column in (
        ("job_attempts", "job_id"),
        ("events", "job_id"),
    ):
        assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", old.id) == 0
    orphans = await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries d WHERE NOT EXISTS"
        " (SELECT 1 FROM events e WHERE e.id = d.event_id)"
    )
    assert orphans == 0 and await db.fetchval("SELECT count(*) FROM delivery_attempts") == 0
    assert await db.fetchval("SELECT count(*) FROM events WHERE job_id IS NULL") == 0
    # Its idempotency key went with it: the key is free again.
    again = await submit(db, tenant_id, idempotency_key="k0")
    assert again.id != old.id
