"""The Python client (`crewq_client`) against a live platform (API, worker, dispatcher,
fake LLM): jobs end to end with the sync and the async client, typed errors, paging,
idempotent submission, cancel and retry, webhook endpoints and a real signed delivery."""

import asyncio
import uuid

import pytest
from crewq_client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    ValidationFailed,
    WaitTimeout,
    verify_event,
)

from schemas.errors import ApiErrorCode
from schemas.events import EventType
from schemas.jobs import JobStatus, ResumeFrom
from tests.fakes import Receiver
from tests.harness import Platform


def _client(stack: Platform) -> Client:
    return Client(stack.base_url, stack.key)


async def test_the_sync_client_runs_a_job_end_to_end(stack: Platform) -> None:
    def run() -> tuple[str, JobStatus, str, list[EventType]]:
        with _client(stack) as crewq:
            job = crewq.jobs.submit("echo", {"message": "hello from sync"})
            assert job.status in (JobStatus.PENDING, JobStatus.RUNNING)
            done = crewq.jobs.wait(job.id, timeout=60)
            assert done.result is not None
            history = [e.type for e in crewq.jobs.event_history(job.id)]
            return done.id, done.status, done.result.raw, history

    # A sync client blocks: off the event loop the API's test harness runs on.
    job_id, status, raw, history = await asyncio.to_thread(run)
    assert job_id.startswith("job_") and status is JobStatus.COMPLETED and raw
    assert history[0] is EventType.JOB_STARTED and history[-1] is EventType.JOB_COMPLETED


async def test_the_async_client_runs_a_job_and_follows_its_events_live(stack: Platform) -> None:
    async with AsyncClient(stack.base_url, stack.key) as crewq:
        job = await crewq.jobs.submit("research", {"topic": "async clients"})
        live = [e async for e in crewq.jobs.events(job.id)]
        done = await crewq.jobs.wait(job.id, timeout=60)
        stored = [e async for e in crewq.jobs.event_history(job.id)]
    assert done.status is JobStatus.COMPLETED and done.result is not None
    assert [e.type for e in live].count(EventType.TASK_COMPLETED) == 2
    assert live[-1].type is EventType.JOB_COMPLETED
    assert [e.id for e in live] == [e.id for e in stored]  # every event, once, in order


async def test_errors_are_typed_with_code_details_and_request_id(stack: Platform) -> None:
    async with AsyncClient(stack.base_url, stack.key) as crewq:
        with pytest.raises(ValidationFailed) as unknown:
            await crewq.jobs.submit("no-such-crew", {})
        with pytest.raises(ValidationFailed) as missing:
            await crewq.jobs.submit("echo", {})
        with pytest.raises(BadRequest) as malformed:
            await crewq.jobs.submit("echo", {"message": "x"}, timeout=0)
        with pytest.raises(NotFound) as absent:
            await crewq.jobs.get("job_nope")
    error = unknown.value
    assert error.status == 422 and error.code is ApiErrorCode.UNKNOWN_CREW
    assert "echo" in error.details["available"]
    assert error.request_id.startswith("req_"), error.request_id
    assert missing.value.code is ApiErrorCode.MISSING_INPUTS
    assert missing.value.details["missing"] == ["message"]
    assert malformed.value.code is ApiErrorCode.VALIDATION_ERROR
    assert "timeout" in malformed.value.details
    assert absent.value.status == 404 and absent.value.code is ApiErrorCode.JOB_NOT_FOUND


async def test_list_pages_on_its_own_and_submit_is_idempotent(stack: Platform) -> None:
    tag = uuid.uuid4().hex
    async with AsyncClient(stack.base_url, stack.key) as crewq:
        made = [
            await crewq.jobs.submit("echo", {"message": str(i)}, metadata={"batch": tag})
            for i in range(5)
        ]
        listed = [j async for j in crewq.jobs.list(metadata={"batch": tag}, page_size=2)]
        first_two = [j async for j in crewq.jobs.list(metadata={"batch": tag}, limit=2)]
        key = f"order-{tag}"
        once = await crewq.jobs.submit("echo", {"message": "once"}, idempotency_key=key)
        again = await crewq.jobs.submit("echo", {"message": "once"}, idempotency_key=key)
        with pytest.raises(Conflict) as reused:
            await crewq.jobs.submit("echo", {"message": "other"}, idempotency_key=key)
        batch = await crewq.jobs.batch([made[0].id, "job_nope", made[1].id])
    # Three pages of two, newest first, each job once.
    assert [j.id for j in listed] == [j.id for j in reversed(made)]
    assert [j.id for j in first_two] == [made[4].id, made[3].id]
    assert again.id == once.id
    assert reused.value.code is ApiErrorCode.IDEMPOTENCY_KEY_REUSED
    assert [j.id for j in batch.data] == [made[0].id, made[1].id]


async def test_cancel_retry_and_wait_timeout(stack: Platform) -> None:
    async with AsyncClient(stack.base_url, stack.key) as crewq:
        later = await crewq.jobs.submit("echo", {"message": "later"}, delay=3600)
        assert later.status is JobStatus.SCHEDULED
        with pytest.raises(WaitTimeout) as gave_up:
            await crewq.jobs.wait(later.id, timeout=0.5)
        cancelled = await crewq.jobs.cancel(later.id)
        with pytest.raises(Conflict) as finished:
            await crewq.jobs.cancel(later.id)
        retried = await crewq.jobs.retry(later.id, from_=ResumeFrom.START)
        done = await crewq.jobs.wait(later.id, timeout=60)
    assert gave_up.value.job.status is JobStatus.SCHEDULED
    assert cancelled.status is JobStatus.CANCELLED
    assert finished.value.code is ApiErrorCode.JOB_ALREADY_FINISHED
    assert retried.status in (JobStatus.PENDING, JobStatus.RUNNING)
    assert done.status is JobStatus.COMPLETED


async def test_webhook_endpoints_and_a_real_delivery_verified(
    stack: Platform, receiver: Receiver
) -> None:
    name = f"client-{uuid.uuid4().hex[:8]}"
    receiver.configure(name)
    async with AsyncClient(stack.base_url, stack.key) as crewq:
        made = await crewq.webhooks.create(receiver.url(name), description="client test")
        receiver.configure(name, secrets=[made.secret])
        assert made.id in [e.id async for e in crewq.webhooks.list()]
        tested = await crewq.webhooks.test(made.id)
        disabled = await crewq.webhooks.disable(made.id)
        enabled = await crewq.webhooks.enable(made.id)
        rotated = await crewq.webhooks.rotate_secret(made.id, grace_seconds=60)
        sent = [d async for d in crewq.webhooks.deliveries(made.id)]
        await crewq.webhooks.delete(made.id)
        with pytest.raises(NotFound):
            await crewq.webhooks.get(made.id)
    assert tested.succeeded and tested.status_code == 200
    assert not disabled.enabled and enabled.enabled
    assert rotated.secret.startswith("whsec_") and rotated.secret != made.secret
    assert [d.event_type for d in sent] == ["webhook.test"]
    delivery = (await receiver.wait_for(name, 1))[0]
    event = verify_event(made.secret, delivery.headers, delivery.body)
    assert event.type is EventType.WEBHOOK_TEST and event.id == tested.event_id
