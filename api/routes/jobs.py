"""`/v1/jobs`: submit, read, list, cancel and retry jobs; follow one live."""

import asyncio
import contextlib
import copy
import logging
from typing import Any

import orjson
from aiohttp import web

from api.context import CREWS, DB, REDIS, SETTINGS, URLS
from api.errors import ApiError, Code, invalid
from api.notifications import HUB
from api.operations import (
    CURSOR,
    LIMIT,
    NO_NUL,
    Call,
    Link,
    Operation,
    Param,
    datetime_query,
    enum_query,
    operation,
    text_header,
    text_query,
)
from api.responses import json_response
from api.routes.stream import hold_stream_slot, renew
from api.stream_slots import StreamSlot
from schemas.account import Scope
from schemas.events import Event, EventList
from schemas.jobs import (
    InputAnswer,
    Job,
    JobBatch,
    JobBatchRead,
    JobCreate,
    JobList,
    JobRetry,
    JobStatus,
    ResumeFrom,
)
from schemas.webhooks import DeliveryList
from shared.domain import after_commit, submissions
from shared.runtime import metrics, queue
from shared.runtime.db import is_connection_error
from shared.runtime.tracing import current_traceparent
from shared.store import deliveries, events, job_submission, jobs, usage
from shared.store.events import JOB_EVENTS_CHANNEL

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

IDEMPOTENCY_KEY = text_header(
    "Idempotency-Key", "Submitting again with the same key and body answers the first job (200)."
)
# Read even when the answer is a page, not a stream: refused now, not deep in a query.
LAST_EVENT_ID = text_header("Last-Event-ID", "Resume after this event.")
STATUS = enum_query("status", JobStatus, "Only jobs in this state.")
CREW = text_query("crew", "Only jobs of this crew.")
CREATED_AFTER = datetime_query("created_after", "Only jobs created after this instant.")
CREATED_BEFORE = datetime_query("created_before", "Only jobs created before this instant.")
AFTER = text_query(
    "after",
    "Only events after this event id (a page's `next_cursor`). A stream starts"
    " after it too, unless `Last-Event-ID` is sent.",
)

# A comment line this often keeps idle proxies from closing a quiet stream.
_KEEPALIVE_S = 15.0
# How often a quiet stream looks whether its client is still there.
_CLIENT_CHECK_S = 1.0
# When a tenant may try again to submit, or to open a stream, once over its bound.
_RETRY_AFTER_S = "30"


def _metadata_filter(request: web.Request, name: str) -> dict[str, str]:
    """`metadata[team]=red&metadata[env]=prod`: jobs whose metadata holds every pair."""
    pairs: dict[str, str] = {}
    for given, value in request.query.items():
        if given.startswith(f"{name}[") and given.endswith("]"):
            key = given[len(name) + 1 : -1]
            if not key or key in pairs:
                raise invalid(given, "give each metadata key once, as metadata[key]=value")
            pairs[key] = value
        elif given.startswith(name):
            raise invalid(given, "filter metadata as metadata[key]=value")
    return pairs


METADATA = Param(
    "metadata",
    {
        "type": "object",
        "propertyNames": {"minLength": 1, "pattern": NO_NUL},
        "additionalProperties": {"type": "string", "pattern": NO_NUL},
    },
    "metadata[key]=value: only jobs whose metadata holds every such pair.",
    _metadata_filter,
    style="deepObject",
)


def _not_found(job_id: str) -> ApiError:
    return ApiError(Code.JOB_NOT_FOUND, f"no job {job_id!r} for this tenant")


def _refusal(refused: submissions.Refused) -> ApiError:
    match refused:
        case submissions.UnknownCrew(crew=crew, available=available):
            return ApiError(Code.UNKNOWN_CREW, f"no crew named {crew!r}", {"available": available})
        case submissions.MissingInputs(crew=crew, missing=missing, required=required):
            return ApiError(
                Code.MISSING_INPUTS,
                f"crew {crew!r} needs inputs: {', '.join(missing)}",
                {"missing": missing, "required": required},
            )
        case submissions.StartInThePast(run_at=run_at):
            return invalid(
                "run_at",
                f"{run_at.isoformat()} has passed; give a time to come (or leave it out to"
                " start as soon as possible)",
            )
        case submissions.TooLarge(field=field, size=size, limit=limit):
            return invalid(
                field,
                f"inputs and metadata take {size} bytes as JSON; a job may hold at most"
                f" {limit} (CREWQ_JOB_MAX_INPUT_BYTES)",
            )
        case submissions.InvalidWebhookUrl(reason=reason):
            return ApiError(
                Code.INVALID_WEBHOOK_URL, f"webhook_url refused: {reason}", {"reason": reason}
            )
        case submissions.IdempotencyKeyReused(job_id=job_id):
            return ApiError(
                Code.IDEMPOTENCY_KEY_REUSED,
                "this Idempotency-Key was used with a different request body",
                {"job_id": job_id},
            )
        case usage.QuotaExceeded(limit=limit, resets_at=resets_at):
            return ApiError(
                Code.QUOTA_EXCEEDED,
                f"this tenant has created its {limit} jobs for the month; the quota resets"
                f" at {resets_at.isoformat()} (a test key's jobs count against no quota)",
                {"limit": limit, "resets_at": resets_at.isoformat()},
            )
        case job_submission.ConcurrencyBusy(limit=limit):
            return ApiError(
                Code.CONCURRENCY_KEY_BUSY,
                f"{limit} of this key's jobs are already pending or running (strategy reject)",
                {"limit": limit},
            )
        case job_submission.TooManyPending(limit=limit):
            return ApiError(
                Code.TOO_MANY_PENDING_JOBS,
                f"this tenant already has {limit} pending jobs, as many as it may;"
                " submit more once some have started",
                {"limit": limit},
                headers={"Retry-After": _RETRY_AFTER_S},
            )


# A schedule's job is refused as a submitted one, and documented so (api/routes/schedules.py).
refusal = _refusal


def _one_variant_per_crew(app: web.Application, schema: dict[str, Any]) -> dict[str, Any]:
    """The body as the registered crews take it: one variant per crew, naming it and
    requiring the inputs it needs. The registry is read once, at start, as the document
    is built: a crew the API does not know is refused (UNKNOWN_CREW), as are its missing
    inputs (MISSING_INPUTS), and the document says so."""
    variants = []
    for name, spec in sorted(app[CREWS].crews.items()):
        variant = copy.deepcopy(schema)
        variant["title"] = f"JobCreate ({name})"
        variant["properties"]["crew"] = {"type": "string", "const": name}
        if spec.inputs:
            inputs = variant["properties"]["inputs"]
            variant["properties"]["inputs"] = {**inputs, "required": list(spec.inputs)}
            variant["required"] = [*variant.get("required", []), "inputs"]
        variants.append(variant)
    return {"anyOf": variants} if variants else schema


one_variant_per_crew = _one_variant_per_crew


# Where a job's answer leads: the operations on that job.
_ON_A_JOB = [
    Link(op)
    for op in (
        "get_job",
        "cancel_job",
        "retry_job",
        "answer_job_input",
        "job_events",
        "job_deliveries",
    )
]


@routes.post("/v1/jobs")
@operation(
    Operation(
        "Submit a job",
        Scope.JOBS_WRITE,
        {202: Job, 200: Job},
        body=JobCreate,
        headers=[IDEMPOTENCY_KEY],
        errors=[
            Code.UNKNOWN_CREW,
            Code.MISSING_INPUTS,
            Code.INVALID_WEBHOOK_URL,
            Code.QUOTA_EXCEEDED,
            Code.IDEMPOTENCY_KEY_REUSED,
            Code.TOO_MANY_PENDING_JOBS,
            Code.CONCURRENCY_KEY_BUSY,
        ],
        links=_ON_A_JOB,
        refine_body=_one_variant_per_crew,
        tags=["jobs"],
    )
)
async def create_job(request: web.Request, call: Call[JobCreate]) -> web.Response:
    answer = await submissions.submit(
        request.app[DB],
        request.app[CREWS],
        request.app[SETTINGS],
        request.app[URLS],
        call.principal,
        call.body,
        raw_body=call.raw_body,
        idempotency_key=call[IDEMPOTENCY_KEY],
        traceparent=current_traceparent(),
    )
    if not isinstance(answer, submissions.Submitted):
        raise _refusal(answer)
    job = answer.job
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not answer.created:
        headers["Idempotent-Replayed"] = "true"
        return json_response(job, status=200, headers=headers)
    metrics.job_submitted(job.crew)
    await after_commit.carry_out(answer.after, request.app[REDIS])
    for stopping in answer.cleared.stopping if answer.cleared else ():
        await _tell_worker_to_stop(request, stopping)
    return json_response(job, status=202, headers=headers)


@routes.get("/v1/jobs")
@operation(
    Operation(
        "List jobs, newest first",
        Scope.JOBS_READ,
        {200: JobList},
        query=[STATUS, CREW, CREATED_AFTER, CREATED_BEFORE, METADATA, LIMIT, CURSOR],
        tags=["jobs"],
    )
)
async def list_jobs(request: web.Request, call: Call[None]) -> web.Response:
    """Newest first; narrowed by status, crew, creation time and `metadata[key]=value`."""
    page, has_more = await jobs.page(
        request.app[DB],
        call.principal.owner,
        jobs.JobFilter(
            status=call[STATUS],
            crew=call[CREW],
            created_after=call[CREATED_AFTER],
            created_before=call[CREATED_BEFORE],
            metadata=call[METADATA],
        ),
        before=call[CURSOR],
        limit=call[LIMIT],
        max_bytes=request.app[SETTINGS].api_max_page_bytes,
    )
    return json_response(JobList.of(page, has_more))


@routes.post("/v1/jobs/batch")
@operation(
    Operation(
        "Read up to 100 jobs at once",
        Scope.JOBS_READ,
        {200: JobBatch},
        body=JobBatchRead,
        tags=["jobs"],
    )
)
async def batch_jobs(request: web.Request, call: Call[JobBatchRead]) -> web.Response:
    """Up to 100 jobs in one call: the caller's among `ids`, in the order asked; ids that
    are not the caller's jobs are simply absent."""
    found, omitted = await jobs.many(
        request.app[DB],
        call.principal.owner,
        call.body.ids,
        max_bytes=request.app[SETTINGS].api_max_page_bytes,
    )
    return json_response(JobBatch(data=found, omitted=omitted))


@routes.get("/v1/jobs/{job_id}")
@operation(
    Operation("Read a job", Scope.JOBS_READ, {200: Job}, errors=[Code.JOB_NOT_FOUND], tags=["jobs"])
)
async def get_job(request: web.Request, call: Call[None]) -> web.Response:
    job_id = request.match_info["job_id"]
    job = await jobs.get(request.app[DB], call.principal.owner, job_id)
    if job is None:
        raise _not_found(job_id)
    return json_response(job)


@routes.get("/v1/jobs/{job_id}/deliveries")
@operation(
    Operation(
        "The webhooks a job's events owed, with every attempt",
        Scope.JOBS_READ,
        {200: DeliveryList},
        query=[LIMIT, CURSOR],
        errors=[Code.JOB_NOT_FOUND],
        links=[Link("get_delivery", "/data/0/id"), Link("retry_delivery", "/data/0/id")],
        tags=["jobs"],
    )
)
async def job_deliveries(request: web.Request, call: Call[None]) -> web.Response:
    """The webhooks this job's events owed, newest first, with every attempt: how a client
    finds out why its `webhook_url` did not hear from crewq. Without `webhooks:manage`, the
    URLs of registered endpoints and what receivers answered are left out."""
    principal = call.principal
    job_id = request.match_info["job_id"]
    db = request.app[DB]
    if not await jobs.exists(db, principal.owner, job_id):
        raise _not_found(job_id)
    page, has_more = await deliveries.job_page(
        db, principal.owner, job_id, before=call[CURSOR], limit=call[LIMIT]
    )
    if not principal.may(Scope.WEBHOOKS_MANAGE):
        page = [d.without_receivers() for d in page]
    return json_response(DeliveryList.of(page, has_more))


def _sse(event: Event) -> bytes:
    data = orjson.dumps(event.model_dump(mode="json")).decode()
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


def _wants_stream(request: web.Request) -> bool:
    """Server-sent events when the client accepts them (EventSource always sends this);
    JSON otherwise, as every other route answers."""
    return "text/event-stream" in request.headers.get("Accept", "").lower()


@routes.get("/v1/jobs/{job_id}/events")
@operation(
    Operation(
        "A job's events, oldest first: a page of JSON, or live as server-sent events"
        " with `Accept: text/event-stream`",
        Scope.JOBS_READ,
        {200: EventList},
        query=[AFTER, LIMIT],
        headers=[LAST_EVENT_ID],
        errors=[Code.JOB_NOT_FOUND, Code.TOO_MANY_STREAMS],
        event_stream=True,
        tags=["jobs"],
    )
)
async def job_events(request: web.Request, call: Call[None]) -> web.StreamResponse:
    """JSON: a page of the job's events in the order they happened, after `after`, with
    `limit` and `has_more`. `Accept: text/event-stream`: server-sent events, the job's events
    so far (after `Last-Event-ID` when resuming, else after `after`), then each new one as
    it commits, until the job has ended (a job retried after an outcome streams on). Each
    tenant holds at most its bound of streams open at once."""
    principal, after = call.principal, call[AFTER]
    job_id = request.match_info["job_id"]
    db = request.app[DB]
    if not _wants_stream(request):
        if not await jobs.exists(db, principal.owner, job_id):
            raise _not_found(job_id)
        found = await events.page(
            db,
            job_id,
            after=after,
            limit=call[LIMIT],
            max_bytes=request.app[SETTINGS].api_max_page_bytes,
        )
        if found is None:
            raise invalid("after", f"no event {after!r} of job {job_id!r}")
        # One URL, two representations: caches must key on Accept.
        return json_response(EventList.of(*found), headers={"Vary": "Accept"})
    if not await jobs.exists(db, principal.owner, job_id):
        raise _not_found(job_id)
    async with hold_stream_slot(request, principal.tenant_id) as slot:
        return await _stream(request, job_id, call[LAST_EVENT_ID] or after, slot)


async def _stream(
    request: web.Request, job_id: str, last: str | None, slot: StreamSlot | None
) -> web.StreamResponse:
    db = request.app[DB]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "Vary": "Accept",
        }
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    wrote_at = loop.time()
    try:
        with request.app[HUB].watch(JOB_EVENTS_CHANNEL, job_id) as wake:
            while True:
                wake.clear()
                found, ended = await events.after(db, job_id, last)
                for event in found:
                    await response.write(_sse(event))
                    last, wrote_at = event.id, loop.time()
                if ended:
                    await response.write_eof()
                    return response
                while not wake.is_set():
                    # aiohttp does not cancel a handler whose client left: look every
                    # second, so a closed stream frees its slot now, not at its next write.
                    if request.transport is None or request.transport.is_closing():
                        raise ConnectionResetError("the client closed the stream")
                    await renew(slot)
                    if loop.time() - wrote_at >= _KEEPALIVE_S:
                        await response.write(b": keep-alive\n\n")
                        wrote_at = loop.time()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_CLIENT_CHECK_S):
                            await wake.wait()
    except ConnectionResetError:
        log.debug("event stream of %s: the client went away", job_id)
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        # The answer has begun: no error body can follow. The client resumes with
        # Last-Event-ID once the database is back.
        log.warning("event stream of %s ended: postgres unavailable (%s)", job_id, exc)
    return response


async def _tell_worker_to_stop(request: web.Request, job_id: str) -> None:
    """Broadcast a running job's cancel (its request is in Postgres already)."""
    try:
        await queue.publish_cancel(request.app[REDIS], job_id)
    except queue.REDIS_UNAVAILABLE as exc:
        # The worker's heartbeat sees the request in Postgres within seconds anyway.
        log.warning("cancel of %s not broadcast (%s)", job_id, exc)


@routes.post("/v1/jobs/{job_id}/cancel")
@operation(
    Operation(
        "Cancel a job (200: cancelled; 202: its crew is being stopped)",
        Scope.JOBS_CANCEL,
        {200: Job, 202: Job},
        errors=[Code.JOB_NOT_FOUND, Code.JOB_ALREADY_FINISHED],
        tags=["jobs"],
    )
)
async def cancel_job(request: web.Request, call: Call[None]) -> web.Response:
    principal = call.principal
    job_id = request.match_info["job_id"]
    db = request.app[DB]
    cancel = await jobs.request_cancel(db, principal.owner, job_id)
    await after_commit.carry_out(cancel.after, request.app[REDIS])
    outcome = cancel.outcome
    if outcome is jobs.CancelOutcome.NOT_FOUND:
        raise _not_found(job_id)
    if outcome is jobs.CancelOutcome.ALREADY_FINISHED:
        raise ApiError(Code.JOB_ALREADY_FINISHED, "the job has already finished; nothing to cancel")
    if outcome is jobs.CancelOutcome.REQUESTED:
        await _tell_worker_to_stop(request, job_id)
    job = await jobs.get(db, principal.owner, job_id)
    assert job is not None
    # 200: cancelled now (it was pending); 202: its worker is stopping the crew.
    return json_response(job, status=200 if outcome is jobs.CancelOutcome.CANCELLED else 202)


@routes.post("/v1/jobs/{job_id}/retry")
@operation(
    Operation(
        "Run a failed or cancelled job again (by default after its last finished task)",
        Scope.JOBS_CANCEL,
        {202: Job},
        body=JobRetry,
        body_optional=True,
        errors=[Code.JOB_NOT_FOUND, Code.JOB_NOT_RETRYABLE, Code.QUOTA_EXCEEDED],
        links=_ON_A_JOB,
        tags=["jobs"],
    )
)
async def retry_job(request: web.Request, call: Call[JobRetry]) -> web.Response:
    principal = call.principal
    job_id = request.match_info["job_id"]
    restarted = await jobs.restart(
        request.app[DB],
        principal.owner,
        job_id,
        principal.allowance.jobs_per_month,
        from_start=call.body.from_ is ResumeFrom.START,
        budget=call.body.budget,
    )
    if restarted is None:
        if not await jobs.exists(request.app[DB], principal.owner, job_id):
            raise _not_found(job_id)
        raise ApiError(Code.JOB_NOT_RETRYABLE, "only failed or cancelled jobs can be retried")
    if isinstance(restarted, usage.QuotaExceeded):
        raise _refusal(restarted)
    await after_commit.carry_out(restarted.after, request.app[REDIS])
    return json_response(restarted.job, status=202, headers={"Location": f"/v1/jobs/{job_id}"})


@routes.post("/v1/jobs/{job_id}/input")
@operation(
    Operation(
        "Answer a job that waits for a person's input (`awaiting_input`)",
        Scope.JOBS_WRITE,
        {202: Job},
        body=InputAnswer,
        errors=[Code.JOB_NOT_FOUND, Code.JOB_NOT_AWAITING_INPUT],
        links=_ON_A_JOB,
        tags=["jobs"],
    )
)
async def answer_job_input(request: web.Request, call: Call[InputAnswer]) -> web.Response:
    """The job goes back to pending and resumes from its checkpoint: with `approve: true`
    after the task under review, its answer standing; with `approve: false` at that task,
    done again with the feedback (and reviewed again)."""
    principal = call.principal
    job_id = request.match_info["job_id"]
    db = request.app[DB]
    answered = await jobs.answer_input(db, principal.owner, job_id, call.body)
    if answered.outcome is jobs.AnswerOutcome.NOT_FOUND:
        raise _not_found(job_id)
    if answered.outcome is jobs.AnswerOutcome.NOT_AWAITING:
        raise ApiError(
            Code.JOB_NOT_AWAITING_INPUT,
            "the job is not waiting for input (answered already, or it never asked)",
        )
    await after_commit.carry_out(answered.after, request.app[REDIS])
    job = await jobs.get(db, principal.owner, job_id)
    assert job is not None
    return json_response(job, status=202, headers={"Location": f"/v1/jobs/{job_id}"})
