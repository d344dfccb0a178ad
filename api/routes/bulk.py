"""Bulk actions: cancel or retry every job matching a filter (`POST /v1/jobs/bulk-cancel`,
`/v1/jobs/bulk-retry`), and read an operation's progress (`GET /v1/bulk-operations/{id}`).
The match is frozen when asked; workers do the work in batches (worker/bulk.py)."""

from aiohttp import web

from api.context import DB
from api.errors import ApiError, Code
from api.operations import Call, Operation, operation
from api.responses import json_response
from schemas.account import Scope
from schemas.bulk import BulkKind, BulkOperation, BulkRequest, BulkStatus
from shared.store import bulk_operations, jobs

routes = web.RouteTableDef()


async def _start(request: web.Request, call: Call[BulkRequest], kind: BulkKind) -> web.Response:
    principal, selection = call.principal, call.body.filter
    db = request.app[DB]
    matched = await jobs.matching(
        db,
        principal.owner,
        jobs.JobFilter(
            status=selection.status,
            crew=selection.crew,
            created_after=selection.created_after,
            created_before=selection.created_before,
            metadata=selection.metadata,
        ),
    )
    if call.body.dry_run:
        now = await db.fetchval("SELECT now()")
        counted = BulkOperation(
            id=None,
            kind=kind,
            dry_run=True,
            status=BulkStatus.DONE,
            filter=selection,
            matched=len(matched),
            processed=0,
            changed=0,
            livemode=principal.livemode,
            created_at=now,
            finished_at=now,
        )
        return json_response(counted, status=200)
    made = await bulk_operations.create(
        db, principal.owner, kind, selection, matched, principal.allowance.jobs_per_month
    )
    return json_response(made, status=202, headers={"Location": f"/v1/bulk-operations/{made.id}"})


@routes.post("/v1/jobs/bulk-cancel")
@operation(
    Operation(
        "Cancel every job matching a filter (200: a dry run's count; 202: under way)",
        Scope.JOBS_CANCEL,
        {200: BulkOperation, 202: BulkOperation},
        body=BulkRequest,
        tags=["jobs"],
    )
)
async def bulk_cancel(request: web.Request, call: Call[BulkRequest]) -> web.Response:
    """Pending and waiting jobs are cancelled, running ones stopped, as
    `POST /v1/jobs/{id}/cancel` does each; finished ones are left. Jobs created after
    this request are never taken."""
    return await _start(request, call, BulkKind.CANCEL)


@routes.post("/v1/jobs/bulk-retry")
@operation(
    Operation(
        "Retry every failed or cancelled job matching a filter (200: a dry run's count;"
        " 202: under way)",
        Scope.JOBS_WRITE,
        {200: BulkOperation, 202: BulkOperation},
        body=BulkRequest,
        tags=["jobs"],
    )
)
async def bulk_retry(request: web.Request, call: Call[BulkRequest]) -> web.Response:
    """Each as `POST /v1/jobs/{id}/retry` would (counted against the monthly quota);
    jobs in other states are left."""
    return await _start(request, call, BulkKind.RETRY)


@routes.get("/v1/bulk-operations/{operation_id}")
@operation(
    Operation(
        "Read a bulk operation's progress",
        Scope.JOBS_READ,
        {200: BulkOperation},
        errors=[Code.BULK_OPERATION_NOT_FOUND],
        tags=["jobs"],
    )
)
async def get_bulk_operation(request: web.Request, call: Call[None]) -> web.Response:
    operation_id = request.match_info["operation_id"]
    found = await bulk_operations.get(request.app[DB], call.principal.owner, operation_id)
    if found is None:
        raise ApiError(
            Code.BULK_OPERATION_NOT_FOUND, f"no bulk operation {operation_id!r} for this tenant"
        )
    return json_response(found)
