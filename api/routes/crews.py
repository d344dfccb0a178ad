"""`/v1/crews`: which crews exist and which inputs they need."""

from aiohttp import web

from api.context import CREWS
from api.errors import ApiError, Code
from api.operations import Call, Operation, operation
from api.responses import json_response
from schemas.account import Scope
from schemas.crews import CrewInfo, CrewList

routes = web.RouteTableDef()


@routes.get("/v1/crews")
@operation(
    Operation("List the crews jobs may run", Scope.JOBS_READ, {200: CrewList}, tags=["crews"])
)
async def list_crews(request: web.Request, call: Call[None]) -> web.Response:
    registry = request.app[CREWS]
    return json_response(CrewList(data=[spec.info() for spec in registry.crews.values()]))


@routes.get("/v1/crews/{name}")
@operation(
    Operation(
        "A crew and the inputs it needs",
        Scope.JOBS_READ,
        {200: CrewInfo},
        errors=[Code.CREW_NOT_FOUND],
        tags=["crews"],
    )
)
async def get_crew(request: web.Request, call: Call[None]) -> web.Response:
    spec = request.app[CREWS].get(request.match_info["name"])
    if spec is None:
        raise ApiError(Code.CREW_NOT_FOUND, f"no crew named {request.match_info['name']!r}")
    return json_response(spec.info())
