"""Durable crews (issue 21) in Postgres: sealed checkpoints of a running crew, the pause of
a job waiting for a person (`awaiting_input`), its answer, its timeout, and where an
attempt resumed."""

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from schemas.jobs import (
    AttemptOutcome,
    ErrorCode,
    InputAnswer,
    InputDefault,
    JobError,
    JobResult,
    JobStatus,
)
from shared.domain.owners import Owner
from shared.runtime.secret_box import SecretBox, generate_key
from shared.store import checkpoints, job_attempts, job_submission, job_sweeps, jobs
from tests.integration.factories import event_types, start, status_of, submit, tenant

RESULT = JobResult(raw="done", tasks=[], models=["m"], offline=True)
LLM_DOWN = JobError(code=ErrorCode.LLM_UNAVAILABLE, message="provider said 503")
KEY = generate_key()
BOX = SecretBox([KEY])


def _checkpoint(
    tasks_done: int, state: bytes | None = None, awaiting: bool = False
) -> checkpoints.Checkpoint:
    return checkpoints.Checkpoint(
        tasks_done=tasks_done,
        task=f"task_{tasks_done}",
        awaiting=awaiting,
        state=state if state is not None else f'{{"done": {tasks_done}}}'.encode(),
    )


def _asked(default: InputDefault = InputDefault.APPROVE, index: int = 2) -> job_attempts.InputAsked:
    return job_attempts.InputAsked(
        task="review_task",
        task_index=index,
        output="a draft to review",
        prompt="Is this right?",
        default_action=default,
    )


async def _rows(db: asyncpg.Pool, job_id: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT id, attempt, tasks_done, task, awaiting, sealed, bytes"
            " FROM job_checkpoints WHERE job_id = $1 ORDER BY id",
            job_id,
        )
    )


async def _event_data(db: asyncpg.Pool, job_id: str, type: str) -> dict[str, Any]:
    payload = await db.fetchval(
        "SELECT payload FROM events WHERE job_id = $1 AND type = $2 ORDER BY created_at DESC,"
        " id DESC LIMIT 1",
        job_id,
        type,
    )
    assert payload is not None, f"no {type} event"
    data = payload["data"]
    assert isinstance(data, dict)
    return data


async def _paused(
    db: asyncpg.Pool,
    tenant_id: str | None = None,
    default: InputDefault = InputDefault.APPROVE,
    waits_s: float = 600,
) -> tuple[str, str, job_attempts.Claim]:
    """A job of a tenant (a new one unless given) paused for a person at its first
    attempt: (tenant, job id, the attempt's claim)."""
    tenant_id = tenant_id or await tenant(db)
    job = await submit(db, tenant_id)
    claim = await start(db, job.id)
    moved = await job_attempts.pause(db, claim, _asked(default), waits_s)
    assert moved is not None
    return tenant_id, job.id, claim


async def _expire(db: asyncpg.Pool) -> jobs.AfterCommit:
    after = jobs.AfterCommit()
    async for expired in job_sweeps.expire_inputs(db):
        after += expired
    return after


async def _overdue(db: asyncpg.Pool, job_id: str) -> None:
    await db.execute(
        "UPDATE jobs SET input_expires_at = now() - interval '1 second' WHERE id = $1", job_id
    )


# --- checkpoints ---


async def test_a_checkpoint_is_stored_sealed_and_opens_with_the_box(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    state = b'{"format": 1, "tasks": ["secret output"]}'
    stored = await checkpoints.save(db, job.id, claim.attempt, _checkpoint(1, state), BOX)
    assert stored == checkpoints.Stored(len(state))
    [row] = await _rows(db, job.id)
    assert (row["attempt"], row["tasks_done"], row["task"], row["awaiting"]) == (
        1,
        1,
        "task_1",
        False,
    )
    assert row["bytes"] == len(state)
    sealed = bytes(row["sealed"])
    assert b"secret output" not in sealed  # sealed at rest
    assert BOX.open_bytes(sealed) == state
    opened = await checkpoints.newest(db, job.id, BOX)
    assert opened == checkpoints.Opened(checkpoints.Checkpoint(1, "task_1", False, state), 0)


async def test_a_stale_attempt_stores_no_checkpoint(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    first = await start(db, job.id)
    await job_attempts.end_attempt(db, first, AttemptOutcome.LOST, error=LLM_DOWN, retry_in=0)
    second = await start(db, job.id)
    assert second.attempt == 2
    stale = await checkpoints.save(db, job.id, first.attempt, _checkpoint(1), BOX)
    assert isinstance(stale, checkpoints.NotStored)
    assert await _rows(db, job.id) == []
    # The running attempt may; the stale one still may not, and prunes nothing.
    for n in range(1, 4):
        assert isinstance(
            await checkpoints.save(db, job.id, second.attempt, _checkpoint(n), BOX),
            checkpoints.Stored,
        )
    stale = await checkpoints.save(db, job.id, first.attempt, _checkpoint(9), BOX)
    assert isinstance(stale, checkpoints.NotStored)
    assert [r["tasks_done"] for r in await _rows(db, job.id)] == [1, 2, 3]


async def test_a_job_not_running_stores_no_checkpoint(db: asyncpg.Pool) -> None:
    _, job_id, claim = await _paused(db)
    stored = await checkpoints.save(db, job_id, claim.attempt, _checkpoint(1), BOX)
    assert isinstance(stored, checkpoints.NotStored)
    assert await _rows(db, job_id) == []


async def test_only_the_newest_checkpoints_are_kept(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    for n in range(1, 6):
        stored = await checkpoints.save(db, job.id, claim.attempt, _checkpoint(n), BOX)
        assert isinstance(stored, checkpoints.Stored)
    rows = await _rows(db, job.id)
    assert len(rows) == checkpoints.KEEP
    assert [r["tasks_done"] for r in rows] == [3, 4, 5]
    opened = await checkpoints.newest(db, job.id, BOX)
    assert opened.unreadable == 0 and opened.checkpoint is not None
    assert opened.checkpoint.tasks_done == 5 and opened.checkpoint.state == b'{"done": 5}'


async def test_another_jobs_checkpoints_are_not_pruned(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    one, two = await submit(db, tenant_id), await submit(db, tenant_id)
    claim_one, claim_two = await start(db, one.id), await start(db, two.id)
    await checkpoints.save(db, one.id, claim_one.attempt, _checkpoint(1), BOX)
    for n in range(1, 6):
        await checkpoints.save(db, two.id, claim_two.attempt, _checkpoint(n), BOX)
    assert [r["tasks_done"] for r in await _rows(db, one.id)] == [1]


async def test_newest_passes_over_a_checkpoint_no_key_opens(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    other_keys = [generate_key(), KEY]  # a key of its own first: it seals with that one
    other = SecretBox(other_keys[:1])
    await checkpoints.save(db, job.id, claim.attempt, _checkpoint(1), BOX)
    await checkpoints.save(db, job.id, claim.attempt, _checkpoint(2), other)
    opened = await checkpoints.newest(db, job.id, BOX)
    assert opened.unreadable == 1
    assert opened.checkpoint == checkpoints.Checkpoint(1, "task_1", False, b'{"done": 1}')
    # A box holding both keys opens the newest.
    both = SecretBox([generate_key(), *other_keys])
    newest = await checkpoints.newest(db, job.id, both)
    assert newest.unreadable == 0 and newest.checkpoint is not None
    assert newest.checkpoint.tasks_done == 2
    # None opens with a box of neither key: every one passed over is counted.
    stranger = SecretBox([generate_key()])
    assert await checkpoints.newest(db, job.id, stranger) == checkpoints.Opened(None, 2)


async def test_newest_of_a_job_without_checkpoints_is_none(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    assert await checkpoints.newest(db, job.id, BOX) == checkpoints.Opened(None, 0)
    assert await checkpoints.newest(db, "job_unknown", BOX) == checkpoints.Opened(None, 0)


async def test_delete_all_forgets_the_jobs_checkpoints_only(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job, kept = await submit(db, tenant_id), await submit(db, tenant_id)
    claim, kept_claim = await start(db, job.id), await start(db, kept.id)
    for n in (1, 2):
        await checkpoints.save(db, job.id, claim.attempt, _checkpoint(n), BOX)
    await checkpoints.save(db, kept.id, kept_claim.attempt, _checkpoint(1), BOX)
    assert await checkpoints.delete_all(db, job.id) == 2
    assert await _rows(db, job.id) == []
    assert await checkpoints.newest(db, job.id, BOX) == checkpoints.Opened(None, 0)
    assert len(await _rows(db, kept.id)) == 1
    assert await checkpoints.delete_all(db, job.id) == 0


async def test_completing_the_job_deletes_its_checkpoints(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    for n in (1, 2):
        await checkpoints.save(db, job.id, claim.attempt, _checkpoint(n), BOX)
    moved = await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT)
    assert moved is not None and moved.row["status"] == "completed"
    assert await _rows(db, job.id) == []


async def test_failing_the_job_keeps_its_checkpoints(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    await checkpoints.save(db, job.id, claim.attempt, _checkpoint(1), BOX)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=LLM_DOWN)
    assert len(await _rows(db, job.id)) == 1  # a retry resumes from it


async def test_deleting_the_job_deletes_its_checkpoints(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    await checkpoints.save(db, job.id, claim.attempt, _checkpoint(1), BOX)
    await db.execute("DELETE FROM jobs WHERE id = $1", job.id)
    assert await db.fetchval("SELECT count(*) FROM job_checkpoints") == 0


# --- pause ---


async def test_pause_parks_the_job_for_a_person_and_frees_its_slot(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db, max_running_jobs=1)
    job, waiting = await submit(db, tenant_id), await submit(db, tenant_id)
    claim = await start(db, job.id, worker="w7")
    parked = await job_attempts.start_attempt(db, waiting.id, "w1", 10)
    assert isinstance(parked, job_attempts.NotStarted) and parked.retry_in is None

    before = await db.fetchval("SELECT now()")
    moved = await job_attempts.pause(db, claim, _asked(InputDefault.REJECT), waits_s=300)
    assert moved is not None
    assert moved.unparked == waiting.id  # the slot the pause freed is handed on
    assert moved.after == jobs.AfterCommit((jobs.ToQueue(waiting.id, jobs.Queueing.QUEUE),))
    assert moved.row["status"] == "awaiting_input" and moved.row["worker_id"] is None
    assert moved.row["finished_at"] is None

    got = await jobs.get(db, Owner(tenant_id), job.id)
    assert got is not None and got.status == "awaiting_input" and got.worker_id is None
    [attempt] = got.attempts
    assert attempt.outcome == "awaiting_input" and attempt.finished_at is not None
    asked = got.input_request
    assert asked is not None
    assert (asked.task, asked.task_index, asked.output, asked.prompt, asked.default_action) == (
        "review_task",
        2,
        "a draft to review",
        "Is this right?",
        InputDefault.REJECT,
    )
    waits = asked.expires_at - asked.asked_at
    assert abs(waits - timedelta(seconds=300)) < timedelta(seconds=1)
    assert abs(asked.asked_at - before) < timedelta(seconds=5)
    expires_at = await db.fetchval("SELECT input_expires_at FROM jobs WHERE id = $1", job.id)
    assert expires_at == asked.expires_at

    assert await event_types(db, job.id) == ["job.started", "job.input_required"]
    data = await _event_data(db, job.id, "job.input_required")
    assert data["status"] == "awaiting_input"
    assert data["input_request"]["task"] == "review_task"
    assert data["input_request"]["task_index"] == 2
    assert data["input_request"]["default_action"] == "reject"

    # The tenant's slot is free: the parked job starts now.
    await start(db, waiting.id)


async def test_pause_bounds_the_output_it_shows(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    asked = job_attempts.InputAsked("t", 1, "x" * 500, "ok?", InputDefault.APPROVE)
    moved = await job_attempts.pause(db, claim, asked, 60, max_output_bytes=100)
    assert moved is not None and len(moved.row["input_request"]["output"]) == 100


async def test_a_stale_attempt_cannot_pause(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    first = await start(db, job.id)
    await job_attempts.end_attempt(db, first, AttemptOutcome.LOST, error=LLM_DOWN, retry_in=0)
    await start(db, job.id)
    assert await job_attempts.pause(db, first, _asked(), 60) is None
    assert await status_of(db, job.id) == "running"
    assert "job.input_required" not in await event_types(db, job.id)


async def test_a_paused_attempt_cannot_pause_again_or_end(db: asyncpg.Pool) -> None:
    _, job_id, claim = await _paused(db)
    assert await job_attempts.pause(db, claim, _asked(), 60) is None
    assert (
        await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT) is None
    )
    assert await job_attempts.heartbeat(db, claim) == (False, False)
    assert await status_of(db, job_id) == "awaiting_input"


# --- answer ---


async def test_an_answer_sends_the_job_back_to_pending_with_it(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db)
    answer = InputAnswer(feedback="make it shorter", approve=False)
    answered = await jobs.answer_input(db, Owner(tenant_id), job_id, answer)
    assert answered.outcome is jobs.AnswerOutcome.ANSWERED
    assert answered.after == jobs.AfterCommit((jobs.ToQueue(job_id, jobs.Queueing.QUEUE),))
    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row is not None and row["status"] == "pending"
    stored = {"feedback": "make it shorter", "approve": False, "task_index": 2, "by": "person"}
    assert row["input_answer"] == stored
    assert row["input_request"] is None and row["input_expires_at"] is None
    assert row["uncounted_attempts"] == row["attempt"] == 1
    assert (await event_types(db, job_id))[-1] == "job.input_received"

    again = await jobs.answer_input(db, Owner(tenant_id), job_id, InputAnswer())
    assert again == jobs.Answered(jobs.AnswerOutcome.NOT_AWAITING)

    claim = await start(db, job_id)
    assert claim.attempt == 2 and claim.counted_attempt == 1
    assert claim.retries_left == claim.max_retries
    assert claim.answer == stored
    assert (await event_types(db, job_id))[-2:] == ["job.input_received", "job.started"]


async def test_only_the_owner_may_answer(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db)
    other = await tenant(db)
    for owner in (Owner(other), Owner(tenant_id, livemode=False)):
        answered = await jobs.answer_input(db, owner, job_id, InputAnswer())
        assert answered == jobs.Answered(jobs.AnswerOutcome.NOT_FOUND)
    unknown = await jobs.answer_input(db, Owner(tenant_id), "job_unknown", InputAnswer())
    assert unknown.outcome is jobs.AnswerOutcome.NOT_FOUND
    assert await status_of(db, job_id) == "awaiting_input"


async def test_a_job_that_never_asked_is_not_awaiting(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    answered = await jobs.answer_input(db, Owner(tenant_id), job.id, InputAnswer())
    assert answered == jobs.Answered(jobs.AnswerOutcome.NOT_AWAITING)
    await start(db, job.id)
    answered = await jobs.answer_input(db, Owner(tenant_id), job.id, InputAnswer())
    assert answered == jobs.Answered(jobs.AnswerOutcome.NOT_AWAITING)


async def test_of_two_answers_at_once_one_is_taken(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db)
    owner = Owner(tenant_id)
    outcomes = await asyncio.gather(
        jobs.answer_input(db, owner, job_id, InputAnswer(feedback="first")),
        jobs.answer_input(db, owner, job_id, InputAnswer(feedback="second")),
    )
    kinds = sorted(o.outcome for o in outcomes)
    assert kinds == [jobs.AnswerOutcome.ANSWERED, jobs.AnswerOutcome.NOT_AWAITING]
    assert (await event_types(db, job_id)).count("job.input_received") == 1


async def test_a_second_pause_spends_the_first_answer(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db)
    await jobs.answer_input(db, Owner(tenant_id), job_id, InputAnswer(feedback="redo"))
    claim = await start(db, job_id)
    assert claim.answer is not None
    moved = await job_attempts.pause(db, claim, _asked(index=3), 60)
    assert moved is not None and moved.row["input_answer"] is None
    await jobs.answer_input(db, Owner(tenant_id), job_id, InputAnswer())
    claim = await start(db, job_id)
    assert claim.answer == {"feedback": "", "approve": True, "task_index": 3, "by": "person"}
    assert claim.counted_attempt == 1


# --- expiry ---


async def test_an_expired_approve_resumes_the_job_as_approved(db: asyncpg.Pool) -> None:
    _, job_id, _ = await _paused(db, default=InputDefault.APPROVE)
    await _overdue(db, job_id)
    after = await _expire(db)
    assert after.job_ids == [job_id]
    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row is not None and row["status"] == "pending"
    assert row["input_answer"] == {
        "feedback": "",
        "approve": True,
        "task_index": 2,
        "by": "timeout",
    }
    assert row["input_request"] is None
    assert (await event_types(db, job_id))[-1] == "job.input_received"
    claim = await start(db, job_id)
    assert claim.answer is not None and claim.answer["by"] == "timeout"


async def test_an_expired_reject_cancels_the_job(db: asyncpg.Pool) -> None:
    _, job_id, _ = await _paused(db, default=InputDefault.REJECT)
    await _overdue(db, job_id)
    after = await _expire(db)
    assert after.job_ids == []
    assert [(c.status, c.ran_s) for c in after.counts if isinstance(c, jobs.Finished)] == [
        (JobStatus.CANCELLED, None)
    ]
    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row is not None and row["status"] == "cancelled" and row["finished_at"] is not None
    assert row["input_request"] is None and row["input_expires_at"] is None
    assert (await event_types(db, job_id))[-1] == "job.cancelled"


async def test_an_expired_fail_fails_the_job_with_input_timeout(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db, default=InputDefault.FAIL)
    await _overdue(db, job_id)
    after = await _expire(db)
    assert after.job_ids == []
    assert [c.status for c in after.counts if isinstance(c, jobs.Finished)] == [JobStatus.FAILED]
    got = await jobs.get(db, Owner(tenant_id), job_id)
    assert got is not None and got.status == "failed" and got.error is not None
    assert got.error.code == ErrorCode.INPUT_TIMEOUT and "review_task" in got.error.message
    assert got.input_request is None
    assert (await event_types(db, job_id))[-1] == "job.failed"
    data = await _event_data(db, job_id, "job.failed")
    assert data["error"]["code"] == "INPUT_TIMEOUT"


async def test_a_wait_not_over_is_left_alone(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    _, waiting_id, _ = await _paused(db, tenant_id, default=InputDefault.FAIL, waits_s=600)
    _, due_id, _ = await _paused(db, tenant_id, default=InputDefault.FAIL, waits_s=600)
    await _overdue(db, due_id)
    await _expire(db)
    assert await status_of(db, waiting_id) == "awaiting_input"
    assert await status_of(db, due_id) == "failed"
    assert await _expire(db) == jobs.AfterCommit()  # nothing more is due


async def test_an_answered_job_does_not_expire(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db, default=InputDefault.FAIL)
    await _overdue(db, job_id)
    await jobs.answer_input(db, Owner(tenant_id), job_id, InputAnswer())
    assert await _expire(db) == jobs.AfterCommit()
    assert await status_of(db, job_id) == "pending"


# --- cancel ---


async def test_cancelling_a_job_awaiting_input_cancels_it_at_once(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db)
    cancel = await jobs.request_cancel(db, Owner(tenant_id), job_id)
    assert cancel.outcome is jobs.CancelOutcome.CANCELLED
    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row is not None and row["status"] == "cancelled" and row["finished_at"] is not None
    assert row["input_request"] is None and row["input_expires_at"] is None
    assert (await event_types(db, job_id))[-1] == "job.cancelled"
    answered = await jobs.answer_input(db, Owner(tenant_id), job_id, InputAnswer())
    assert answered.outcome is jobs.AnswerOutcome.NOT_AWAITING
    assert await _expire(db) == jobs.AfterCommit()


# --- resume ---


async def test_record_resume_marks_the_attempt_and_owes_job_resumed(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    first = await start(db, job.id)
    await job_attempts.end_attempt(db, first, AttemptOutcome.LOST, error=LLM_DOWN, retry_in=0)
    second = await start(db, job.id)
    assert await job_attempts.record_resume(db, second, "write_task", 2) is True
    got = await jobs.get(db, Owner(tenant_id), job.id)
    assert got is not None
    assert [(a.number, a.resumed_from) for a in got.attempts] == [(1, None), (2, "write_task")]
    assert (await event_types(db, job.id))[-1] == "job.resumed"
    data = await _event_data(db, job.id, "job.resumed")
    assert data == {"job_id": job.id, "attempt": 2, "after_task": "write_task", "tasks_done": 2}
    # The first attempt is no longer the job's: nothing changes, nothing is owed.
    assert await job_attempts.record_resume(db, first, "other_task", 1) is False
    resumed = await db.fetch(
        "SELECT number, resumed_from FROM job_attempts WHERE job_id = $1 ORDER BY number", job.id
    )
    assert [(r["number"], r["resumed_from"]) for r in resumed] == [(1, None), (2, "write_task")]
    assert (await event_types(db, job.id)).count("job.resumed") == 1


async def test_record_resume_of_an_ended_attempt_is_refused(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=LLM_DOWN)
    assert await job_attempts.record_resume(db, claim, "t", 1) is False
    assert "job.resumed" not in await event_types(db, job.id)


# --- restart ---


async def _failed_with_checkpoints(db: asyncpg.Pool) -> tuple[str, str]:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id, max_retries=0)
    claim = await start(db, job.id)
    for n in (1, 2):
        await checkpoints.save(db, job.id, claim.attempt, _checkpoint(n), BOX)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=LLM_DOWN)
    return tenant_id, job.id


async def test_restart_from_start_deletes_the_checkpoints(db: asyncpg.Pool) -> None:
    tenant_id, job_id = await _failed_with_checkpoints(db)
    restarted = await jobs.restart(db, Owner(tenant_id), job_id, from_start=True)
    assert isinstance(restarted, jobs.Restarted) and restarted.job.status == "pending"
    assert await _rows(db, job_id) == []


async def test_restart_keeps_the_checkpoints(db: asyncpg.Pool) -> None:
    tenant_id, job_id = await _failed_with_checkpoints(db)
    restarted = await jobs.restart(db, Owner(tenant_id), job_id)
    assert isinstance(restarted, jobs.Restarted)
    assert [r["tasks_done"] for r in await _rows(db, job_id)] == [1, 2]
    opened = await checkpoints.newest(db, job_id, BOX)
    assert opened.checkpoint is not None and opened.checkpoint.tasks_done == 2


async def test_a_refused_restart_from_start_keeps_the_checkpoints(db: asyncpg.Pool) -> None:
    _, job_id = await _failed_with_checkpoints(db)
    other = await tenant(db)
    assert await jobs.restart(db, Owner(other), job_id, from_start=True) is None
    assert len(await _rows(db, job_id)) == 2


async def test_restart_clears_the_answer(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db)
    await jobs.answer_input(db, Owner(tenant_id), job_id, InputAnswer(feedback="go"))
    claim = await start(db, job_id)
    assert claim.answer is not None
    await job_attempts.end_attempt(db, claim, AttemptOutcome.FAILED, error=LLM_DOWN)
    restarted = await jobs.restart(db, Owner(tenant_id), job_id)
    assert isinstance(restarted, jobs.Restarted)
    assert await db.fetchval("SELECT input_answer FROM jobs WHERE id = $1", job_id) is None
    again = await start(db, job_id)
    assert again.answer is None


async def test_restart_of_a_cancelled_paused_job_asks_nothing(db: asyncpg.Pool) -> None:
    tenant_id, job_id, _ = await _paused(db)
    await jobs.request_cancel(db, Owner(tenant_id), job_id)
    restarted = await jobs.restart(db, Owner(tenant_id), job_id)
    assert isinstance(restarted, jobs.Restarted)
    assert restarted.job.input_request is None
    claim = await start(db, job_id)
    assert claim.answer is None


# --- the state machine ---


@pytest.mark.parametrize("target", ["completed", "running"])
async def test_postgres_refuses_illegal_moves_from_awaiting_input(
    db: asyncpg.Pool, target: str
) -> None:
    _, job_id, _ = await _paused(db)
    with pytest.raises(asyncpg.CheckViolationError, match="not a move of the job state"):
        await db.execute("UPDATE jobs SET status = $2 WHERE id = $1", job_id, target)
    assert await status_of(db, job_id) == "awaiting_input"


@pytest.mark.parametrize("source", ["pending", "completed"])
async def test_postgres_refuses_illegal_moves_to_awaiting_input(
    db: asyncpg.Pool, source: str
) -> None:
    job = await submit(db, await tenant(db))
    if source == "completed":
        claim = await start(db, job.id)
        await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT)
    with pytest.raises(asyncpg.CheckViolationError, match="not a move of the job state"):
        await db.execute("UPDATE jobs SET status = 'awaiting_input' WHERE id = $1", job.id)
    assert await status_of(db, job.id) == source


async def test_postgres_takes_the_new_outcome_and_error_code(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    await start(db, job.id)
    await db.execute("UPDATE job_attempts SET outcome = 'awaiting_input' WHERE job_id = $1", job.id)
    await db.execute(
        'UPDATE jobs SET error = \'{"code": "INPUT_TIMEOUT", "message": ""}\' WHERE id = $1',
        job.id,
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE jobs SET input_default = 'maybe' WHERE id = $1", job.id)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE jobs SET input_timeout_s = 0 WHERE id = $1", job.id)


# --- submitting ---


async def test_a_job_submitted_with_input_settings_keeps_them(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    new = job_submission.NewJob(
        tenant_id,
        "echo",
        {"message": "m"},
        {},
        None,
        60,
        0,
        input_timeout_s=60,
        input_default=InputDefault.APPROVE,
    )
    inserted = await job_submission.insert(db, new, default_max_pending=100, default_cap=10)
    assert isinstance(inserted, job_submission.Inserted) and inserted.created
    assert inserted.job.input_timeout == 60
    assert inserted.job.input_default == InputDefault.APPROVE
    got = await jobs.get(db, Owner(tenant_id), inserted.job.id)
    assert got is not None
    assert (got.input_timeout, got.input_default) == (60, InputDefault.APPROVE)
    claim = await start(db, inserted.job.id)
    assert (claim.input_timeout_s, claim.input_default) == (60, InputDefault.APPROVE)


async def test_a_job_submitted_without_input_settings_has_none(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    assert (job.input_timeout, job.input_default) == (None, None)
    got = await jobs.get(db, Owner(tenant_id), job.id)
    assert got is not None and (got.input_timeout, got.input_default) == (None, None)
    assert got.input_request is None
    claim = await start(db, job.id)
    assert (claim.input_timeout_s, claim.input_default, claim.answer) == (None, None, None)


async def test_a_replayed_submission_keeps_the_first_input_settings(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)

    def new(default: InputDefault) -> job_submission.NewJob:
        return job_submission.NewJob(
            tenant_id,
            "echo",
            {"message": "m"},
            {},
            None,
            60,
            0,
            idempotency_key="same",
            input_timeout_s=30,
            input_default=default,
        )

    first = await job_submission.insert(
        db, new(InputDefault.FAIL), default_max_pending=100, default_cap=10
    )
    again = await job_submission.insert(
        db, new(InputDefault.REJECT), default_max_pending=100, default_cap=10
    )
    assert isinstance(first, job_submission.Inserted) and isinstance(again, job_submission.Inserted)
    assert not again.created and again.job.id == first.job.id
    assert (again.job.input_timeout, again.job.input_default) == (30, InputDefault.FAIL)
