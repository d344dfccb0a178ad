"""`/amp/{crew}`: CrewAI AMP's per-crew API, so an AMP client pointed at
`https://crewq.example/amp/{crew}` works unchanged (docs/amp.md). Each AMP call is a crewq
operation: a kickoff is a submission, a status a read of the job, a resume an answer to the
task it waits on; errors keep crewq's one shape, with the status codes AMP documents."""

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from api.context import CREWS, DB, REDIS, SETTINGS, URLS
from api.errors import ApiError, Code, invalid
from api.operations import Call, Operation, operation
from api.responses import json_response
from api.routes.jobs import _refusal as job_refusal
from schemas.account import Scope
from schemas.amp import (
    AmpHumanInput,
    AmpInputs,
    AmpKickedOff,
    AmpKickoff,
    AmpProgress,
    AmpResume,
    AmpResumed,
    AmpResumeStatus,
    AmpState,
    AmpStatus,
    AmpStatusValue,
    AmpTaskResult,
)
from schemas.jobs import Job, JobStatus
from shared.domain import after_commit, amp, submissions
from shared.runtime import metrics
from shared.runtime.tracing import current_traceparent
from shared.store import jobs
from shared.store.keys import Principal

routes = web.RouteTableDef()

_TAGS = ["amp"]

# A job's status as AMP's clients read it (`state`) and as AMP documents it (`status`). A
# job waiting for a person is PENDING (every client's enum has it, and none takes it for an
# end) and `pending_human_input`, the state AMP's HITL guide names.
_STATES: dict[JobStatus, tuple[AmpState, AmpStatusValue]] = {
    JobStatus.PENDING: (AmpState.PENDING, AmpStatusValue.RUNNING),
    JobStatus.RUNNING: (AmpState.RUNNING, AmpStatusValue.RUNNING),
    JobStatus.AWAITING_INPUT: (AmpState.PENDING, AmpStatusValue.PENDING_HUMAN_INPUT),
    JobStatus.COMPLETED: (AmpState.SUCCESS, AmpStatusValue.COMPLETED),
    JobStatus.FAILED: (AmpState.FAILED, AmpStatusValue.ERROR),
    JobStatus.CANCELLED: (AmpState.FAILED, AmpStatusValue.ERROR),
}


def _crew_not_found(request: web.Request) -> ApiError:
    crew = request.match_info["crew"]
    return ApiError(Code.CREW_NOT_FOUND, f"no crew named {crew!r} (the base URL is /amp/<crew>)")


def _not_found(kickoff_id: str, crew: str) -> ApiError:
    return ApiError(Code.JOB_NOT_FOUND, f"no execution {kickoff_id!r} of crew {crew!r}")


def _refusal(refused: submissions.Refused) -> ApiError:
    """As `POST /v1/jobs` refuses, but for what AMP answers its own way."""
    match refused:
        case submissions.MissingInputs(crew=crew, missing=missing, required=required):
            # AMP's ValidationError names them `details.missing_inputs`.
            return ApiError(
                Code.MISSING_INPUTS,
                f"crew {crew!r} needs inputs: {', '.join(missing)}",
                {"missing_inputs": missing, "missing": missing, "required": required},
            )
        case submissions.UnknownCrew(crew=crew):  # AMP: the crew's URL names no crew
            return ApiError(Code.CREW_NOT_FOUND, f"no crew named {crew!r}")
        case submissions.TooLarge(field=field, size=size, limit=limit):
            return invalid(
                field,
                f"inputs and meta take {size} bytes as JSON; an execution may hold at most"
                f" {limit} (CREWQ_JOB_MAX_INPUT_BYTES)",
            )
        case _:
            return job_refusal(refused)


def _every_crew_s_inputs(app: web.Application, schema: dict[str, Any]) -> dict[str, Any]:
    """The document cannot tie a body to the crew its path names, so it requires the inputs
    of every registered crew: enough for any of them (a crew is given inputs it does not
    name without harm), and a body it calls valid is never refused MISSING_INPUTS.
    `GET /inputs` names those the path's crew needs."""
    needed = sorted({name for spec in app[CREWS].crews.values() for name in spec.inputs})
    if needed:
        inputs = schema["properties"]["inputs"]
        schema["properties"]["inputs"] = {**inputs, "required": needed}
    return schema


@routes.get("/amp/{crew}/inputs")
@operation(
    Operation(
        "AMP: the inputs the crew needs",
        Scope.JOBS_READ,
        {200: AmpInputs},
        errors=[Code.CREW_NOT_FOUND],
        tags=_TAGS,
    )
)
async def amp_inputs(request: web.Request, call: Call[None]) -> web.Response:
    spec = request.app[CREWS].get(request.match_info["crew"])
    if spec is None:
        raise _crew_not_found(request)
    return json_response(AmpInputs(inputs=spec.inputs))


@routes.post("/amp/{crew}/kickoff")
@operation(
    Operation(
        "AMP: start an execution of the crew (a crewq job)",
        Scope.JOBS_WRITE,
        {200: AmpKickedOff},
        body=AmpKickoff,
        errors=[
            Code.CREW_NOT_FOUND,
            Code.MISSING_INPUTS,
            Code.INVALID_WEBHOOK_URL,
            Code.QUOTA_EXCEEDED,
            Code.TOO_MANY_PENDING_JOBS,
        ],
        refine_body=_every_crew_s_inputs,
        tags=_TAGS,
    )
)
async def amp_kickoff(request: web.Request, call: Call[AmpKickoff]) -> web.Response:
    answer = await amp.kickoff(
        request.app[DB],
        request.app[CREWS],
        request.app[SETTINGS],
        request.app[URLS],
        call.principal,
        request.match_info["crew"],
        call.body,
        traceparent=current_traceparent(),
    )
    if not isinstance(answer, submissions.Submitted):
        raise _refusal(answer)
    metrics.job_submitted(answer.job.crew)
    await after_commit.carry_out(answer.after, request.app[REDIS])
    # AMP answers 200, not 202, with the id alone.
    return json_response(AmpKickedOff(kickoff_id=answer.job.id))


def _execution_time(job: Job) -> float | None:
    if job.started_at is None:
        return None
    return ((job.finished_at or datetime.now(UTC)) - job.started_at).total_seconds()


def status_of(job: Job) -> AmpStatus:
    """A job as AMP's status answers it: the superset of schemas/amp.py `AmpStatus`."""
    state, status = _STATES[job.status]
    result = job.result
    tasks = [
        AmpTaskResult(task_id=t.name, output=t.raw, agent=t.agent)
        for t in (result.tasks if result else [])
    ]
    asked = job.input_request
    progress = job.progress
    return AmpStatus(
        kickoff_id=job.id,
        state=state,
        status=status,
        result=result.raw if result else None,
        result_json=result.structured if result else None,
        output=result.raw if result else None,
        tasks=tasks,
        last_executed_task=tasks[-1] if tasks else None,
        current_task=progress.current_task if progress else None,
        progress=(
            AmpProgress(completed_tasks=progress.completed_tasks, total_tasks=progress.total_tasks)
            if progress
            else None
        ),
        execution_time=_execution_time(job),
        error=(
            job.error.message
            if job.error
            else "cancelled"
            if job.status is JobStatus.CANCELLED
            else None
        ),
        error_code=job.error.code.value if job.error else None,
        token_usage=job.token_usage,
        pending_human_input=(
            AmpHumanInput(
                task_id=asked.task,
                output=asked.output,
                prompt=asked.prompt,
                expires_at=asked.expires_at,
                default_action=asked.default_action,
            )
            if asked and job.status is JobStatus.AWAITING_INPUT
            else None
        ),
    )


async def _status(request: web.Request, principal: Principal) -> web.Response:
    crew, kickoff_id = request.match_info["crew"], request.match_info["kickoff_id"]
    if request.app[CREWS].get(crew) is None:
        raise _crew_not_found(request)
    job = await jobs.get(request.app[DB], principal.owner, kickoff_id)
    if job is None or job.crew != crew:
        raise _not_found(kickoff_id, crew)
    return json_response(status_of(job))


_STATUS = Operation(
    "AMP: an execution's status",
    Scope.JOBS_READ,
    {200: AmpStatus},
    errors=[Code.CREW_NOT_FOUND, Code.JOB_NOT_FOUND],
    tags=_TAGS,
)


@routes.get("/amp/{crew}/status/{kickoff_id}")
@operation(_STATUS)
async def amp_status(request: web.Request, call: Call[None]) -> web.Response:
    return await _status(request, call.principal)


# AMP's documents have named this path too (v1.10 to v1.14): served as the same operation.
@routes.get("/amp/{crew}/{kickoff_id}/status")
@operation(_STATUS)
async def amp_status_by_path(request: web.Request, call: Call[None]) -> web.Response:
    return await _status(request, call.principal)


@routes.post("/amp/{crew}/resume")
@operation(
    Operation(
        "AMP: answer the task an execution waits on (human in the loop)",
        Scope.JOBS_WRITE,
        {200: AmpResumed},
        body=AmpResume,
        errors=[
            Code.CREW_NOT_FOUND,
            Code.JOB_NOT_FOUND,
            Code.EXECUTION_NOT_AWAITING_INPUT,
            Code.TASK_NOT_AWAITING_INPUT,
            Code.INVALID_WEBHOOK_URL,
        ],
        tags=_TAGS,
    )
)
async def amp_resume(request: web.Request, call: Call[AmpResume]) -> web.Response:
    crew, body = request.match_info["crew"], call.body
    if request.app[CREWS].get(crew) is None:
        raise _crew_not_found(request)
    answer = await amp.resume(
        request.app[DB], request.app[CREWS], request.app[URLS], call.principal, crew, body
    )
    match answer:
        case amp.NotFound():
            raise _not_found(body.execution_id, crew)
        case amp.NotAwaiting(status=status):
            raise ApiError(
                Code.EXECUTION_NOT_AWAITING_INPUT,
                f"execution is not in pending human input state (it is {status})",
            )
        case amp.WrongTask(waiting_on=waiting_on):
            raise ApiError(
                Code.TASK_NOT_AWAITING_INPUT,
                f"the execution waits on task {waiting_on!r}, not {body.task_id!r}",
                {"task_id": [f"the execution waits on task {waiting_on!r}"]},
            )
        case submissions.InvalidWebhookUrl():
            raise _refusal(answer)
    await after_commit.carry_out(answer.after, request.app[REDIS])
    if answer.approved:
        return json_response(
            AmpResumed(status=AmpResumeStatus.RESUMED, message="Execution resumed successfully")
        )
    return json_response(
        AmpResumed(
            status=AmpResumeStatus.RETRYING, message="Task will be retried with your feedback"
        )
    )
