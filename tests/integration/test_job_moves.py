"""Every move of the job state machine against real Postgres: what it changes, the attempt
it opens or closes, the event it owes, and what it refuses."""

import asyncio

import asyncpg
import pytest

from schemas.jobs import AttemptOutcome, ErrorCode, JobError, JobResult, JobStatus
from shared.domain.owners import Owner
from shared.store import job_attempts, job_submission, job_sweeps, jobs
from tests.integration.factories import event_types, reap, start, status_of, submit, tenant

RESULT = JobResult(raw="done", tasks=[], models=["m"], offline=True)
LLM_DOWN = JobError(code=ErrorCode.LLM_UNAVAILABLE, message="provider said 503")


async def test_start_opens_an_attempt_and_owes_job_started(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id, worker="w7")
    assert (claim.attempt, claim.counted_attempt, claim.retries_left) == (1, 1, 2)
    got = await jobs.get(db, Owner(claim.tenant_id), job.id)
    assert got is not None and got.status == "running" and got.worker_id == "w7"
    assert [(a.number, a.worker_id, a.outcome) for a in got.attempts] == [(1, "w7", None)]
    assert await event_types(db, job.id) == ["job.started"]
    # A second delivery of the same queue message finds nothing to start.
    again = await job_attempts.start_attempt(db, job.id, "w8", 10)
    assert isinstance(again, job_attempts.NotStarted) and again.reason == "job is running"


async def test_events_carry_the_jobs_state_not_its_inputs_or_metadata(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db), inputs={"message": "secret-ish"}, metadata={"k": "v"})
    claim = await start(db, job.id)
    await job_attempts.end_attempt(
        db, claim, AttemptOutcome.COMPLETED, result=RESULT, token_usage={}
    )
    payloads = [r["payload"] for r in await db.fetch("SELECT payload FROM events")]
    assert [p["type"] for p in payloads] == ["job.started", "job.completed"]
    for payload in payloads:
        assert payload["data"]["id"] == job.id
        assert not {"inputs", "metadata", "attempts"} & set(payload["data"])
    assert payloads[1]["data"]["result"]["raw"] == "done"


@pytest.mark.parametrize(
    ("outcome", "status", "event"),
    [
        (AttemptOutcome.COMPLETED, "completed", "job.completed"),
        (AttemptOutcome.FAILED, "failed", "job.failed"),
        (AttemptOutcome.CANCELLED, "cancelled", "job.cancelled"),
    ],
)
async def test_ending_an_attempt_closes_it_with_its_outcome(
    db: asyncpg.Pool, outcome: AttemptOutcome, status: str, event: str
) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    error = LLM_DOWN if outcome is AttemptOutcome.FAILED else None
    moved = await job_attempts.end_attempt(db, claim, outcome, error=error, result=RESULT)
    assert moved is not None and moved.row["status"] == status and moved.row["finished_at"]
    # Once it commits: the job's end counted, timed from its start; nothing to queue.
    ran = (moved.row["finished_at"] - moved.row["started_at"]).total_seconds()
    ended = jobs.Finished(job.crew, JobStatus(status), ran)
    assert moved.after == jobs.AfterCommit(counts=(ended,))
    got = await jobs.get(db, Owner(claim.tenant_id), job.id)
    assert got is not None
    [attempt] = got.attempts
    assert attempt.outcome == outcome and attempt.finished_at is not None
    assert attempt.error == error
    assert (await event_types(db, job.id))[-1] == event
    # Compare-and-set: the same attempt cannot end twice, and a terminal job stays put.
    assert (
        await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT) is None
    )


async def test_a_stale_attempt_cannot_end_the_job(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    first = await start(db, job.id)
    await job_attempts.end_attempt(db, first, AttemptOutcome.LOST, error=LLM_DOWN, retry_in=0)
    second = await start(db, job.id)
    assert second.attempt == 2
    assert (
        await job_attempts.end_attempt(db, first, AttemptOutcome.COMPLETED, result=RESULT) is None
    )
    assert await status_of(db, job.id) == "running"


async def test_retry_goes_back_to_pending_after_its_delay(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    moved = await job_attempts.end_attempt(
        db, claim, AttemptOutcome.RETRYING, error=LLM_DOWN, retry_in=30
    )
    assert moved is not None and moved.row["status"] == "pending"
    assert moved.row["worker_id"] is None and moved.row["error"]["code"] == "LLM_UNAVAILABLE"
    # The retry is counted; the queue, not this move, offers the job again after its delay.
    retried = jobs.Retried(job.crew, ErrorCode.LLM_UNAVAILABLE)
    assert moved.after == jobs.AfterCommit(counts=(retried,))
    early = await job_attempts.start_attempt(db, job.id, "w1", 10)
    assert (
        isinstance(early, job_attempts.NotStarted) and early.retry_in and 29 < early.retry_in <= 30
    )
    assert await event_types(db, job.id) == ["job.started", "job.retrying"]
    # Cancelled while it waits: its end is counted, untimed (this move ended no run).
    cancel = await jobs.request_cancel(db, Owner(claim.tenant_id), job.id)
    assert cancel.outcome is jobs.CancelOutcome.CANCELLED
    finished = jobs.Finished(job.crew, JobStatus.CANCELLED, None)
    assert cancel.after == jobs.AfterCommit(counts=(finished,))


async def test_release_hands_back_without_spending_an_attempt(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db), max_retries=0)
    claim = await start(db, job.id)
    moved = await job_attempts.end_attempt(db, claim, AttemptOutcome.RELEASED)
    assert moved is not None and moved.row["status"] == "pending"
    assert moved.after == jobs.AfterCommit()  # neither an end nor a retry: nothing counted
    again = await start(db, job.id)
    assert (again.attempt, again.counted_attempt, again.retries_left) == (2, 1, 0)
    assert await event_types(db, job.id) == ["job.started", "job.started"]  # release owes none


async def test_cancel_pending_running_finished_and_unknown(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    pending = await submit(db, tenant_id)
    cancel = await jobs.request_cancel(db, Owner(tenant_id), pending.id)
    assert cancel.outcome is jobs.CancelOutcome.CANCELLED
    finished = jobs.Finished(pending.crew, JobStatus.CANCELLED, None)
    assert cancel.after == jobs.AfterCommit(counts=(finished,))
    assert await status_of(db, pending.id) == "cancelled"
    never = await job_attempts.start_attempt(db, pending.id, "w1", 10)
    assert isinstance(never, job_attempts.NotStarted)
    assert await event_types(db, pending.id) == ["job.cancelled"]

    running = await submit(db, tenant_id)
    claim = await start(db, running.id)
    cancel = await jobs.request_cancel(db, Owner(tenant_id), running.id)
    assert cancel == jobs.Cancel(jobs.CancelOutcome.REQUESTED)  # its worker counts its end
    assert await job_attempts.heartbeat(db, claim) == (True, True)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.CANCELLED)
    cancel = await jobs.request_cancel(db, Owner(tenant_id), running.id)
    assert cancel == jobs.Cancel(jobs.CancelOutcome.ALREADY_FINISHED)

    other = await tenant(db)
    cancel = await jobs.request_cancel(db, Owner(other), running.id)
    assert cancel == jobs.Cancel(jobs.CancelOutcome.NOT_FOUND)


async def test_a_cancel_that_arrived_during_a_hand_back_cancels_at_the_next_offer(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    claim = await start(db, job.id)
    await jobs.request_cancel(db, Owner(tenant_id), job.id)  # running: only requested
    await job_attempts.end_attempt(db, claim, AttemptOutcome.RELEASED)  # the worker drains
    offered = await job_attempts.start_attempt(db, job.id, "w2", 10)
    assert isinstance(offered, job_attempts.NotStarted) and offered.reason == "job was cancelled"
    assert await status_of(db, job.id) == "cancelled"


async def test_restart_runs_a_finished_job_again_with_a_full_budget(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id, max_retries=0)
    claim = await start(db, job.id)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=LLM_DOWN)
    restarted = await jobs.restart(db, Owner(tenant_id), job.id)
    assert isinstance(restarted, jobs.Restarted)
    assert restarted.job.status == "pending" and restarted.job.error is None
    # Queued at once, bringing forward whatever the queue may still hold of its last run.
    assert restarted.after == jobs.AfterCommit((jobs.ToQueue(job.id, jobs.Queueing.AT_ONCE),))
    again = await start(db, job.id)
    assert (again.attempt, again.retries_left) == (2, 0)
    await job_attempts.end_attempt(db, again, AttemptOutcome.COMPLETED, result=RESULT)
    assert await jobs.restart(db, Owner(tenant_id), job.id) is None  # completed: not restartable
    assert await event_types(db, job.id) == [
        "job.started",
        "job.failed",
        "job.retrying",
        "job.started",
        "job.completed",
    ]


async def test_postgres_refuses_a_move_the_state_machine_does_not_have(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT)
    with pytest.raises(asyncpg.CheckViolationError, match="not a move of the job state"):
        await db.execute("UPDATE jobs SET status = 'running' WHERE id = $1", job.id)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE job_attempts SET outcome = 'exploded' WHERE job_id = $1", job.id)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            'UPDATE jobs SET error = \'{"code": "OOPS", "message": ""}\' WHERE id = $1',
            job.id,
        )


async def test_every_declared_move_is_one_postgres_allows(db: asyncpg.Pool) -> None:
    """The Move table and the trigger describe one state machine."""
    tenant_id = await tenant(db)
    for move in jobs.MOVES:
        for source in move.sources:
            job = await submit(db, tenant_id)
            async with db.acquire() as conn, conn.transaction():
                await conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_state_machine")
                await conn.execute("UPDATE jobs SET status = $2 WHERE id = $1", job.id, source)
                await conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_state_machine")
            await db.execute("UPDATE jobs SET status = $2 WHERE id = $1", job.id, move.target)


async def test_storable_strings_only_reach_postgres(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    dirty = JobResult(raw="a\x00b \ud800 c", tasks=[], models=["m\x00"], offline=False)
    moved = await job_attempts.end_attempt(
        db, claim, AttemptOutcome.COMPLETED, result=dirty, token_usage={"k\x00": 1}
    )
    assert moved is not None
    stored = await jobs.get(db, Owner(claim.tenant_id), job.id)
    assert stored is not None and stored.result is not None
    assert stored.result.raw == "ab \ufffd c" and stored.result.models == ["m"]
    assert stored.token_usage == {"k": 1}


async def test_a_result_that_cannot_be_stored_raises_and_changes_nothing(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    nested: dict[str, object] = {}
    deep = nested
    for _ in range(300):  # past orjson's nesting limit
        deep["x"] = {}
        deep = deep["x"]  # type: ignore[assignment]
    too_deep = JobResult(raw="r", structured=nested, tasks=[], models=[], offline=False)
    with pytest.raises(ValueError, match=r"depth exceeded|[Rr]ecursion"):
        await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=too_deep)
    assert await status_of(db, job.id) == "running"


async def test_reaper_retries_a_silent_job_and_fails_one_out_of_retries(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    retried = await submit(db, tenant_id, max_retries=1)
    final = await submit(db, tenant_id, max_retries=0)
    for job in (retried, final):
        await start(db, job.id)
    await db.execute("UPDATE jobs SET last_activity_at = now() - interval '1 minute'")
    reaped = await reap(db, heartbeat_timeout=30, timeout_grace=30)
    assert reaped.job_ids == [retried.id]
    # Queued at once, whatever its dead worker's claim still holds of it; both moves counted.
    assert reaped.queue == (jobs.ToQueue(retried.id, jobs.Queueing.AT_ONCE),)
    assert jobs.Retried(retried.crew, ErrorCode.WORKER_LOST) in reaped.counts
    [ended] = [c for c in reaped.counts if isinstance(c, jobs.Finished)]
    assert (ended.crew, ended.status) == (final.crew, JobStatus.FAILED) and ended.ran_s is not None
    assert len(reaped.counts) == 2
    got = await jobs.get(db, Owner(tenant_id), retried.id)
    assert got is not None and got.status == "pending"
    assert got.attempts[0].outcome == "lost" and got.error and got.error.code == "WORKER_LOST"
    failed = await jobs.get(db, Owner(tenant_id), final.id)
    assert failed is not None and failed.status == "failed"
    assert failed.attempts[0].outcome == "lost"
    assert await reap(db, 30, 30) == jobs.AfterCommit()


async def test_reaper_times_out_a_heartbeating_job_past_its_timeout(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id, timeout_s=1)
    await start(db, job.id)
    await db.execute("UPDATE job_attempts SET started_at = now() - interval '1 minute'")
    reaped = await reap(db, heartbeat_timeout=30, timeout_grace=5)
    assert reaped.job_ids == []
    assert [(c.crew, c.status) for c in reaped.counts if isinstance(c, jobs.Finished)] == [
        (job.crew, JobStatus.FAILED)
    ]
    got = await jobs.get(db, Owner(tenant_id), job.id)
    assert got is not None and got.status == "failed" and got.error
    assert got.error.code == "TIMEOUT" and got.attempts[0].outcome == "timeout"


async def test_capped_jobs_park_and_each_ending_hands_its_slot_on(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db, max_running_jobs=1)
    first, second, third = [await submit(db, tenant_id) for _ in range(3)]
    claim = await start(db, first.id)
    for job in (second, third):
        parked = await job_attempts.start_attempt(db, job.id, "w1", 10)
        assert isinstance(parked, job_attempts.NotStarted) and parked.retry_in is None
    assert await job_sweeps.pending_jobs(db, older_than_s=-60) == []  # off the queue
    other_tenant = await tenant(db, max_running_jobs=1)
    free = await submit(db, other_tenant)
    await start(db, free.id)  # another tenant's cap is its own

    moved = await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT)
    assert moved is not None and moved.unparked == second.id  # oldest first
    claim = await start(db, second.id)
    moved = await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=LLM_DOWN)
    assert moved is not None and moved.unparked == third.id
    assert [r["id"] for r in await job_sweeps.pending_jobs(db, older_than_s=-60)] == [third.id]


async def test_a_raised_cap_unparks_as_many_as_fit(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db, max_running_jobs=1)
    jobs_ = [await submit(db, tenant_id) for _ in range(4)]
    await start(db, jobs_[0].id)
    for job in jobs_[1:]:
        await job_attempts.start_attempt(db, job.id, "w1", 10)
    assert await job_sweeps.unpark_free_slots(db, default_cap=10) == []
    await db.execute("UPDATE tenants SET max_running_jobs = 3 WHERE id = $1", tenant_id)
    assert await job_sweeps.unpark_free_slots(db, default_cap=10) == [jobs_[1].id, jobs_[2].id]


async def test_starts_and_cancels_racing_never_deadlock(db: asyncpg.Pool) -> None:
    """Today's tenant lock must not conflict with the FOR KEY SHARE that every insert of an
    event takes on its tenant: 40P01 would surface as a 500 or a lost start."""
    tenant_id = await tenant(db, max_running_jobs=1000)
    for _ in range(3):
        batch = [await submit(db, tenant_id) for _ in range(40)]
        racers = [job_attempts.start_attempt(db, j.id, "w1", 1000) for j in batch] + [
            jobs.request_cancel(db, Owner(tenant_id), j.id) for j in batch
        ]
        outcomes = await asyncio.gather(*racers, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert errors == [], errors[:3]
        for job in batch:
            assert await status_of(db, job.id) in ("running", "cancelled")


async def test_a_job_submitted_at_its_tenants_cap_is_parked_and_leaves_in_turn(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db, max_running_jobs=2)
    inserted = []
    for _ in range(4):
        new = job_submission.NewJob(tenant_id, "echo", {"message": "m"}, {}, None, 60, 0)
        answer = await job_submission.insert(db, new, default_max_pending=100, default_cap=10)
        assert isinstance(answer, job_submission.Inserted)
        inserted.append(answer)
    # Two fit the cap (queued, not yet running): the others wait, off the queue.
    assert [i.parked for i in inserted] == [False, False, True, True]
    queued = [r["id"] for r in await job_sweeps.pending_jobs(db, older_than_s=-60)]
    assert queued == [inserted[0].job.id, inserted[1].job.id]
    claim = await start(db, inserted[0].job.id)
    moved = await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT)
    assert moved is not None and moved.unparked == inserted[2].job.id
    # A job submitted now queues behind those still parked.
    late = await job_submission.insert(
        db,
        job_submission.NewJob(tenant_id, "echo", {"message": "m"}, {}, None, 60, 0),
        default_max_pending=100,
        default_cap=10,
    )
    assert isinstance(late, job_submission.Inserted) and late.parked
