"""`/v1/crews`: which crews exist and which inputs they need."""

from aiohttp import web

from api.auth import require
from api.context import CREWS
from api.errors import ApiError
from api.responses import json_response
from schemas.crews import CrewList

routes = web.RouteTableDef()


@routes.get("/v1/crews")
async def list_crews(request: web.Request) -> web.Response:
    require(request, "jobs:read")
    registry = request.app[CREWS]
    return json_response(CrewList(data=[spec.info() for spec in registry.crews.values()]))


@routes.get("/v1/crews/{name}")
async def get_crew(request: web.Request) -> web.Response:
    require(request, "jobs:read")
    spec = request.app[CREWS].get(request.match_info["name"])
    if spec is None:
        raise ApiError(404, "CREW_NOT_FOUND", f"no crew named {request.match_info['name']!r}")
    return json_response(spec.info())
