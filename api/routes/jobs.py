"""`/v1/jobs`: submit, read, list, cancel and retry jobs."""

import asyncio
import hashlib
import logging

import orjson
from aiohttp import web

from api.auth import require
from api.bodies import parse, query_int, read_json
from api.context import CREWS, DB, REDIS, SETTINGS
from api.errors import ApiError
from api.job_events import HUB
from api.responses import json_response
from schemas.events import JOB_URL_EVENTS
from schemas.jobs import JobCreate, JobList, JobStatus
from schemas.webhooks import DeliveryList
from shared import endpoints, jobs, queue
from shared.tracing import current_traceparent
from shared.webhook_urls import UrlRefused, check_url

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

_OUTCOMES = frozenset(e.value for e in JOB_URL_EVENTS)
# A comment line this often keeps idle proxies from closing a quiet stream.
_KEEPALIVE_S = 15.0


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "JOB_NOT_FOUND", f"no job {job_id!r} for this tenant")


async def _enqueue(request: web.Request, job_id: str, *, now: bool = False) -> None:
    """Queue the job; `now` also pulls forward an entry arq still holds from an earlier run
    (a retry delay that was pending when the job was cancelled)."""
    try:
        if now:
            await queue.requeue_now(request.app[REDIS], job_id)
        else:
            await queue.enqueue(request.app[REDIS], job_id)
    except Exception as exc:
        # The job is safe in Postgres; the workers' reconciler queues it once Redis is back.
        log.warning("job %s stored but not queued yet (%s)", job_id, exc)


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    principal = require(request, "jobs:write")
    data, raw = await read_json(request)
    body = parse(JobCreate, data)
    spec = request.app[CREWS].get(body.crew)
    if spec is None:
        raise ApiError(
            422,
            "UNKNOWN_CREW",
            f"no crew named {body.crew!r}",
            {"available": sorted(request.app[CREWS].crews)},
        )
    missing = spec.missing_inputs(body.inputs)
    if missing:
        raise ApiError(
            422,
            "MISSING_INPUTS",
            f"crew {spec.name!r} needs inputs: {', '.join(missing)}",
            {"missing": missing, "required": spec.inputs},
        )
    settings = request.app[SETTINGS]
    if body.webhook_url:
        try:
            await check_url(
                body.webhook_url,
                allow_http=settings.webhook_allow_http,
                allow_private=settings.webhook_allow_private,
            )
        except UrlRefused as exc:
            raise ApiError(
                422, "INVALID_WEBHOOK_URL", f"webhook_url refused: {exc}", {"reason": str(exc)}
            ) from exc
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise ApiError(422, "VALIDATION_ERROR", "Idempotency-Key must be 1 to 255 characters")
    new = jobs.NewJob(
        tenant_id=principal.tenant_id,
        crew=spec.name,
        inputs=body.inputs,
        metadata=body.metadata,
        webhook_url=body.webhook_url,
        timeout_s=body.timeout or spec.default_timeout or settings.job_default_timeout,
        max_retries=body.max_retries
        if body.max_retries is not None
        else spec.default_max_retries
        if spec.default_max_retries is not None
        else settings.job_default_max_retries,
        idempotency_key=idempotency_key,
        request_hash=hashlib.sha256(raw).digest() if idempotency_key else None,
        traceparent=current_traceparent(),
    )
    db = request.app[DB]
    async with db.acquire() as conn:
        row, created = await jobs.insert(conn, new)
    if not created and row["request_hash"] != new.request_hash:
        raise ApiError(
            409,
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used with a different request body",
            {"job_id": row["id"]},
        )
    if created:
        await _enqueue(request, row["id"])
    job = await jobs.get(db, principal.tenant_id, row["id"])
    assert job is not None
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(job, status=202 if created else 200, headers=headers)


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    principal = require(request, "jobs:read")
    status_text = request.query.get("status")
    try:
        status = JobStatus(status_text) if status_text else None
    except ValueError as exc:
        raise ApiError(
            422, "VALIDATION_ERROR", f"status must be one of {', '.join(JobStatus)}"
        ) from exc
    limit = query_int(request, "limit", 20, 1, 100)
    page, has_more = await jobs.page(
        request.app[DB],
        principal.tenant_id,
        status=status,
        crew=request.query.get("crew") or None,
        before=request.query.get("cursor") or None,
        limit=limit,
    )
    return json_response(JobList.of(page, has_more))


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    principal = require(request, "jobs:read")
    job_id = request.match_info["job_id"]
    job = await jobs.get(request.app[DB], principal.tenant_id, job_id)
    if job is None:
        raise _not_found(job_id)
    return json_response(job)


@routes.get("/v1/jobs/{job_id}/deliveries")
async def job_deliveries(request: web.Request) -> web.Response:
    """The webhooks this job's events owed, with every attempt: how a client finds out why
    its `webhook_url` did not hear from crewq."""
    principal = require(request, "jobs:read")
    job_id = request.match_info["job_id"]
    db = request.app[DB]
    if not await jobs.exists(db, principal.tenant_id, job_id):
        raise _not_found(job_id)
    found = await endpoints.job_deliveries(db, principal.tenant_id, job_id)
    return json_response(DeliveryList.of(found, has_more=False))


@routes.get("/v1/jobs/{job_id}/events")
async def stream_job_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the job's events so far (after `Last-Event-ID` when resuming),
    then each new one as it commits, until its outcome (completed, failed, cancelled)."""
    principal = require(request, "jobs:read")
    job_id = request.match_info["job_id"]
    db = request.app[DB]
    if not await jobs.exists(db, principal.tenant_id, job_id):
        raise _not_found(job_id)
    last = request.headers.get("Last-Event-ID") or None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    with request.app[HUB].watch(job_id) as wake:
        while True:
            wake.clear()
            for event in await jobs.events_after(db, job_id, last):
                data = orjson.dumps(event["payload"]).decode()
                await response.write(
                    f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n".encode()
                )
                last = event["id"]
                if event["type"] in _OUTCOMES:
                    await response.write_eof()
                    return response
            try:
                await asyncio.wait_for(wake.wait(), timeout=_KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")


@routes.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    principal = require(request, "jobs:write")
    job_id = request.match_info["job_id"]
    db = request.app[DB]
    outcome = await jobs.request_cancel(db, principal.tenant_id, job_id)
    if outcome == jobs.CancelOutcome.NOT_FOUND:
        raise _not_found(job_id)
    if outcome == jobs.CancelOutcome.ALREADY_FINISHED:
        raise ApiError(
            409, "JOB_ALREADY_FINISHED", "the job has already finished; nothing to cancel"
        )
    if outcome == jobs.CancelOutcome.REQUESTED:
        try:
            await queue.publish_cancel(request.app[REDIS], job_id)
        except Exception as exc:
            # The worker's heartbeat sees the request in Postgres within seconds anyway.
            log.warning("cancel of %s not broadcast (%s)", job_id, exc)
    job = await jobs.get(db, principal.tenant_id, job_id)
    assert job is not None
    # 200: cancelled now (it was pending); 202: its worker is stopping the crew.
    return json_response(job, status=200 if outcome == jobs.CancelOutcome.CANCELLED else 202)


@routes.post("/v1/jobs/{job_id}/retry")
async def retry_job(request: web.Request) -> web.Response:
    principal = require(request, "jobs:write")
    job_id = request.match_info["job_id"]
    job = await jobs.restart(request.app[DB], principal.tenant_id, job_id)
    if job is None:
        if not await jobs.exists(request.app[DB], principal.tenant_id, job_id):
            raise _not_found(job_id)
        raise ApiError(409, "JOB_NOT_RETRYABLE", "only failed or cancelled jobs can be retried")
    await _enqueue(request, job_id, now=True)
    return json_response(job, status=202, headers={"Location": f"/v1/jobs/{job_id}"})
