"""`/v1/schedules`: make a crew's job on a cron expression or every so many seconds; list,
read, pause, resume and delete schedules. Workers fire them (worker/scheduler.py)."""

from aiohttp import web

from api.context import CREWS, DB, SETTINGS, URLS
from api.errors import ApiError, Code, invalid
from api.operations import CURSOR, LIMIT, Call, Operation, operation
from api.responses import json_response
from api.routes.jobs import one_variant_per_crew, refusal
from schemas.account import Scope
from schemas.jobs import JobCreate
from schemas.schedules import Schedule, ScheduleCreate, ScheduleList
from shared.domain import submissions
from shared.store import schedules

routes = web.RouteTableDef()


def _not_found(schedule_id: str) -> ApiError:
    return ApiError(Code.SCHEDULE_NOT_FOUND, f"no schedule {schedule_id!r} for this tenant")


def _timing(body: ScheduleCreate) -> schedules.Timing:
    if body.cron is not None and body.interval is not None:
        raise invalid("interval", "give either cron (with timezone) or interval, not both")
    if body.interval is not None:
        if body.timezone is not None:
            raise invalid("timezone", "a time zone goes with cron, not with interval")
        return schedules.Timing(interval_s=body.interval)
    if body.cron is None:
        raise invalid("cron", "give either cron (with timezone) or interval (seconds)")
    if (refused := schedules.cron_refusal(body.cron)) is not None:
        raise invalid("cron", refused)
    return schedules.Timing(cron=body.cron, timezone=body.timezone or "UTC")


@routes.post("/v1/schedules")
@operation(
    Operation(
        "Create a schedule: a crew's job on a cron expression, or every so many seconds",
        Scope.JOBS_WRITE,
        {201: Schedule},
        body=ScheduleCreate,
        errors=[Code.UNKNOWN_CREW, Code.MISSING_INPUTS],
        refine_body=one_variant_per_crew,
        tags=["schedules"],
    )
)
async def create_schedule(request: web.Request, call: Call[ScheduleCreate]) -> web.Response:
    """Each tick makes one job, as `POST /v1/jobs` would (the same checks, bounds and
    monthly quota), with `schedule_id` in its metadata."""
    body = call.body
    timing = _timing(body)
    # Checked as each tick's job will be, `schedule_id` (an id's length) included.
    job = JobCreate.model_construct(
        crew=body.crew,
        inputs=body.inputs,
        metadata={**body.metadata, "schedule_id": "sch_" + "0" * 26},
        webhook_url=None,
        timeout=body.timeout,
        max_retries=body.max_retries,
    )
    settings = request.app[SETTINGS]
    checked = await submissions.check(request.app[CREWS], settings, request.app[URLS], job)
    if not isinstance(checked, submissions.Checked):
        raise refusal(checked)
    schedule = await schedules.create(
        request.app[DB],
        call.principal.owner,
        schedules.NewSchedule(
            crew=checked.crew,
            inputs=body.inputs,
            metadata=body.metadata,
            timeout_s=checked.timeout_s,
            max_retries=checked.max_retries,
            timing=timing,
            missed=body.missed,
        ),
    )
    return json_response(schedule, status=201, headers={"Location": f"/v1/schedules/{schedule.id}"})


@routes.get("/v1/schedules")
@operation(
    Operation(
        "List schedules, newest first",
        Scope.JOBS_READ,
        {200: ScheduleList},
        query=[LIMIT, CURSOR],
        tags=["schedules"],
    )
)
async def list_schedules(request: web.Request, call: Call[None]) -> web.Response:
    page, has_more = await schedules.page(
        request.app[DB], call.principal.owner, before=call[CURSOR], limit=call[LIMIT]
    )
    return json_response(ScheduleList.of(page, has_more))


@routes.get("/v1/schedules/{schedule_id}")
@operation(
    Operation(
        "Read a schedule, with its next run times",
        Scope.JOBS_READ,
        {200: Schedule},
        errors=[Code.SCHEDULE_NOT_FOUND],
        tags=["schedules"],
    )
)
async def get_schedule(request: web.Request, call: Call[None]) -> web.Response:
    schedule_id = request.match_info["schedule_id"]
    schedule = await schedules.get(request.app[DB], call.principal.owner, schedule_id)
    if schedule is None:
        raise _not_found(schedule_id)
    return json_response(schedule)


@routes.delete("/v1/schedules/{schedule_id}")
@operation(
    Operation(
        "Delete a schedule (the jobs it made stay)",
        Scope.JOBS_WRITE,
        {204: None},
        errors=[Code.SCHEDULE_NOT_FOUND],
        tags=["schedules"],
    )
)
async def delete_schedule(request: web.Request, call: Call[None]) -> web.Response:
    schedule_id = request.match_info["schedule_id"]
    if not await schedules.delete(request.app[DB], call.principal.owner, schedule_id):
        raise _not_found(schedule_id)
    return web.Response(status=204)


@routes.post("/v1/schedules/{schedule_id}/pause")
@operation(
    Operation(
        "Pause a schedule: no job until it is resumed",
        Scope.JOBS_WRITE,
        {200: Schedule},
        errors=[Code.SCHEDULE_NOT_FOUND],
        tags=["schedules"],
    )
)
async def pause_schedule(request: web.Request, call: Call[None]) -> web.Response:
    schedule_id = request.match_info["schedule_id"]
    schedule = await schedules.pause(request.app[DB], call.principal.owner, schedule_id)
    if schedule is None:
        raise _not_found(schedule_id)
    return json_response(schedule)


@routes.post("/v1/schedules/{schedule_id}/resume")
@operation(
    Operation(
        "Resume a paused schedule from its next tick to come",
        Scope.JOBS_WRITE,
        {200: Schedule},
        errors=[Code.SCHEDULE_NOT_FOUND],
        tags=["schedules"],
    )
)
async def resume_schedule(request: web.Request, call: Call[None]) -> web.Response:
    schedule_id = request.match_info["schedule_id"]
    schedule = await schedules.resume(request.app[DB], call.principal.owner, schedule_id)
    if schedule is None:
        raise _not_found(schedule_id)
    return json_response(schedule)
