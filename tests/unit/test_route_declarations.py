"""Every route the API serves is declared by an `Operation`, and a declaration cannot
disagree with its handler about the body it reads or with the auth middleware about
whether a key is needed."""

import pytest
from aiohttp import web
from cryptography.fernet import Fernet

from api.app import create_app
from api.auth import HIDDEN_PATHS, is_public
from api.operations import Call, Operation, declared, int_query, operation
from schemas.account import Scope
from schemas.jobs import JobBatchRead, JobCreate
from shared.runtime.settings import Settings
from shared.runtime.supervisor import Supervisor


def _served() -> list[tuple[str, str, Operation | None]]:
    # Built, not started: no connection is opened.
    app = create_app(Settings(secret_key=Fernet.generate_key().decode()), Supervisor())
    served = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("formatter") or info.get("path"))
        served.append((route.method, path, declared(route.handler)))
    return served


def test_every_route_the_app_serves_declares_its_operation() -> None:
    served = _served()
    assert len(served) >= 35
    undeclared = [(method, path) for method, path, op in served if op is None]
    assert undeclared == []


def test_a_declaration_is_public_exactly_where_the_auth_middleware_asks_no_key() -> None:
    for method, path, op in _served():
        assert op is not None
        if path in HIDDEN_PATHS:
            # Admits whom it will; never in the document.
            assert not op.listed and not op.public, path
        else:
            assert op.public == is_public(path), (method, path)
        if op.public:
            assert op.scope is None, path


def test_a_handler_must_take_the_body_its_operation_reads() -> None:
    with pytest.raises(TypeError, match=r"Call\[JobCreate\]"):

        @operation(Operation("x", Scope.JOBS_WRITE, {200: None}, body=JobCreate))
        async def wrong_body(request: web.Request, call: Call[JobBatchRead]) -> web.Response:
            return web.Response()

    with pytest.raises(TypeError, match=r"Call\[NoneType\]"):

        @operation(Operation("x", Scope.JOBS_READ, {200: None}))
        async def body_never_read(request: web.Request, call: Call[JobCreate]) -> web.Response:
            return web.Response()


def test_a_parameter_is_declared_once() -> None:
    limit = int_query("limit", "How many.", default=1, low=1, high=2)
    with pytest.raises(ValueError, match="declared twice"):
        Operation("x", None, {200: None}, query=[limit, limit])
