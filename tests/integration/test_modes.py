"""A tenant's live and test data kept apart by every query an API key can reach (issue 19):
jobs, idempotency keys, endpoints and the events they are owed, signing secrets, the
tenant-wide event tail, the failed-request log; and manual retries counted against the
monthly quota."""

from typing import Any

import asyncpg

from schemas.account import KeyMode, Plan, Scope
from schemas.events import EventType
from schemas.jobs import AttemptOutcome, ErrorCode, Job, JobError
from shared.domain.owners import Owner
from shared.store import (
    deliveries,
    endpoints,
    events,
    job_attempts,
    jobs,
    keys,
    request_failures,
    tenants,
    usage,
)
from shared.store.events import TenantFilter, TenantTail
from shared.store.request_failures import RequestFailure
from tests.integration.factories import BOX, endpoint, start, submit, tenant

FAILED = JobError(code=ErrorCode.CREW_ERROR, message="boom")


async def _submit(db: asyncpg.Pool, owner: Owner, **fields: Any) -> Job:
    return await submit(db, owner.tenant_id, max_retries=0, livemode=owner.livemode, **fields)


async def test_job_reads_and_moves_keep_to_the_owners_mode(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    live, test = Owner(tenant_id, True), Owner(tenant_id, False)
    live_job, test_job = await _submit(db, live), await _submit(db, test)

    assert await jobs.get(db, test, live_job.id) is None
    assert not await jobs.exists(db, test, live_job.id)
    found, omitted = await jobs.many(db, test, [live_job.id, test_job.id])
    assert [j.id for j in found] == [test_job.id] and omitted == []
    listed, _ = await jobs.page(db, test, jobs.JobFilter(), before=None, limit=10)
    assert [j.id for j in listed] == [test_job.id]
    listed, _ = await jobs.page(db, live, jobs.JobFilter(), before=None, limit=10)
    assert [j.id for j in listed] == [live_job.id]

    cancel = await jobs.request_cancel(db, test, live_job.id)
    assert cancel.outcome is jobs.CancelOutcome.NOT_FOUND
    got = await jobs.get(db, live, live_job.id)
    assert got is not None and got.status == "pending"
    claim = await start(db, live_job.id)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=FAILED)
    assert await jobs.restart(db, test, live_job.id) is None
    got = await jobs.get(db, live, live_job.id)
    assert got is not None and got.status == "failed"


async def test_an_idempotency_key_names_one_job_per_mode(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    live, test = Owner(tenant_id, True), Owner(tenant_id, False)
    first = await _submit(db, live, idempotency_key="k")
    sandboxed = await _submit(db, test, idempotency_key="k")
    assert sandboxed.id != first.id and not sandboxed.livemode
    again = await _submit(db, test, idempotency_key="k")
    assert again.id == sandboxed.id  # replayed within the sandbox


async def test_a_manual_retry_of_a_live_job_counts_against_the_quota(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db, Plan.FREE)
    live, test = Owner(tenant_id, True), Owner(tenant_id, False)
    job = await _submit(db, live, monthly_limit=1)  # the quota's one job
    claim = await start(db, job.id)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=FAILED)
    refused = await jobs.restart(db, live, job.id, monthly_limit=1)
    assert isinstance(refused, usage.QuotaExceeded) and refused.limit == 1
    got = await jobs.get(db, live, job.id)
    assert got is not None and got.status == "failed"  # rolled back with the refusal
    # With room in the quota the retry goes ahead, and is counted.
    restarted = await jobs.restart(db, live, job.id, monthly_limit=2)
    assert isinstance(restarted, jobs.Restarted) and restarted.job.status == "pending"
    used = await db.fetchval("SELECT jobs FROM tenant_usage WHERE tenant_id = $1", tenant_id)
    assert used == 2
    # A test job's retry counts against nothing.
    sandboxed = await _submit(db, test)
    claim = await start(db, sandboxed.id)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=FAILED)
    assert isinstance(await jobs.restart(db, test, sandboxed.id, monthly_limit=2), jobs.Restarted)
    assert await db.fetchval("SELECT jobs FROM tenant_usage WHERE tenant_id = $1", tenant_id) == 2


async def test_endpoints_and_their_events_belong_to_a_mode(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    live, test = Owner(tenant_id, True), Owner(tenant_id, False)
    live_hook = await endpoint(db, tenant_id, "https://live.example/x")
    test_hook = await endpoint(db, tenant_id, "https://test.example/x", livemode=False)
    assert await endpoints.get(db, test, live_hook) is None
    assert await endpoints.get(db, live, test_hook) is None
    assert not await endpoints.delete(db, test, live_hook)
    assert await endpoints.rotate_secret(db, test, live_hook, 0, BOX) is None
    pages = [await endpoints.page(db, o, before=None, limit=10) for o in (live, test)]
    assert [[e.id for e in page] for page, _ in pages] == [[live_hook], [test_hook]]
    async with db.acquire() as conn:
        assert await events.send_test(conn, test, live_hook) is None
        for owner, hook in ((live, live_hook), (test, test_hook)):
            targets = await endpoints.subscribed(conn, owner, EventType.JOB_COMPLETED)
            assert [t.endpoint_id for t in targets] == [hook]

    # A test job's outcome is owed to the test endpoint only, and its delivery is neither
    # read nor retried by the live owner.
    job = await _submit(db, test)
    claim = await start(db, job.id)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=FAILED)
    rows = await db.fetch(
        "SELECT d.id, d.endpoint_id FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE e.job_id = $1",
        job.id,
    )
    assert {r["endpoint_id"] for r in rows} == {test_hook}
    delivery_id = rows[0]["id"]
    assert await deliveries.get(db, live, delivery_id) is None
    assert await deliveries.retry(db, live, delivery_id) is deliveries.RetryOutcome.NOT_FOUND
    assert await deliveries.job_page(db, live, job.id, before=None, limit=10) == ([], False)
    found = await deliveries.get(db, test, delivery_id)
    assert found is not None and found.endpoint_id == test_hook


async def test_test_jobs_are_signed_with_the_test_secret(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    live, test = Owner(tenant_id, True), Owner(tenant_id, False)
    assert (
        await db.fetchval("SELECT test_signing_secret FROM tenants WHERE id = $1", tenant_id)
        is None
    )
    # Never asked for yet: the claim of the first test delivery makes it.
    for owner in (live, test):
        job = await _submit(db, owner, webhook_url=f"https://{owner.livemode}.example/hook")
        claim = await start(db, job.id)
        await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=FAILED)
    due = await deliveries.claim(db, 10, 60, [], per_url=10, busy={}, box=BOX)
    by_mode = {d.payload["livemode"]: d.secrets for d in due}
    live_secret = await tenants.signing_secret(db, live, BOX)
    test_secret = await tenants.signing_secret(db, test, BOX)
    assert test_secret is not None and test_secret != live_secret
    assert by_mode == {True: [live_secret], False: [test_secret]}
    # Rotating one mode's secret leaves the other's alone.
    rotated = await tenants.rotate_signing_secret(db, test, 0, BOX)
    assert await tenants.signing_secret(db, test, BOX) == rotated.secret
    assert await tenants.signing_secret(db, live, BOX) == live_secret


async def test_the_tenant_tail_and_the_failure_log_keep_to_the_mode(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    live, test = Owner(tenant_id, True), Owner(tenant_id, False)
    tails = {o: await TenantTail.from_now(db, o, TenantFilter()) for o in (live, test)}
    live_job, test_job = await _submit(db, live), await _submit(db, test)
    for job in (live_job, test_job):
        claim = await start(db, job.id)
        await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=FAILED)
    for owner, job in ((live, live_job), (test, test_job)):
        read, _ = await tails[owner].read(db)
        assert {e.data["id"] for e in read} == {job.id}
        assert all(e.livemode is owner.livemode for e in read)
    live_event = (await events.page(db, live_job.id, after=None, limit=1) or ([], False))[0][0]
    assert await TenantTail.after_event(db, test, TenantFilter(), live_event.id) is None

    async with db.acquire() as conn:
        test_key = await keys.create_key(conn, tenant_id, [Scope.ADMIN], mode=KeyMode.TEST)
        live_key = await keys.create_key(conn, tenant_id, [Scope.ADMIN])
    failures = [
        RequestFailure(tenant_id, key, live_event.created_at, "GET", path, 404, "X", rid)
        for key, path, rid in (
            (live_key.info.id, f"/v1/jobs/{live_job.id}", "live"),
            (test_key.info.id, "/v1/jobs/job_x", "test"),
            (None, "/v1/jobs", "no-key"),
        )
    ]
    await request_failures.insert_many(db, failures)
    seen = {
        o.livemode: {f.request_id for f in await request_failures.recent(db, o, 10)}
        for o in (live, test)
    }
    assert seen == {True: {"live", "no-key"}, False: {"test"}}
    listed = {o.livemode: await keys.page(db, o, before=None, limit=10) for o in (live, test)}
    assert [k.id for k in listed[False][0]] == [test_key.info.id]
    assert [k.id for k in listed[True][0]] == [live_key.info.id]
    assert await keys.revoke(db, test, live_key.info.id) is None
